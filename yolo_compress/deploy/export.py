"""Export a checkpoint with Ultralytics' exporter, to a single file next to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_compress.deploy.settings import FORMATS
from yolo_compress.errors import CompressError

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}  # one per name in FORMATS


def check_format(format: str) -> str:
    """Raises: CompressError for a format yolo-compress does not export to a single file."""
    if format not in FORMATS:
        raise CompressError(f"export format {format!r} is not supported; use one of {', '.join(FORMATS)}")
    return format


def exported_path(weights: Path, format: str) -> Path:
    """Where Ultralytics writes the export of ``weights``: same folder and stem."""
    return weights.with_suffix(SUFFIXES[check_format(format)])


def export(weights: str | Path, format: str, imgsz: int, **kwargs: Any) -> Path:
    """Export ``weights`` (a ``.pt``) to ``format`` at ``imgsz`` on the CPU; returns the written file."""
    from ultralytics import YOLO

    check_format(format)
    kwargs.setdefault("device", "cpu")
    return Path(YOLO(str(weights)).export(format=format, imgsz=imgsz, **kwargs))
