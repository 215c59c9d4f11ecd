"""OpenVINO: the fp32 IR of a checkpoint (Ultralytics' exporter) and its post-training INT8 with NNCF.

INT8 is calibrated like the ONNX Runtime path (:mod:`yolo_compress.deploy.quantize`): images of the train split,
never the val split that scores the result, preprocessed as Ultralytics preprocesses for inference. The head's
box decoding stays in float (``float_head``) and so do the layers named in ``float_layers``. NNCF's ``MIXED``
preset (Ultralytics' choice: symmetric per-channel int8 weights, asymmetric activations): against ``PERFORMANCE``
(symmetric activations) it lost half as much on the shipped baseline (0.44 vs 0.88 point) and a third as much on a
pruned model (0.65 vs 2.03), at the same speed (``benchmarks/results/quantize_notes.md``).

The ``accuracy`` mode is NNCF's accuracy-controlled quantization: it quantizes everything, measures mAP50-95 on
held-out train images (:mod:`yolo_compress.deploy.holdout`, never the calibration images nor the val split), and
returns the layers whose quantizers cost most to float until the drop is at most ``max_drop``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from yolo_compress.dataset import Dataset
from yolo_compress.errors import CompressError
from yolo_compress.models import HEAD_CONV_BRANCHES

LOGGER = logging.getLogger(__name__)
INSTALL = "pip install -e '.[openvino]'"


def check_openvino(int8: bool = False) -> None:
    """Raises: CompressError naming the extra to install when OpenVINO (and NNCF, for INT8) is missing."""
    try:
        import openvino  # noqa: F401

        if int8:
            import nncf  # noqa: F401
    except ImportError as e:
        what = "OpenVINO INT8 needs openvino and nncf" if int8 else "OpenVINO export needs openvino"
        raise CompressError(f"{what} ({e.name} is not installed): {INSTALL}") from e


def openvino_dir(weights: Path, int8: bool = False) -> Path:
    """Where an export of ``weights`` lives: ``distill_openvino_model/`` (Ultralytics' name), ``distill_int8_...``."""
    return weights.with_name(f"{weights.stem}{'_int8' if int8 else ''}_openvino_model")


def int8_folder(fp32_folder: Path) -> Path:
    """``distill_openvino_model/`` -> ``distill_int8_openvino_model/`` (any other name gets ``_int8``)."""
    suffix = "_openvino_model" if fp32_folder.name.endswith("_openvino_model") else ""
    return fp32_folder.with_name(f"{fp32_folder.name[:len(fp32_folder.name) - len(suffix)]}_int8{suffix}")


def is_openvino(path: Path) -> bool:
    """True for an OpenVINO model folder (an ``.xml`` graph with its ``metadata.yaml``)."""
    return path.is_dir() and any(path.glob("*.xml"))


def model_xml(folder: Path) -> Path:
    """Raises: CompressError when ``folder`` holds no OpenVINO graph."""
    found = sorted(folder.glob("*.xml"))
    if not found:
        raise CompressError(f"{folder} holds no OpenVINO model (.xml); export one with --format openvino")
    return found[0]


def layer_of(friendly_name: str) -> str:
    """``__module.model.22.cv2.0.0.conv/aten::_convolution/Convolution`` -> ``model.22.cv2.0.0.conv``."""
    return friendly_name.split("/", 1)[0].removeprefix("__module.")


def in_layers(friendly_name: str, layers: tuple[str, ...]) -> bool:
    """True when the op belongs to one of ``layers`` (``model.3`` covers ``model.3.cv1.conv``, not ``model.30``)."""
    layer = layer_of(friendly_name)
    return any(layer == x or layer.startswith(x + ".") for x in layers)


def float_scope(ov_model: object, float_head: bool, float_layers: tuple[str, ...]) -> list[str]:
    """Names of the ops NNCF must leave in float: the last layer's own ops but its conv branches (box decoding,
    DFL, the final concatenations and sigmoid) when ``float_head``, and every op of ``float_layers``."""
    ops = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() not in (
        "Constant", "Parameter", "Result")]
    layers = [layer_of(n) for n in ops if layer_of(n).startswith("model.")]
    last = max((x.split(".")[1] for x in layers if x.split(".")[1].isdigit()), key=int, default=None)
    head = f"model.{last}"
    branches = tuple(f"{head}.{b}" for b in HEAD_CONV_BRANCHES)
    names = []
    for n in ops:
        layer = layer_of(n)
        in_head = float_head and last is not None and (layer == head or layer.startswith(head + ".")) and not (
            in_layers(n, branches))
        if in_head or in_layers(n, float_layers):
            names.append(n)
    return names


