"""The images INT8 quantization calibrates on (train split, never val), preprocessed as the exported model takes
them; shared by both runtimes' quantizers and the accuracy-controlled mode's held-out set."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from yolo_compress.dataset import Dataset, split_images
from yolo_compress.errors import CompressError


def calibration_images(data: Dataset, count: int, exclude: Collection[Path] = ()) -> list[Path]:
    """Up to ``count`` images of the train split but ``exclude``, evenly spread over it (sorted, so the choice is
    reproducible).

    Raises:
        CompressError: the split has no images.
    """
    images = [p for p in split_images(data, "train") if p not in exclude]
    if not images:
        raise CompressError(f"no calibration images in the train split of {data.path}; static INT8 quantization "
                            "needs them (or use --quantize-mode dynamic)")
    step = max(len(images) // count, 1)
    return images[::step][:count]


def read_image(path: Path) -> np.ndarray:
    """An image as Ultralytics reads it (``cv2.imread``: BGR, HWC, uint8).

    Raises:
        CompressError: the file cannot be read as an image.
    """
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise CompressError(f"cannot read image {path} (needed to calibrate or check INT8); delete or replace it")
    return img


def preprocess(path: Path, imgsz: int, task: str) -> np.ndarray:
    """One image file as the exported model takes it (see :func:`to_input`)."""
    return to_input(read_image(path), imgsz, task)


def to_input(img: np.ndarray, imgsz: int, task: str) -> np.ndarray:
    """A BGR image as the exported model takes it: (1, 3, imgsz, imgsz) float32 RGB in [0, 1].

    Detectors get Ultralytics' inference letterbox (aspect kept, grey 114 padding); classifiers a resize of the
    centre crop, as Ultralytics' classification transforms do.
    """
    import cv2
    from ultralytics.data.augment import LetterBox

    if task == "classify":
        h, w = img.shape[:2]
        s = min(h, w)
        img = cv2.resize(img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (imgsz, imgsz),
                         interpolation=cv2.INTER_LINEAR)
    else:
        img = LetterBox((imgsz, imgsz), auto=False)(image=img)
    return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
