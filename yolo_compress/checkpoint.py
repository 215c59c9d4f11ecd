"""Ultralytics-format checkpoints: written atomically, read with a clear error when the file is not one."""

from __future__ import annotations

import io
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_compress.errors import CompressError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Save ``model`` (a float32 copy, no optimizer) as an Ultralytics checkpoint dict that ``YOLO(path)`` opens.

    ``torch.save`` of a bare module does not load in ``YOLO()``; the dict form with ``"model"`` does.
    """
    from ultralytics import __version__

    module = _detached_copy(model)
    args = getattr(module, "args", None)
    ckpt = {
        "model": module,
        "ema": None,
        "optimizer": None,
        "epoch": -1,
        "train_args": dict(args) if isinstance(args, dict) else dict(vars(args)) if args is not None else {},
        "date": datetime.now(timezone.utc).isoformat(),
        "version": __version__,
        **extra,
    }
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _detached_copy(model: nn.Module) -> nn.Module:
    """A float32, CPU, eval-mode deep copy without training-only state (loss criterion)."""
    from copy import deepcopy

    criterion = getattr(model, "criterion", None)
    if criterion is not None:
        model.criterion = None
    try:
        module = deepcopy(model)
    finally:
        if criterion is not None:
            model.criterion = criterion
    return module.float().cpu().eval()


def load_detection_model(path: str | Path) -> nn.Module:
    """Load the detection network of a checkpoint as float32 with gradients on.

    Raises:
        CompressError: the file is missing or is not an Ultralytics detection checkpoint.
    """
    from ultralytics.nn.tasks import DetectionModel, guess_model_task, load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CompressError(f"weights file not found: {path}; pass the path of a trained YOLO .pt checkpoint")
    try:
        model, _ = load_checkpoint(path)
    except Exception as e:  # torch/pickle raise many types for a file that is not a checkpoint
        raise CompressError(f"{path} is not a YOLO checkpoint (loading raised {type(e).__name__}); "
                            "pass a .pt file written by Ultralytics or yolo-compress") from e
    task = guess_model_task(model)  # segment/pose/obb models subclass DetectionModel
    if not isinstance(model, DetectionModel) or task != "detect":
        raise CompressError(f"{path} holds a {type(model).__name__} (task {task!r}); "
                            "yolo-compress compresses detection models only")
    model = model.float()
    for p in model.parameters():
        p.requires_grad_(True)
    return model
