"""Stage 6, deployment: export of the final weights (ONNX, TorchScript)."""
