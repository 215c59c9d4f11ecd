"""Accuracy of a model on the dataset's validation split, the same way for every stage and the report."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import save_checkpoint
from yolo_compress.dataset import Dataset

# Ultralytics' metric suffixes: boxes (detect, obb; segment and pose too), masks, keypoints
KINDS = {"(B)": "", "(M)": "mask ", "(P)": "pose "}


def metric_name(key: str) -> str:
    """``"metrics/mAP50-95(B)"`` -> ``"mAP50-95"``, ``"metrics/mAP50-95(M)"`` -> ``"mask mAP50-95"``, ``"metrics/
    mAP50-95(P)"`` -> ``"pose mAP50-95"``, ``"metrics/accuracy_top1"`` -> ``"top1"``."""
    name = key.removeprefix("metrics/").replace("accuracy_", "")
    for suffix, kind in KINDS.items():
        if name.endswith(suffix):
            return kind + name.removesuffix(suffix)
    return name


def validate(weights: nn.Module | str | Path, data: Dataset, imgsz: int, **kwargs: Any) -> dict[str, float]:
    """Validate in float32 on the ``val`` split: mAP50, mAP50-95, precision, recall of the boxes (detect, obb), and
    of the masks (segment: ``mask mAP50-95``, ...) or keypoints (pose: ``pose mAP50-95``, OKS), or top1, top5
    (classify), as Ultralytics' validator of the task computes them.

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
    return {metric_name(k): float(v) for k, v in result.results_dict.items() if k.startswith("metrics/")}
