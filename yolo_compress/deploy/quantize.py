"""Post-training INT8 quantization of an exported ONNX model with ONNX Runtime's quantization tools.

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

import numpy as np

from yolo_compress.dataset import Dataset, split_images
from yolo_compress.deploy.settings import MODES
from yolo_compress.errors import CompressError

LOGGER = logging.getLogger(__name__)
QUANTIZE_FORMATS = ("onnx",)


def check_quantizable(format: str = "onnx") -> None:
    """Raises: CompressError for a format other than ONNX, or when ONNX Runtime is not installed."""
    if format not in QUANTIZE_FORMATS:
        raise CompressError(f"INT8 quantization supports {', '.join(QUANTIZE_FORMATS)}, not {format!r}")
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        raise CompressError("INT8 quantization needs ONNX Runtime: pip install -e '.[onnx]'") from e


def int8_path(onnx_path: Path) -> Path:
    """``distill.onnx`` -> ``distill-int8.onnx``."""
    return onnx_path.with_name(f"{onnx_path.stem}-int8.onnx")


def calibration_images(data: Dataset, count: int) -> list[Path]:
    """Up to ``count`` images of the train split, evenly spread over it (sorted, so the choice is reproducible).

    Raises:
        CompressError: the split has no images.
    """
    images = split_images(data, "train")
    if not images:
        raise CompressError(f"no calibration images in the train split of {data.path}; static INT8 quantization "
                            "needs them (or use --quantize-mode dynamic)")
    step = max(len(images) // count, 1)
    return images[::step][:count]


def preprocess(path: Path, imgsz: int, task: str) -> np.ndarray:
    """One image as the exported model takes it: (1, 3, imgsz, imgsz) float32 RGB in [0, 1].

    Detectors get Ultralytics' inference letterbox (aspect kept, grey 114 padding); classifiers a resize of the
    centre crop, as Ultralytics' classification transforms do.
    """
    import cv2
    from ultralytics.data.augment import LetterBox

    img = cv2.imread(str(path))
    if img is None:
        raise CompressError(f"cannot read calibration image {path}")
    if task == "classify":
        h, w = img.shape[:2]
        s = min(h, w)
        img = cv2.resize(img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (imgsz, imgsz),
                         interpolation=cv2.INTER_LINEAR)
    else:
        img = LetterBox((imgsz, imgsz), auto=False)(image=img)
    return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def float_nodes(onnx_path: Path) -> list[str]:
    """Nodes of the output head's decoding, left in float: everything of the last layer but its conv branches."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    prefixes = sorted({n.name.split("/")[1] for n in graph.node if n.name.startswith("/model.")},
                      key=lambda s: int(s.split(".")[1]) if s.split(".")[1].isdigit() else -1)
    head = f"/{prefixes[-1]}/"
    branches = ("/cv2.", "/cv3.", "/conv/")  # Detect's box/class convs, Classify's 1x1 conv
    return [n.name for n in graph.node if n.name.startswith(head) and not any(b in n.name for b in branches)]


def quantize_onnx(onnx_path: Path, data: Dataset, imgsz: int, mode: str = "static", calibration: int = 64,
                  float_head: bool = True) -> Path:
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

    if mode not in MODES:
        raise CompressError(f"quantization mode {mode!r} is not supported; use one of {', '.join(MODES)}")
    out = int8_path(onnx_path)
    exclude = float_nodes(onnx_path) if float_head else []
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
            LOGGER.info("INT8: calibrated on %d train images; %d head nodes kept in float", len(images), len(exclude))
        _copy_metadata(onnx_path, staged)
        from yolo_compress.checkpoint import atomic_write_bytes

        atomic_write_bytes(out, staged.read_bytes())
    return out


def _copy_metadata(source: Path, target: Path) -> None:
    """Keep Ultralytics' metadata (names, stride, imgsz, task) so ``YOLO(int8.onnx)`` validates and predicts."""
    import onnx

    meta = onnx.load(str(source)).metadata_props
    model = onnx.load(str(target))
    del model.metadata_props[:]
    model.metadata_props.extend(meta)
    onnx.save(model, str(target))
