"""The `export` and `quantize` stages: the final weights as ONNX / TorchScript, and as an INT8 ONNX model."""
