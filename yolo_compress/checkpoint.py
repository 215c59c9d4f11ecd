"""Ultralytics-format checkpoints: written atomically, read with a clear error when the file is not one.

Loading a checkpoint unpickles it, which can run code stored in the file (as ``ultralytics.YOLO`` does too):
yolo-compress only ever loads paths the user passed or files it wrote itself.
"""

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
from yolo_compress.models import check_task

TEMP_SUFFIX = ".yolo-compress-tmp"  # atomic writes' temp files: `.<name>.<random>.yolo-compress-tmp`
INIT_SUFFIX = ".yolo-compress-init.pt"  # a training stage's starting checkpoint: `.<stem>.yolo-compress-init.pt`


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``: never half a file.

    The file gets the permission bits a plain ``open(path, "w")`` would give under the current umask (a temp
    file is created ``0600`` and its mode would otherwise survive the rename). An existing directory at
    ``path`` is an error, raised before anything is written.

    Raises:
        CompressError: ``path`` is an existing directory.
    """
    path = Path(path)
    if path.is_dir():
        raise CompressError(f"{path} is a folder; give a file path to write to")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_replace_dir(staged: Path, target: Path) -> Path:
    """Move the finished folder ``staged`` (on the same file system) to ``target``, replacing an older one.

    The old folder is renamed aside first and deleted after the move, so ``target`` is always a whole model: the
    old one, or the new one (or, killed between the two renames, absent with the old one kept aside).
    """
    import shutil

    aside = target.with_name(f".{target.name}.old")
    if aside.exists():
        shutil.rmtree(aside)
    if target.exists():
        os.replace(target, aside)
    os.replace(staged, target)
    shutil.rmtree(aside, ignore_errors=True)
    return target


def train_args_of(model: nn.Module) -> dict[str, Any]:
    """A copy of the model's Ultralytics args (a dict or namespace; a loaded checkpoint's are its ``train_args``)."""
    args = getattr(model, "args", None)
    return dict(args) if isinstance(args, dict) else dict(vars(args)) if args is not None else {}


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Save ``model`` (a float32 copy, no optimizer) as an Ultralytics checkpoint dict that ``YOLO(path)`` opens.

    ``torch.save`` of a bare module does not load in ``YOLO()``; the dict form with ``"model"`` does.
    """
    from ultralytics import __version__

    from yolo_compress.models import task_of

    module = _detached_copy(model)
    train_args = train_args_of(module)
    module.task = train_args["task"] = task_of(module)  # else Ultralytics' loader defaults to "detect"
    ckpt = {
        "model": module,
        "ema": None,
        "optimizer": None,
        "epoch": -1,
        "train_args": train_args,
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


def load_model(path: str | Path, what: str = "weights") -> nn.Module:
    """Load the network of a checkpoint as float32 with gradients on; detection and classification models.

    Raises:
        CompressError: the file is missing, truncated or corrupted, not an Ultralytics checkpoint, or holds a
            model of a task yolo-compress does not handle.
    """
    from ultralytics.nn.tasks import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CompressError(f"{what} file not found: {path}; pass the path of a trained YOLO .pt checkpoint")
    try:
        model, _ = load_checkpoint(path)
    except Exception as e:  # torch/pickle raise many types for a file that is not a checkpoint
        raise CompressError(f"{path} is not a loadable YOLO checkpoint: {_load_failure(path, e)}; pass a .pt file "
                            "written by Ultralytics or yolo-compress") from e
    check_task(model, f"{what} {path}")
    model = model.float()
    for p in model.parameters():
        if p.is_floating_point():  # not a fake quantizer's integer bit width
            p.requires_grad_(True)
    return model


def _load_failure(path: Path, error: Exception) -> str:
    """Name the likely cause: a cut-off file (interrupted copy or write) or something else."""
    import zipfile

    if path.stat().st_size == 0:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                if z.testzip() is not None:
                    return "the file is corrupted"
        except (zipfile.BadZipFile, OSError):
            return "the file is truncated or corrupted"
    elif path.read_bytes()[:2] == b"PK":
        return "the file is truncated or corrupted"
    return f"loading raised {type(error).__name__}"


def checkpoint_is_complete(path: str | Path) -> bool:
    """True when ``path`` is a whole zip archive (how ``torch.save`` writes), so loading it will not hit its end."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False
