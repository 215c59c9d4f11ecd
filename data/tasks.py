"""Seeded synthetic data for the segment, pose and obb tasks: shapes whose labels are exact, drawn as they are labelled.

* ``segment``: filled polygons (rectangle, triangle, ellipse as a 24-gon, cross as a 12-gon), each drawn with
  ``fillPoly`` from the very polygon its label holds, never overlapping: the mask label is the drawn mask.
* ``pose``: rotated rectangles and right triangles with four corner keypoints (top-left, top-right, bottom-right,
  bottom-left before rotation); the triangle's missing corner is labelled invisible. ``flip_idx`` pairs the corners
  that swap under a horizontal flip; ``kpt_oks_sigmas`` sets how exactly they are scored.
* ``obb``: rotated rectangles and ellipses labelled by their four rotated-box corners.

Every image depends only on ``(seed, split, index)``, on the shapes set's gradient-and-noise backgrounds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from yolo_compress.data.synthetic import _background, _contrasting_colour, add_noise, write_yolo_dataset
from yolo_compress.errors import CompressError

LOGGER = logging.getLogger(__name__)
SEGMENT_CLASSES = ("rectangle", "triangle", "ellipse", "cross")
POSE_CLASSES = ("rectangle", "triangle")
OBB_CLASSES = ("rectangle", "ellipse")
KPT_SHAPE = (4, 3)  # four corners, (x, y, visible)
FLIP_IDX = (1, 0, 3, 2)  # top-left <-> top-right, bottom-right <-> bottom-left
# OKS sigma of each corner (``kpt_oks_sigmas``, read by Ultralytics' pose loss and validator). Ultralytics' default
# for four non-COCO keypoints, 1/4, is so lenient that the converged YOLOv8n-pose scores pose mAP50-95 0.995 on val
# (nothing left to compare recipes by); COCO's eye sigma, 0.025, is so strict on 25-65 px shapes that it scores
# 0.004 after 70 epochs. At 0.05 a 40-px shape's corner scores OKS 0.95 within 0.9 px and 0.5 within 3.4 px: the
# baseline trained at 1/4 scores 0.65 (0.93 at 0.1), room for a pruned model to lose and for a recipe to win back.
KPT_SIGMAS = (0.05,) * KPT_SHAPE[0]


def _rotate(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return (points - centre) @ np.array([[c, s], [-s, c]]) + centre


def _outline(cls_name: str, w: float, h: float) -> np.ndarray:
    """The shape's polygon around (0, 0), of extent ``w`` x ``h``, before rotation."""
    x, y = w / 2, h / 2
    if cls_name == "rectangle":
        return np.array([[-x, -y], [x, -y], [x, y], [-x, y]])
    if cls_name == "triangle":  # right triangle: top-left, bottom-right, bottom-left
        return np.array([[-x, -y], [x, y], [-x, y]])
    if cls_name == "ellipse":
        t = np.arange(24) * 2 * np.pi / 24
        return np.stack([x * np.cos(t), y * np.sin(t)], 1)
    tx, ty = w / 6, h / 6  # cross: two bars a third of the box wide
    return np.array([[-tx, -y], [tx, -y], [tx, -ty], [x, -ty], [x, ty], [tx, ty], [tx, y], [-tx, y], [-tx, ty],
                     [-x, ty], [-x, -ty], [-tx, -ty]])


def _place(img: np.ndarray, rng: np.random.Generator, names: tuple[str, ...], max_turn: float,
           label: Callable[[int, np.ndarray, np.ndarray, str], tuple]) -> list[tuple]:
    """Draw 1-4 non-overlapping shapes (15-40% of the side, turned up to ``max_turn``); one label row each."""
    size = img.shape[0]
    _background(img, rng)
    taken: list[np.ndarray] = []
    rows = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            w, h = rng.uniform(0.15, 0.4, 2) * size
            turn = float(rng.uniform(-max_turn, max_turn))
            reach = np.hypot(w, h) / 2
            centre = rng.uniform(reach, size - reach, 2)
            box = np.array([*(centre - reach), *(centre + reach)])
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in taken):
                break
        else:
            continue
        cls = int(rng.integers(len(names)))
        corners = _rotate(_outline(names[cls], w, h) + centre, centre, turn)
        cv2.fillPoly(img, [corners.round().astype(np.int32)], _contrasting_colour(img, rng))
        taken.append(box)
        rows.append(label(cls, corners, centre, names[cls]))
    add_noise(img, rng, 10)
    return rows


