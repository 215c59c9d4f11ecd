"""Accuracy of a model on the dataset's validation split, the same way for every stage and the report."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import save_checkpoint
from yolo_compress.dataset import Dataset


def validate(weights: nn.Module | str | Path, data: Dataset, imgsz: int, **kwargs: Any) -> dict[str, float]:
    """Validate in float32 on the ``val`` split: mAP50, mAP50-95, precision, recall (detect) or top1, top5 (classify).

    A module is written to a temporary checkpoint first, so every row of a report goes the same way. Ultralytics'
    run folder is a temporary one too: validating leaves no ``runs/val`` behind.
    """
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(weights, Path(tmp) / "model.pt") if isinstance(weights, nn.Module) else weights
        args = {"data": str(data.data_arg), "imgsz": imgsz, "quantize": 32, "plots": False, "verbose": False,
                "project": tmp, "name": "val", "exist_ok": True, **kwargs}
        result = YOLO(path, task=data.task).val(**args)
    if data.task == "classify":
        return {"top1": float(result.top1), "top5": float(result.top5)}
    box = result.box
    return {"mAP50": float(box.map50), "mAP50-95": float(box.map), "precision": float(box.mp),
            "recall": float(box.mr)}
