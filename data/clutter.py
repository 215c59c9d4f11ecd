"""A seeded synthetic detection set where capacity matters: ten look-alike classes, small, overlapping objects, clutter.

The built-in shapes set is learnt by YOLOv8n almost as well as by YOLOv8s; compression benchmarks need a task on
which a 2x smaller network really loses accuracy and a larger teacher really knows more. Here:

* ten classes in look-alike pairs: circle / ring, square / frame, triangle / outlined triangle, cross / X,
  diamond / star (filled or outlined, rotated: shape and stroke both have to be read);
* 3-12 objects per image, 6-30% of the side, overlapping up to IoU 0.45 (partly hidden by later ones);
* unlabeled clutter: random strokes, arcs and blobs in the objects' colours, on a textured gradient with noise.

Every image depends only on ``(seed, split, index)``: the train and val images do not change with ``n_test``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from yolo_compress.data.synthetic import _background, add_noise, place_objects, write_yolo_dataset
from yolo_compress.errors import CompressError

LOGGER = logging.getLogger(__name__)
CLASSES = ("circle", "ring", "square", "frame", "triangle", "triangle_outline", "cross", "x", "diamond", "star")
DEFAULT_ROOT = Path("data") / "clutter"


def _polygon(centre: np.ndarray, radius: float, n: int, angle: float, inner: float | None = None) -> np.ndarray:
    """A regular n-gon (or a 2n-point star with ``inner`` radius ratio) as int32 points."""
    k = 2 * n if inner else n
    t = angle + np.arange(k) * 2 * np.pi / k
    r = np.full(k, radius) if not inner else np.where(np.arange(k) % 2 == 0, radius, radius * inner)
    return np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], 1).round().astype(np.int32)


def _draw(img: np.ndarray, name: str, box: np.ndarray, colour, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    r = min(x1 - x0, y1 - y0) / 2
    stroke = max(1, int(round(r / 4)))
    angle = float(rng.uniform(0, 2 * np.pi))
    centre = (int(round(c[0])), int(round(c[1])))
    if name == "circle":
        cv2.circle(img, centre, int(r), colour, -1)
    elif name == "ring":
        cv2.circle(img, centre, max(1, int(r) - stroke // 2), colour, stroke)
    elif name in ("square", "frame"):
        pts = _polygon(c, r * 1.1, 4, angle / 4 + np.pi / 4)
        cv2.fillPoly(img, [pts], colour) if name == "square" else cv2.polylines(img, [pts], True, colour, stroke)
    elif name in ("triangle", "triangle_outline"):
        pts = _polygon(c, r, 3, angle)
        cv2.fillPoly(img, [pts], colour) if name == "triangle" else cv2.polylines(img, [pts], True, colour, stroke)
    elif name in ("cross", "x"):
        turn = 0.0 if name == "cross" else np.pi / 4
        for a in (turn, turn + np.pi / 2):
            d = np.array([np.cos(a), np.sin(a)]) * r
            p, q = (c - d).round().astype(int), (c + d).round().astype(int)
            cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), colour, max(2, stroke))
    elif name == "diamond":
        cv2.fillPoly(img, [_polygon(c, r, 4, 0.0)], colour)
    else:  # star
        cv2.fillPoly(img, [_polygon(c, r, 5, angle, inner=0.45)], colour)


def _clutter(img: np.ndarray, rng: np.random.Generator) -> None:
    """Unlabeled strokes, arcs and blobs: distractors that look like parts of objects."""
    size = img.shape[0]
    for _ in range(int(rng.integers(3, 10))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        p = tuple(int(v) for v in rng.integers(0, size, 2))
        if kind == 0:
            q = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, p, q, colour, int(rng.integers(1, 3)))
        elif kind == 1:
            axes = tuple(int(v) for v in rng.integers(3, size // 6, 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, p, axes, 0, start, start + float(rng.uniform(40, 160)), colour, 1)
        else:
            cv2.circle(img, p, int(rng.integers(1, 4)), colour, -1)


def render_clutter(img: np.ndarray, rng: np.random.Generator) -> list:
    """Draw 3-12 objects (6-30% of the side, overlaps up to IoU 0.45) among clutter, with Gaussian noise."""
    size = img.shape[0]
    _background(img, rng)
    _clutter(img, rng)
    rows = place_objects(img, rng, int(rng.integers(3, 13)),
                         lambda r: r.uniform(0.06, 0.30) * size * r.uniform(0.85, 1.15, 2), 0.45, len(CLASSES),
                         lambda im, cls, box, colour, r: _draw(im, CLASSES[cls], box, colour, r))
    add_noise(img, rng, 10)
    return rows


def make_clutter_dataset(root: str | Path = DEFAULT_ROOT, n_train: int = 600, n_val: int = 100, imgsz: int = 192,
                         seed: int = 0, n_test: int = 0) -> Path:
    """Write the clutter dataset to ``root`` and return its ``data.yaml`` (``n_test`` > 0 adds a test split).

    Example:
        >>> yaml_path = make_clutter_dataset("data/clutter", n_train=600, n_val=100, imgsz=192)
    """
    if n_train < 1 or n_val < 1 or imgsz < 64 or n_test < 0:
        raise CompressError(f"need --train >= 1, --val >= 1, --imgsz >= 64; got {n_train}, {n_val}, {imgsz}")
    LOGGER.info("writing clutter dataset (%d train, %d val, %d test, %dpx) to %s", n_train, n_val, n_test, imgsz,
                root)
    counts = {"train": n_train, "val": n_val, **({"test": n_test} if n_test else {})}
    return write_yolo_dataset(root, CLASSES, render_clutter, counts, imgsz, seed)