def quantize_openvino(folder: Path, data: Dataset, imgsz: int, mode: str = "static", calibration: int = 300,
                      float_head: bool = True, float_layers: tuple[str, ...] = (), max_drop: float = 0.003,
                      holdout: int = 200, max_reverts: int = 20) -> Path:
    """Write the INT8 model of the fp32 OpenVINO model in ``folder`` next to it (``*_int8_openvino_model/``).

    Args:
        folder: an fp32 export (``*_openvino_model/``, with Ultralytics' ``metadata.yaml``).
        data: the dataset whose train split calibrates (and, in ``accuracy`` mode, checks the drop).
        mode: ``static`` or ``accuracy`` (accuracy-controlled, detectors only).
        calibration: train images that calibrate the activation ranges.
        float_head: keep the head's decoding in float.
        float_layers: layers (``model.0``, ``model.22.cv2``) kept in float.
        max_drop: ``accuracy`` mode: the largest mAP50-95 drop allowed (0.003 = 0.3 points).
        holdout: ``accuracy`` mode: train images (at most half the split; never used to calibrate) that measure
            the drop.
        max_reverts: ``accuracy`` mode: NNCF's rounds of returning ops to float, at most (its own cap is none: one
            validation per quantized op on a model that never meets ``max_drop``).

    Raises:
        CompressError: an unknown mode, ``accuracy`` on a classifier, or no train images.
    """
    import nncf
    import openvino as ov

    from yolo_compress.deploy.calibration import calibration_images, preprocess
    from yolo_compress.deploy.holdout import holdout_items, map50_95

    if mode not in ("static", "accuracy"):
        raise CompressError(f"OpenVINO INT8 mode {mode!r} is not supported; use static or accuracy")
    if mode == "accuracy" and data.task != "detect":
        raise CompressError("the accuracy-controlled INT8 mode measures mAP, so it is for detectors; use "
                            "--quantize-mode static for a classifier")
    xml = model_xml(folder)
    model = ov.Core().read_model(xml)
    held, items = holdout_items(data, imgsz, holdout) if mode == "accuracy" else ([], [])
    if mode == "accuracy" and not items:
        raise CompressError(f"the accuracy-controlled INT8 mode needs at least 2 train images in {data.path} (half "
                            "calibrate, half measure the drop)")
    images = calibration_images(data, calibration, exclude=set(held))
    scope = float_scope(model, float_head, float_layers)
    common = {"preset": nncf.QuantizationPreset.MIXED, "subset_size": len(images),
              "ignored_scope": nncf.IgnoredScope(names=scope) if scope else None}
    calib = nncf.Dataset([preprocess(p, imgsz, data.task) for p in images])
    if mode == "accuracy":
        quantized = nncf.quantize_with_accuracy_control(
            model, calib, nncf.Dataset(items), validation_fn=map50_95, max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE, **common,
            advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=max_reverts))
    else:
        quantized = nncf.quantize(model, calib, **common)
    LOGGER.info("OpenVINO INT8 (%s): calibrated on %d train images; %d ops kept in float", mode, len(images),
                len(scope))
    return save_int8_beside(quantized, folder)


def save_int8_beside(quantized: Any, folder: Path) -> Path:
    """Write the INT8 model next to the fp32 ``folder``, with its Ultralytics metadata, replacing any older one
    atomically."""
    import openvino as ov

    from yolo_compress.checkpoint import atomic_replace_dir

    out = int8_folder(folder)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=folder.parent) as tmp:
        staged = Path(tmp) / out.name
        staged.mkdir()
        ov.save_model(quantized, staged / model_xml(folder).name, compress_to_fp16=False)
        if (folder / "metadata.yaml").is_file():
            shutil.copyfile(folder / "metadata.yaml", staged / "metadata.yaml")
        atomic_replace_dir(staged, out)
    return out
