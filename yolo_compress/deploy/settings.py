"""Settings of the deployment stages: export of the final weights, and their INT8 quantization."""

from __future__ import annotations

from dataclasses import dataclass

from yolo_compress.settings import Settings, fraction, positive, setting

FORMATS = ("onnx", "torchscript", "openvino")  # ``deploy.export`` knows where each is written
QUANTIZE_FORMATS = ("onnx", "openvino")  # ONNX Runtime's quantizer, NNCF
MODES = ("static", "dynamic", "accuracy", "qat")
QUANTIZE = ("int8",)


@dataclass(frozen=True)
class ExportSettings(Settings):
    """Which format the final weights are exported to (none: no export)."""

    export: str | None = setting(None, "export the final weights: onnx, torchscript or openvino", choices=FORMATS)


@dataclass(frozen=True)
class QuantizeSettings(Settings):
    """Whether and how the final weights are quantized to INT8: an ONNX model for ONNX Runtime, or an OpenVINO
    model when the export format is ``openvino`` (``qat``: quantization-aware distillation, for either)."""

    quantize: str | None = setting(None, "quantize the final weights: int8 (ONNX Runtime; OpenVINO with "
                                   "--export openvino)", choices=QUANTIZE)
    quantize_mode: str = setting("static", "static (calibrated activations), dynamic (weights only, ONNX), "
                                 "accuracy (OpenVINO: layers that cost most stay in float until the mAP drop is at "
                                 "most max_drop) or qat (static, then qat_epochs of fake-quantized training "
                                 "with the fp32 weights as teacher; needs the [openvino] extra)", choices=MODES)
    calibration: int = setting(300, "train images (at most) that calibrate static quantization", check=positive,
                               must=">= 1")
    float_head: bool = setting(True, "keep the head's decoding (DFL, box arithmetic, concatenations) in float")
    float_layers: str = setting("", "layers kept in float, comma-separated (e.g. model.0,model.22.cv2)",
                                metavar="LAYERS")
    max_drop: float = setting(0.003, "accuracy mode: the largest mAP50-95 drop allowed (0.003 = 0.3 points) on "
                              "held-out train images", check=fraction, must="in [0, 1)")
    max_reverts: int = setting(20, "accuracy mode: at most this many rounds of returning ops to float (each one "
                               "validates on the held-out images); then the best model found is kept", check=positive,
                               must=">= 1")

    qat_epochs: int = setting(3, "qat mode: epochs of fake-quantized distillation", check=positive, must=">= 1")
    qat_lr: float = setting(1e-4, "qat mode: AdamW learning rate (no warm-up)", check=positive, must="> 0")

    def layers(self) -> tuple[str, ...]:
        """``float_layers`` as a tuple of layer names."""
        return tuple(x.strip() for x in self.float_layers.split(",") if x.strip())
