"""Export a checkpoint with Ultralytics' exporter, next to it: one file (ONNX, TorchScript) or an OpenVINO folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_compress.deploy.settings import FORMATS
from yolo_compress.errors import CompressError

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}  # the single-file formats of FORMATS


def check_format(format: str) -> str:
    """Raises: CompressError for a format yolo-compress does not export to, or OpenVINO when it is not installed."""
    if format not in FORMATS:
        raise CompressError(f"export format {format!r} is not supported; use one of {', '.join(FORMATS)}")
    if format == "openvino":
        from yolo_compress.deploy.openvino import check_openvino

        check_openvino()
    return format


def exported_path(weights: Path, format: str) -> Path:
    """Where Ultralytics writes the export of ``weights``: same folder and stem (``distill.onnx``,
    ``distill_openvino_model/``)."""
    if check_format(format) == "openvino":
        from yolo_compress.deploy.openvino import openvino_dir

        return openvino_dir(weights)
    return weights.with_suffix(SUFFIXES[format])


def export(weights: str | Path, format: str, imgsz: int, **kwargs: Any) -> Path:
    """Export ``weights`` (a ``.pt``) to ``format`` at ``imgsz`` on the CPU; returns the written file or folder."""
    from ultralytics import YOLO

    check_format(format)
    kwargs.setdefault("device", "cpu")
    return Path(YOLO(str(weights)).export(format=format, imgsz=imgsz, **kwargs))


def fresh_export(weights: Path, format: str, imgsz: int) -> Path:
    """The export of ``weights`` next to them, made again when missing or older than the weights."""
    path = exported_path(weights, format)
    if not path.exists() or path.stat().st_mtime < weights.stat().st_mtime:
        path = export(weights, format, imgsz)
    return path


def int8_path(onnx_path: Path) -> Path:
    """``distill.onnx`` -> ``distill-int8.onnx``."""
    return onnx_path.with_name(f"{onnx_path.stem}-int8.onnx")


def copy_metadata(source: Path, target: Path) -> None:
    """Keep Ultralytics' metadata (names, stride, imgsz, task) so ``YOLO(int8.onnx)`` validates and predicts."""
    import onnx

    meta = onnx.load(str(source)).metadata_props
    model = onnx.load(str(target))
    del model.metadata_props[:]
    model.metadata_props.extend(meta)
    onnx.save(model, str(target))
