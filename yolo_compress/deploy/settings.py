"""Settings of the INT8 quantization stage."""

from __future__ import annotations

from dataclasses import dataclass

from yolo_compress.deploy.quantize import MODES
from yolo_compress.settings import Settings, positive, setting


@dataclass(frozen=True)
class QuantizeSettings(Settings):
    """How the exported ONNX model is quantized to INT8 (ONNX Runtime)."""

    quantize_mode: str = setting("static", "static (calibrated activations) or dynamic (weights only)",
                                 choices=MODES)
    calibration: int = setting(64, "train images used to calibrate static quantization", check=positive,
                               must=">= 1")
    float_head: bool = setting(True, "keep the head's decoding (DFL, box arithmetic, concatenations) in float")
