"""Checks every command runs before any work: image size, batch, device, disk space, prediction sources.

Each raises ``CompressError`` with what is wrong and the fix, so bad input ends in one line before a minute of
training (or an Ultralytics traceback half-way) is spent on it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from yolo_compress.dataset import IMAGE_SUFFIXES
from yolo_compress.errors import CompressError

MAX_IMGSZ = 4096  # above this a YOLOv8 forward needs tens of GB; surely a typo
MIN_FREE_MB = 200  # a run writes a few checkpoints of up to ~100 MB (YOLOv8x) plus logs


def check_imgsz(imgsz: Any, stride: int = 32) -> int:
    """An image size Ultralytics can use: an integer in ``[stride, MAX_IMGSZ]`` (it rounds up to the stride)."""
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or not stride <= imgsz <= MAX_IMGSZ:
        raise CompressError(f"imgsz {imgsz!r} must be an integer from {stride} to {MAX_IMGSZ} (a multiple of {stride},"
                            " e.g. 640); fix --imgsz")
    return imgsz


def check_batch(batch: Any) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompressError(f"batch {batch!r} must be an integer >= 1 (e.g. 16); fix --batch")


def check_device(device: Any) -> None:
    """``None``, ``cpu``, ``mps`` or CUDA indices (``0``, ``0,1``) that exist on this machine."""
    if device is None or str(device).strip().lower() in ("", "cpu", "mps"):
        return
    import torch

    text = str(device).strip().lower().removeprefix("cuda:")
    try:
        indices = [int(i) for i in text.split(",") if i.strip()]
    except ValueError:
        raise CompressError(f"device {device!r} is not cpu, mps or CUDA indices like 0 or 0,1; fix --device") from None
    count = torch.cuda.device_count()
    missing = [i for i in indices if not 0 <= i < count]
    if missing:
        have = f"CUDA devices 0..{count - 1}" if count else "no CUDA device"
        raise CompressError(f"device {device!r}: this machine has {have}; pass --device cpu or an existing index")


def check_train_values(args: dict[str, Any]) -> None:
    """The image size, batch and device among Ultralytics training keywords, when given."""
    if "imgsz" in args:
        check_imgsz(args["imgsz"])
    if "batch" in args:
        check_batch(args["batch"])
    if "device" in args:
        check_device(args["device"])


def check_disk(folder: str | Path, need_mb: int = MIN_FREE_MB) -> None:
    """Room for a run's outputs on the disk that holds ``folder`` (or its nearest existing parent)."""
    existing = Path(folder).resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free / 2**20
    if free < need_mb:
        raise CompressError(f"only {free:.0f} MB free on the disk of {folder}; free at least {need_mb} MB or choose "
                            "another output folder")


def check_source(source: str | Path) -> None:
    """A prediction source: an image file, a folder with images, or a ``.txt`` list of existing image files."""
    path = Path(source).expanduser()
    if not path.exists():
        raise CompressError(f"source not found: {source}; pass an image file or a folder of images")
    if path.is_dir():
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
            raise CompressError(f"source folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); pass "
                                "a folder of images")
        return
    if path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        listed = [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
        bad = [str(p) for p in listed if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file()]
        if not listed or bad:
            raise CompressError(f"source {path} is read as a list of image paths, but "
                                f"{'it is empty' if not listed else f'{bad[0]} is no image file'}; pass an image or "
                                "a folder")
        return
    import cv2

    if path.suffix.lower() not in IMAGE_SUFFIXES or cv2.imread(str(path)) is None:
        raise CompressError(f"source {path} is not a readable image ({', '.join(sorted(IMAGE_SUFFIXES))}); pass an "
                            "image file or a folder of images")


def check_writable(folder: str | Path, fix: str) -> Path:
    """``folder`` can be made and written (``training.writable_dir``), else one line that ends in ``fix``: a
    read-only destination otherwise fails in an ``OSError`` traceback once the work is done."""
    from yolo_compress.training import writable_dir

    try:
        return writable_dir(folder)
    except CompressError as e:
        raise CompressError(f"{str(e).removesuffix('; choose another')}; {fix}") from None


def check_beside_weights(weights: str | Path, command: str) -> None:
    """``export`` and ``quantize`` write next to the weights (Ultralytics' exporter has no other place)."""
    weights = Path(weights).expanduser()
    check_writable(weights.absolute().parent, f"{command} writes next to the weights: copy {weights.name} to a "
                   f"writable folder and {command} that copy")


def check_save_dir(save_dir: str | Path, flag: str = "--save-dir") -> None:
    """A folder for the drawings that can be written (in a read-only current folder, the default is not)."""
    if Path(save_dir).exists() and not Path(save_dir).is_dir():
        raise CompressError(f"{flag} {save_dir} is a file; pass a folder for the drawings")
    check_writable(Path(save_dir).expanduser().absolute(), f"pass {flag} in a writable folder")
