"""Size and accuracy of a detection model: params, GFLOPs, and validation mAP."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import save_checkpoint
from yolo_compress.training import RUNS_DIR


def model_size(model: nn.Module, imgsz: int = 640) -> dict[str, float]:
    """Parameter count and GFLOPs at ``imgsz`` (Ultralytics' THOP-based ``get_flops``)."""
    from ultralytics.utils.torch_utils import get_flops

    return {"params": sum(p.numel() for p in model.parameters()), "gflops": float(get_flops(model, imgsz))}


def validate(weights: nn.Module | str | Path, data: str | Path, imgsz: int, **kwargs: Any) -> dict[str, float]:
    """Validate in float32 on the dataset's ``val`` split; returns precision, recall, mAP50, mAP50-95.

    A module is written to a temporary checkpoint first, so every row of a report goes the same way.
    """
    from ultralytics import YOLO

    args = {"data": str(data), "imgsz": imgsz, "quantize": 32, "plots": False, "verbose": False,
            "project": str(RUNS_DIR.resolve()), "name": "val", "exist_ok": True, **kwargs}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(weights, Path(tmp) / "model.pt") if isinstance(weights, nn.Module) else weights
        box = YOLO(path).val(**args).box
    return {"precision": float(box.mp), "recall": float(box.mr), "mAP50": float(box.map50), "mAP50-95": float(box.map)}
