"""Post-training INT8 quantization of an exported model: ONNX with ONNX Runtime's quantization tools (here), OpenVINO
with NNCF (:mod:`yolo_compress.deploy.openvino`); :func:`quantize_weights` picks by format.

Static quantization (the default) calibrates activation ranges on images of the dataset's train split, preprocessed
as Ultralytics preprocesses for inference (letterbox to the square input, RGB, /255), with per-channel int8
weights in the QDQ format ONNX Runtime's CPU kernels fuse. The head's decoding (DFL softmax, box arithmetic, the
final concatenations, the classifier's softmax) is kept in float by default: there small errors become whole
pixels of box offset, and it costs little time. Dynamic quantization (weights only, no calibration) is the
fallback for models static quantization cannot handle.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from yolo_compress.dataset import Dataset
from yolo_compress.deploy.calibration import calibration_images, preprocess
from yolo_compress.deploy.export import copy_metadata, int8_path
from yolo_compress.deploy.settings import QUANTIZE_FORMATS, QuantizeSettings
from yolo_compress.errors import CompressError
from yolo_compress.models import HEAD_CONV_BRANCHES

LOGGER = logging.getLogger(__name__)
ONNX_MODES = ("static", "dynamic", "qat")
OPENVINO_MODES = ("static", "accuracy", "qat")


def check_quantizable(format: str = "onnx", mode: str = "static", task: str = "detect",
                      float_head: bool = True) -> None:
    """Raises: CompressError for a format, mode or task the runtime's quantizer lacks, or when it is not
    installed."""
    if format not in QUANTIZE_FORMATS:
        raise CompressError(f"INT8 quantization supports {', '.join(QUANTIZE_FORMATS)}, not {format!r}")
    modes = OPENVINO_MODES if format == "openvino" else ONNX_MODES
    if mode not in modes:
        other = "--format onnx" if format == "openvino" else "--format openvino (--export openvino in a run)"
        raise CompressError(f"quantize_mode={mode} is not for {format}, which takes {', '.join(modes)}; or use "
                            f"{other}")
    if mode in ("accuracy", "qat") and task != "detect":
        raise CompressError(f"quantize_mode={mode} is for detect models; use static for a {task} model")
    if mode == "qat" and not float_head:
        raise CompressError("quantize_mode=qat keeps the head's decoding in float; drop float_head=false "
                            "(--no-float-head)")
    if format == "openvino" or mode == "qat":  # NNCF quantizes (and makes QAT's fake quantizers)
        from yolo_compress.deploy.openvino import check_openvino

        check_openvino(int8=True)
    if format == "onnx":
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError as e:
            raise CompressError("INT8 quantization needs ONNX Runtime: pip install -e '.[onnx]'") from e


def int8_output(weights: Path, format: str) -> Path:
    """Where :func:`quantize_weights` writes the INT8 model of ``weights``."""
    from yolo_compress.deploy.export import exported_path
    from yolo_compress.deploy.openvino import openvino_dir

    return openvino_dir(weights, int8=True) if format == "openvino" else int8_path(exported_path(weights, "onnx"))


def quantize_weights(weights: Path, format: str, data: Dataset, imgsz: int, s: QuantizeSettings,
                     train: dict[str, Any] | None = None, resume: bool = False) -> Path:
    """INT8 model of a ``.pt`` for ``format``'s runtime, next to it; its fp32 export is made first when missing or
    older than the weights. ``train`` (Ultralytics train arguments) and ``resume`` are for the ``qat`` mode."""
    from yolo_compress.deploy.export import fresh_export

    check_quantizable(format, s.quantize_mode, data.task, s.float_head)
    fp32 = fresh_export(weights, format, imgsz)
    if s.quantize_mode == "qat":
        from yolo_compress.deploy.qat import quantize_aware_distill

        return quantize_aware_distill(weights, fp32, data, imgsz, s, train or {}, resume=resume)
    if format == "openvino":
        from yolo_compress.deploy.openvino import quantize_openvino

        return quantize_openvino(fp32, data, imgsz, s.quantize_mode, s.calibration, s.float_head, s.layers(),
                                 s.max_drop, max_reverts=s.max_reverts)
    return quantize_onnx(fp32, data, imgsz, s.quantize_mode, s.calibration, s.float_head, s.layers())


def in_layers(node_name: str, layers: tuple[str, ...]) -> bool:
    """True when an exported node belongs to one of ``layers``: ``model.22.cv2`` covers
    ``/model.22/cv2.0/cv2.0.0/conv/Conv`` (torch.onnx names each scope relative to the top layer), not ``model.2``."""
    scopes = node_name.split("/")[1:-1]
    for layer in layers:
        parts = layer.split(".")
        top, sub = ".".join(parts[:2]), ".".join(parts[2:])
        if scopes and scopes[0] == top and (not sub or any(s == sub or s.startswith(sub + ".") for s in scopes[1:])):
            return True
    return False


def float_nodes(onnx_path: Path, float_head: bool = True, float_layers: tuple[str, ...] = ()) -> list[str]:
    """Nodes left in float: the output head's decoding (everything of the last layer but its conv branches) when
    ``float_head``, and every node of ``float_layers``."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    prefixes = sorted({n.name.split("/")[1] for n in graph.node if n.name.startswith("/model.")},
                      key=lambda s: int(s.split(".")[1]) if s.split(".")[1].isdigit() else -1)
    head = f"/{prefixes[-1]}/"
    # `/model.22/cv2.0/...`, a classifier's `/model.9/conv/...` (and, as before, the DFL's `/model.22/dfl/conv/...`)
    branches = [f"/{b}." for b in HEAD_CONV_BRANCHES] + ["/conv/"]
    return [n.name for n in graph.node if (float_head and n.name.startswith(head) and not any(
        b in n.name for b in branches)) or in_layers(n.name, float_layers)]


def quantize_onnx(onnx_path: Path, data: Dataset, imgsz: int, mode: str = "static", calibration: int = 300,
                  float_head: bool = True, float_layers: tuple[str, ...] = ()) -> Path:
    """Write the INT8 model next to ``onnx_path`` (``*-int8.onnx``) and return its path.

    Raises:
        CompressError: an unknown mode or no calibration images.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    if mode not in ("static", "dynamic"):
        raise CompressError(f"quantization mode {mode!r} is not supported here; use static or dynamic")
    out = int8_path(onnx_path)
    exclude = float_nodes(onnx_path, float_head, float_layers)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / out.name
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(staged), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=exclude)
        else:
            images = calibration_images(data, calibration)
            import onnxruntime as ort

            input_name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.items = iter(images)

                def get_next(self) -> dict[str, np.ndarray] | None:
                    path = next(self.items, None)
                    return None if path is None else {input_name: preprocess(path, imgsz, data.task)}

            quantize_static(str(prepared), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
            LOGGER.info("INT8: calibrated on %d train images; %d nodes kept in float", len(images), len(exclude))
        copy_metadata(onnx_path, staged)
        from yolo_compress.checkpoint import atomic_write_bytes

        atomic_write_bytes(out, staged.read_bytes())
    return out