def _segment_row(cls: int, polygon: np.ndarray, centre: np.ndarray, name: str, size: int) -> tuple:
    return (cls, *(polygon.round() / size).clip(0, 1).reshape(-1))


def _pose_row(cls: int, polygon: np.ndarray, centre: np.ndarray, name: str, size: int) -> tuple:
    corners = polygon.round()
    if name == "triangle":  # top-left, (top-right unseen), bottom-right, bottom-left
        kpts = [(*corners[0], 2), (0.0, 0.0, 0), (*corners[1], 2), (*corners[2], 2)]
    else:
        kpts = [(*p, 2) for p in corners]
    lo, hi = corners.min(0), corners.max(0)
    xywh = ((lo + hi) / 2 / size, (hi - lo) / size)
    flat = [v for x, y, vis in kpts for v in (x / size, y / size, vis)]
    return (cls, *xywh[0], *xywh[1], *flat)


def _obb_corners(name: str, polygon: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The rotated box of the shape: the polygon itself for a rectangle, the ellipse's box from its axis points."""
    if name == "rectangle":
        return polygon
    a, b = polygon[0] - centre, polygon[6] - centre  # ends of the two half-axes (24-gon: 0 and 90 degrees)
    return np.array([centre - a - b, centre + a - b, centre + a + b, centre - a + b])


def _obb_row(cls: int, polygon: np.ndarray, centre: np.ndarray, name: str, size: int) -> tuple:
    return (cls, *(_obb_corners(name, polygon, centre) / size).reshape(-1))


TASK_DATA = {
    # task: (class names, turn limit in radians, label row, extra yaml keys)
    "segment": (SEGMENT_CLASSES, np.pi, _segment_row, {}),
    "pose": (POSE_CLASSES, np.pi / 6, _pose_row, {"kpt_shape": list(KPT_SHAPE), "flip_idx": list(FLIP_IDX),
                                                     "kpt_oks_sigmas": list(KPT_SIGMAS)}),
    "obb": (OBB_CLASSES, np.pi / 2, _obb_row, {}),
}


def make_task_dataset(task: str, root: str | Path, n_train: int = 200, n_val: int = 50, imgsz: int = 160,
                      seed: int = 0, n_test: int = 0) -> Path:
    """Write the ``task`` (segment, pose, obb) shapes set to ``root`` and return its ``data.yaml``."""
    if n_train < 1 or n_val < 1 or imgsz < 32 or n_test < 0:
        raise CompressError(f"need --train >= 1, --val >= 1, --imgsz >= 32; got {n_train}, {n_val}, {imgsz}")
    names, turn, row, extra = TASK_DATA[task]
    LOGGER.info("writing %s shapes dataset (%d train, %d val, %d test, %dpx) to %s", task, n_train, n_val, n_test,
                imgsz, root)

    def render(img: np.ndarray, rng: np.random.Generator) -> list[tuple]:
        return _place(img, rng, names, turn, lambda c, p, o, n: row(c, p, o, n, img.shape[0]))

    counts = {"train": n_train, "val": n_val, **({"test": n_test} if n_test else {})}
    return write_yolo_dataset(root, names, render, counts, imgsz, seed, yaml_extra=extra)


def make_segment_dataset(root: str | Path = Path("data") / "segment", **kwargs) -> Path:
    """The segment set (see the module docstring); keywords as :func:`make_task_dataset`."""
    return make_task_dataset("segment", root, **kwargs)


def make_pose_dataset(root: str | Path = Path("data") / "pose", **kwargs) -> Path:
    """The pose set (see the module docstring); keywords as :func:`make_task_dataset`."""
    return make_task_dataset("pose", root, **kwargs)


def make_obb_dataset(root: str | Path = Path("data") / "obb", **kwargs) -> Path:
    """The obb set (see the module docstring); keywords as :func:`make_task_dataset`."""
    return make_task_dataset("obb", root, **kwargs)
