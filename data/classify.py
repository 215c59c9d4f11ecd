"""A seeded synthetic ImageFolder classification dataset: which shape is the large one in the picture?

Six classes (circle, ring, rectangle, frame, triangle, cross), one large shape per image on a cluttered gradient
background with noise, plus up to two small distractor shapes of other classes. Filled and outlined twins
(circle / ring, rectangle / frame) and the distractors keep a small CNN from saturating in an epoch or two.
Written as ``train/``, ``val/`` and ``test/`` folders with one subfolder per class, the layout Ultralytics'
classify task (and torchvision's ``ImageFolder``) reads. Every image depends only on ``(seed, split, index)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from yolo_compress.data.synthetic import _background, _contrasting_colour, staged_folder
from yolo_compress.errors import CompressError

CLASSES = ("circle", "ring", "rectangle", "frame", "triangle", "cross")
DEFAULT_ROOT = Path("data") / "classify"


def _draw(img: np.ndarray, cls: int, centre: tuple[int, int], size: int, colour, rng: np.random.Generator) -> None:
    cx, cy = centre
    r = size // 2
    thick = max(1, size // 8)
    name = CLASSES[cls]
    if name == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1)
    elif name == "ring":
        cv2.circle(img, (cx, cy), r, colour, thick)
    elif name in ("rectangle", "frame"):
        w, h = r, int(r * rng.uniform(0.6, 1.0))
        angle = float(rng.uniform(0, 90))
        box = cv2.boxPoints(((cx, cy), (2 * w, 2 * h), angle)).astype(np.int32)
        if name == "rectangle":
            cv2.fillPoly(img, [box], colour)
        else:
            cv2.polylines(img, [box], True, colour, thick)
    elif name == "triangle":
        angles = float(rng.uniform(0, 2 * np.pi)) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(img, [pts], colour)
    else:  # cross
        t = max(1, size // 6)
        cv2.rectangle(img, (cx - r, cy - t), (cx + r, cy + t), colour, -1)
        cv2.rectangle(img, (cx - t, cy - r), (cx + t, cy + r), colour, -1)


def render(img: np.ndarray, rng: np.random.Generator, cls: int) -> None:
    """Draw one image of class ``cls`` in place."""
    side = img.shape[0]
    _background(img, rng)
    for _ in range(int(rng.integers(0, 3))):  # small distractors of other classes
        other = int(rng.choice([c for c in range(len(CLASSES)) if c != cls]))
        size = int(side * rng.uniform(0.15, 0.25))
        centre = tuple(int(v) for v in rng.integers(size // 2, side - size // 2, 2))
        _draw(img, other, centre, size, _contrasting_colour(img, rng), rng)
    size = int(side * rng.uniform(0.4, 0.75))
    centre = tuple(int(v) for v in rng.integers(size // 2, side - size // 2 + 1, 2))
    _draw(img, cls, centre, size, _contrasting_colour(img, rng), rng)
    noise = rng.normal(0, rng.uniform(4, 20), img.shape)
    img[:] = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def make_classify_dataset(root: str | Path = DEFAULT_ROOT, n_train: int = 600, n_val: int = 180, imgsz: int = 64,
                          seed: int = 0, n_test: int | None = None) -> Path:
    """Write the dataset (classes balanced per split) to ``root`` and return ``root``.

    The folder is built next to ``root`` and moved into place at the end: an interrupted run leaves nothing that
    looks complete. ``dataset.yaml`` records the image size, which yolo-compress uses as the default.

    Raises:
        CompressError: ``root`` exists, or a count or size is too small.
    """
    n_test = n_val if n_test is None else n_test
    if min(n_train, n_val, n_test) < len(CLASSES) or imgsz < 32:
        raise CompressError(f"need --train, --val >= {len(CLASSES)} (one image per class) and --imgsz >= 32; got "
                            f"{n_train}, {n_val}, {imgsz}")
    root = Path(root).resolve()
    with staged_folder(root) as tmp:
        for split_id, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
            for cls in CLASSES:
                (tmp / split / cls).mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng([seed, split_id, i])
                cls = i % len(CLASSES)
                img = np.zeros((imgsz, imgsz, 3), np.uint8)
                render(img, rng, cls)
                cv2.imwrite(str(tmp / split / CLASSES[cls] / f"{split}_{i:05d}.png"), img)
        (tmp / "dataset.yaml").write_text(yaml.safe_dump({"imgsz": imgsz, "classes": list(CLASSES), "seed": seed}))
    return root


def ensure_classify_dataset(root: str | Path = DEFAULT_ROOT) -> Path:
    """Return ``root``, generating the dataset first when it is missing.

    Raises:
        CompressError: ``root`` exists but is not a complete generated dataset.
    """
    root = Path(root)
    if (root / "dataset.yaml").is_file():
        return root.resolve()
    if root.exists():
        raise CompressError(f"{root} exists but has no dataset.yaml; delete it to regenerate the built-in dataset")
    return make_classify_dataset(root)
