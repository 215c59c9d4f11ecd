"""Settings of the deployment stages: export of the final weights, and their INT8 quantization."""

from __future__ import annotations

from dataclasses import dataclass

from yolo_compress.settings import Settings, positive, setting

FORMATS = ("onnx", "torchscript")  # single-file export formats (``deploy.export`` knows their suffixes)
MODES = ("static", "dynamic")
QUANTIZE = ("int8",)


@dataclass(frozen=True)
class ExportSettings(Settings):
    """Which format the final weights are exported to (none: no export)."""

    export: str | None = setting(None, "export the final weights: onnx or torchscript", choices=FORMATS)


@dataclass(frozen=True)
class QuantizeSettings(Settings):
    """Whether and how the final weights are quantized to INT8 (an ONNX model for ONNX Runtime)."""

    quantize: str | None = setting(None, "quantize the final weights: int8 (an INT8 ONNX model, ONNX Runtime)",
                                   choices=QUANTIZE)
    quantize_mode: str = setting("static", "static (calibrated activations) or dynamic (weights only)",
                                 choices=MODES)
    calibration: int = setting(64, "train images used to calibrate static quantization", check=positive,
                               must=">= 1")
    float_head: bool = setting(True, "keep the head's decoding (DFL, box arithmetic, concatenations) in float")
