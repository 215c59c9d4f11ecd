"""A seeded synthetic YOLO-format detection dataset of filled shapes on cluttered backgrounds.

It exists so that tests, benchmarks and the default demo run offline: YOLOv8n trained from ``yolov8n.yaml``
learns it to mAP50-95 > 0.5 in about ten CPU epochs at imgsz 160. Every image depends only on
``(seed, split, index)``, so two runs with the same arguments write identical files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolo_compress.errors import CompressError

LOGGER = logging.getLogger(__name__)
SHAPES = ("circle", "rectangle", "triangle", "cross")
DEFAULT_ROOT = Path("data") / "shapes"
SPLITS = ("train", "val")

# An image renderer draws into ``img`` and returns its label rows ``(cls, *values)``, normalised: ``xc, yc, w, h``
# for boxes; polygon points, keypoints or rotated-box corners for the other tasks (``data/tasks.py``).
Renderer = Callable[[np.ndarray, np.random.Generator], list[tuple]]


@contextlib.contextmanager
def staged_folder(root: str | Path) -> Iterator[Path]:
    """Yield a temp folder next to ``root`` that becomes ``root`` when the block ends without error (else it is
    deleted): an interrupted generator leaves nothing that looks like a dataset.

    Raises:
        CompressError: ``root`` exists.
    """
    root = Path(root).resolve()
    if root.exists():
        raise CompressError(f"{root} already exists; choose another folder or delete it first")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        yield tmp
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_yolo_dataset(
    root: str | Path,
    names: Sequence[str],
    render: Renderer,
    counts: dict[str, int],
    imgsz: int,
    seed: int,
    extra_files: Callable[[Path, str, str, list], None] | None = None,
    yaml_extra: dict | None = None,
    label_columns: int | None = None,
) -> Path:
    """Render ``counts[split]`` images per split and write images, labels and ``<root>/data.yaml``.

    The dataset is built in a temp folder next to ``root`` and moved into place at the end, and the yaml
    (with an absolute ``path:``) is written last: an interrupted run leaves no dataset that looks complete.

    Args:
        root: destination folder; must not exist yet.
        names: class names, index = class id.
        render: draws one image and returns its label rows.
        counts: images per split, e.g. ``{"train": 200, "val": 50}``.
        imgsz: square image side in pixels.
        seed: base seed; image ``i`` of split ``s`` uses ``(seed, s, i)``.
        extra_files: optional ``fn(tmp_root, split, stem, rows)`` writing more per-image files.
        yaml_extra: more keys for ``data.yaml`` (a pose set's ``kpt_shape`` and ``flip_idx``).
        label_columns: how many leading values of a row its label holds (the rest is for ``extra_files``);
            ``None``: the whole row.

    Returns:
        Path of the written ``data.yaml``.
    """
    root = Path(root).resolve()
    with staged_folder(root) as tmp:
        for split_id, (split, n) in enumerate(counts.items()):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng([seed, split_id, i])
                img = np.zeros((imgsz, imgsz, 3), np.uint8)
                rows = render(img, rng)
                stem = f"{split}_{i:05d}"
                cv2.imwrite(str(tmp / "images" / split / f"{stem}.png"), img)
                lines = [" ".join((str(r[0]), *(f"{v:.6f}" for v in r[1:label_columns]))) for r in rows]
                (tmp / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                if extra_files is not None:
                    extra_files(tmp, split, stem, rows)
    # ``imgsz`` is not an Ultralytics key: yolo-compress uses it as the default image size for this dataset.
    spec = {"path": str(root), **{s: f"images/{s}" for s in counts}, "names": dict(enumerate(names)), "imgsz": imgsz,
            **(yaml_extra or {})}
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yaml_path


def _background(img: np.ndarray, rng: np.random.Generator) -> None:
    """Gradient + clutter lines + noise, so the detector cannot key on a flat background colour."""
    h, w = img.shape[:2]
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, w if rng.random() < 0.5 else h)
    ramp = (c0[None] * (1 - t[:, None]) + c1[None] * t[:, None]).astype(np.uint8)
    img[:] = ramp[None] if len(t) == w else ramp[:, None]
    for _ in range(rng.integers(0, 4)):
        p0, p1 = rng.integers(0, w, 2), rng.integers(0, w, 2)
        cv2.line(img, tuple(map(int, p0)), tuple(map(int, p1)), tuple(map(int, rng.integers(0, 256, 3))), 1)


def _contrasting_colour(img: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A colour at least 80 (L1 / 3) away from the mean background, so every shape stays visible."""
    mean = img.reshape(-1, 3).mean(0)
    for _ in range(50):
        c = rng.integers(0, 256, 3)
        if np.abs(c - mean).mean() > 80:
            break
    return tuple(int(v) for v in c)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _draw_shape(img: np.ndarray, cls: int, box: np.ndarray, colour, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if SHAPES[cls] == "circle":
        cv2.ellipse(img, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, colour, -1)
    elif SHAPES[cls] == "rectangle":
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
    elif SHAPES[cls] == "triangle":
        apex = int(rng.integers(x0, x1 + 1))
        cv2.fillPoly(img, [np.array([[apex, y0], [x0, y1], [x1, y1]], np.int32)], colour)
    else:  # cross: two bars, a third of the box wide
        tx, ty = max(1, (x1 - x0) // 3), max(1, (y1 - y0) // 3)
        cv2.rectangle(img, (x0, y0 + ty), (x1, y1 - ty), colour, -1)
        cv2.rectangle(img, (x0 + tx, y0), (x1 - tx, y1), colour, -1)


def place_objects(img: np.ndarray, rng: np.random.Generator, count: int, extent: Callable, max_iou: float,
                  n_classes: int, draw: Callable) -> list[tuple[int, float, float, float, float]]:
    """Place ``count`` objects (``extent(rng)`` -> pixel width, height; 20 tries each to overlap every earlier one by
    less than ``max_iou``), draw each with ``draw(img, cls, box, colour, rng)``; return their YOLO label rows."""
    size = img.shape[0]
    rows, boxes = [], []
    for _ in range(count):
        for _attempt in range(20):
            w, h = extent(rng)
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = np.array([x0, y0, x0 + w, y0 + h])
            if all(_iou(box, b) < max_iou for b in boxes):
                break
        else:
            continue
        cls = int(rng.integers(n_classes))
        draw(img, cls, box, _contrasting_colour(img, rng), rng)
        boxes.append(box)
        rows.append((cls, (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size, w / size, h / size))
    return rows


def add_noise(img: np.ndarray, rng: np.random.Generator, max_sigma: float) -> None:
    """Gaussian pixel noise of a random strength from 2 to ``max_sigma``, in place."""
    noise = rng.normal(0, rng.uniform(2, max_sigma), img.shape)
    img[:] = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def render_shapes(img: np.ndarray, rng: np.random.Generator, max_objects: int = 4) -> list:
    """Draw 1..max_objects shapes (sizes 15-45% of the side, overlaps of IoU < 0.3) with Gaussian noise."""
    size = img.shape[0]
    _background(img, rng)
    rows = place_objects(img, rng, int(rng.integers(1, max_objects + 1)), lambda r: r.uniform(0.15, 0.45, 2) * size,
                         0.3, len(SHAPES), _draw_shape)
    add_noise(img, rng, 12)
    return rows


def make_shapes_dataset(
    root: str | Path = DEFAULT_ROOT, n_train: int = 200, n_val: int = 50, imgsz: int = 160, seed: int = 0,
    n_test: int = 0,
) -> Path:
    """Write the shapes dataset to ``root`` and return its ``data.yaml``.

    ``n_test`` > 0 adds a ``test`` split (its own images, never used to pick weights): the accuracy benchmark
    measures on it, so that choosing the best epoch on ``val`` does not flatter the result. The train and val
    images do not depend on it.

    Example:
        >>> yaml_path = make_shapes_dataset("data/shapes", n_train=200, n_val=50, imgsz=160)
    """
    if n_train < 1 or n_val < 1 or imgsz < 32:
        raise CompressError(f"need --train >= 1, --val >= 1, --imgsz >= 32; got {n_train}, {n_val}, {imgsz}")
    if n_test < 0:
        raise CompressError(f"need --test >= 0, got {n_test}")
    LOGGER.info("writing shapes dataset (%d train, %d val, %d test, %dpx) to %s", n_train, n_val, n_test, imgsz, root)
    counts = {"train": n_train, "val": n_val, **({"test": n_test} if n_test else {})}
    return write_yolo_dataset(root, SHAPES, render_shapes, counts, imgsz, seed)


def ensure_dataset(root: str | Path, make: Callable[..., Path], **kwargs) -> Path:
    """Return ``root/data.yaml``, generating the dataset with ``make(root, **kwargs)`` first when it is missing.

    Raises:
        CompressError: ``root`` exists but is not a complete generated dataset.
    """
    yaml_path = Path(root) / "data.yaml"
    if yaml_path.is_file():
        return yaml_path.resolve()
    if Path(root).exists():
        raise CompressError(f"{root} exists but has no data.yaml; delete it to regenerate the built-in dataset")
    return make(root, **kwargs)


def ensure_shapes_dataset(root: str | Path = DEFAULT_ROOT, **kwargs) -> Path:
    """Return ``root/data.yaml``, generating the shapes dataset first when it is missing."""
    return ensure_dataset(root, make_shapes_dataset, **kwargs)
