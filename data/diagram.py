"""A seeded synthetic diagram dataset: nested boxes with ground-truth parent labels.

Diagrams (architecture sketches, flowcharts with groups) are boxes inside boxes. This generator draws
containers holding containers or nodes, nodes holding text-like labels, up to four levels deep, so that
``yolo_compress.relations`` can be trained on and scored offline. Every image depends only on
``(seed, split, index)``; two runs with the same arguments write identical files.

Besides the YOLO detection files (``images/<split>``, ``labels/<split>``, ``data.yaml``) each image gets a
parent-label file ``parents/<split>/<stem>.txt``, one line per box, in the same order as its YOLO label file::

    class x y w h px py pw ph p

``x y w h`` is the box (normalised centre x, centre y, width, height, as in YOLO labels), ``px py pw ph``
the parent's box in the same form, and ``p`` the parent's 0-based index among the file's non-empty lines,
-1 for a box without parent (then the parent fields are ``0 0 0 0``). The parent box is redundant on
purpose: it keeps the file readable and lets ``read_parent_labels`` catch wrong indices.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolo_compress.data.synthetic import write_yolo_dataset
from yolo_compress.errors import CompressError

NAMES = ("container", "node", "label")
CONTAINER, NODE, LABEL = range(3)
DEFAULT_ROOT = Path("data") / "diagram"
FIELDS = "class x y w h px py pw ph p"
PARENT_BOX_ATOL = 1e-3  # the parent fields must repeat line p's box to this precision (labels use 6 decimals)
MAX_DEPTH = 3  # container nesting levels below the image; nodes and labels add up to two more
GAP = 3  # pixels between siblings and between a child and its parent's outline


def _pastel(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(170, 256, 3))


def _dark(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 110, 3))


def _outline(img: np.ndarray, box: tuple[int, int, int, int], colour, thickness: int) -> None:
    """Outline drawn inward, so every pixel lies in ``[x1, x2) x [y1, y2)`` and the label box is exact."""
    x1, y1, x2, y2 = box
    for t in range(thickness):
        cv2.rectangle(img, (x1 + t, y1 + t), (x2 - 1 - t, y2 - 1 - t), colour, 1)


def _draw_label(img: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Text-like strokes: rows of 2-px dashes ("words") whose extent is exactly ``box``."""
    x1, y1, x2, y2 = box
    colour = _dark(rng)
    for row, y in enumerate(range(y1, y2, 3)):
        end = x2 if row == 0 else int(rng.integers(x1 + 2, x2 + 1))  # first row spans the full width
        x = x1
        while x < end:
            word = int(rng.integers(2, 7))
            img[y : min(y + 2, y2), x : min(x + word, end)] = colour
            x += word + 1
        img[y : min(y + 2, y2), end - 1] = colour  # the row ends on a stroke, so the extent is exact


def _sub_boxes(region: tuple[int, int, int, int], rng: np.random.Generator, k: int) -> list[tuple]:
    """Split ``region`` into ``k`` slots along its longer side (GAP apart), each shrunk at random."""
    x1, y1, x2, y2 = region
    horizontal = (x2 - x1) >= (y2 - y1)
    lo, hi = (x1, x2) if horizontal else (y1, y2)
    step = (hi - lo + GAP) / k
    out = []
    for i in range(k):
        a, b = int(lo + i * step), int(lo + (i + 1) * step) - GAP
        s = (a, y1, b, y2) if horizontal else (x1, a, x2, b)
        w, h = s[2] - s[0], s[3] - s[1]
        nw, nh = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.6, 1.0))
        ox, oy = int(rng.integers(0, w - nw + 1)), int(rng.integers(0, h - nh + 1))
        out.append((s[0] + ox, s[1] + oy, s[0] + ox + nw, s[1] + oy + nh))
    return out


def _place(img, rng, region, depth: int, parent: int, boxes: list) -> None:
    """Fill ``region`` with 1-3 children of ``parent``, recursing into containers; appends to ``boxes``."""
    long_side = max(region[2] - region[0], region[3] - region[1])
    k = min(int(rng.integers(1, 4)), (long_side + GAP) // (8 + GAP))
    if min(region[2] - region[0], region[3] - region[1]) < 8 or k < 1:
        return
    for box in _sub_boxes(region, rng, k):
        w, h = box[2] - box[0], box[3] - box[1]
        if min(w, h) < 8 or rng.random() < 0.1:
            continue
        index = len(boxes)
        thick = int(rng.integers(1, 3))
        inner = (box[0] + thick + GAP, box[1] + thick + GAP, box[2] - thick - GAP, box[3] - thick - GAP)
        if depth < MAX_DEPTH and min(w, h) >= 30 and rng.random() < 0.75 - 0.2 * depth:
            boxes.append((CONTAINER, box, parent))
            if rng.random() < 0.5:
                img[box[1] : box[3], box[0] : box[2]] = _pastel(rng)
            _outline(img, box, _dark(rng), thick)
            _place(img, rng, inner, depth + 1, index, boxes)
            continue
        boxes.append((NODE, box, parent))
        img[box[1] : box[3], box[0] : box[2]] = _pastel(rng)
        _outline(img, box, _dark(rng), thick)
        iw, ih = inner[2] - inner[0], inner[3] - inner[1]
        if iw >= 6 and ih >= 2 and rng.random() < 0.8:
            lw, lh = int(rng.integers(6, iw + 1)), 5 if ih >= 5 and rng.random() < 0.5 else 2
            lx, ly = inner[0] + (iw - lw) // 2, inner[1] + (ih - lh) // 2
            label = (lx, ly, lx + lw, ly + lh)
            boxes.append((LABEL, label, index))
            _draw_label(img, label, rng)


def render_diagram(img: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """Draw one diagram into ``img`` (square) and return rows ``(cls, xc, yc, w, h, parent_index)``.

    The first five fields are the YOLO label; ``parent_index`` points into the same list (-1 for none).
    Children sit at least ``GAP`` pixels inside their parent's outline and siblings never touch, so the
    direct parent is also the smallest box containing a child (``find_parent_nodes`` recovers it exactly).
    """
    size = img.shape[0]
    img[:] = tuple(int(v) for v in rng.integers(215, 256, 3))  # paper
    boxes: list = []
    while not boxes:  # a rare all-skipped draw retries, so no image is empty
        _place(img, rng, (2, 2, size - 2, size - 2), 0, -1, boxes)
    noise = rng.normal(0, rng.uniform(0, 4), img.shape)
    img[:] = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return [
        (cls, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size, parent)
        for cls, (x1, y1, x2, y2), parent in boxes
    ]


def format_parent_lines(rows: list[tuple]) -> list[str]:
    """Parent-label lines for rows from ``render_diagram``, rounded like the YOLO labels (6 decimals)."""
    lines = []
    for cls, xc, yc, w, h, p in rows:
        parent = " ".join(f"{v:.6f}" for v in rows[p][1:5]) if p >= 0 else "0 0 0 0"
        lines.append(f"{cls} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f} {parent} {p}")
    return lines


def _write_parents(root: Path, split: str, stem: str, rows: list[tuple]) -> None:
    folder = root / "parents" / split
    folder.mkdir(parents=True, exist_ok=True)
    lines = format_parent_lines(rows)
    (folder / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def make_diagram_dataset(
    root: str | Path = DEFAULT_ROOT, n_train: int = 200, n_val: int = 50, imgsz: int = 160, seed: int = 0
) -> Path:
    """Write the diagram dataset (YOLO files plus ``parents/``) to ``root`` and return its ``data.yaml``.

    Args:
        root (str | Path): destination folder; must not exist yet.
        n_train (int): training images.
        n_val (int): validation images.
        imgsz (int): square image side in pixels (>= 64: smaller leaves no room for nesting).
        seed (int): base seed; image ``i`` of a split depends only on ``(seed, split, i)``.

    Returns:
        (Path): the ``data.yaml`` (absolute ``path:``; classes container, node, label).

    Examples:
        >>> yaml_path = make_diagram_dataset("data/diagram", n_train=200, n_val=50, imgsz=160)
    """
    if n_train < 1 or n_val < 1 or imgsz < 64:
        raise CompressError(f"need --train >= 1, --val >= 1, --imgsz >= 64; got {n_train}, {n_val}, {imgsz}")
    counts = {"train": n_train, "val": n_val}
    return write_yolo_dataset(root, NAMES, render_diagram, counts, imgsz, seed, extra_files=_write_parents,
                              label_columns=5)


def read_parent_labels(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one parent-label file (format in the module docstring); blank lines are ignored.

    Args:
        path (str | Path): a ``parents/<split>/<stem>.txt`` file.

    Returns:
        (tuple[np.ndarray, np.ndarray, np.ndarray]): classes ``(N,)`` int64, boxes ``(N, 4)`` normalised
            xyxy float64, parent ids ``(N,)`` int64 (-1 for none).

    Raises:
        CompressError: naming ``file:line`` for a wrong field count, a non-numeric field, a parent id that is
            not -1 or another line's index, or parent fields that do not repeat line ``p``'s box.
    """
    path = Path(path)
    rows, where = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 10:
            raise CompressError(f"{path}:{lineno}: expected 10 fields '{FIELDS}', got {len(fields)}: {line!r}")
        try:
            values = [float(v) for v in fields]
        except ValueError as e:
            raise CompressError(f"{path}:{lineno}: non-numeric field in {line!r} ({e}); expected '{FIELDS}'") from e
        if not (values[0].is_integer() and values[9].is_integer()):
            raise CompressError(f"{path}:{lineno}: class and parent id must be integers, got {line!r}")
        rows.append(values)
        where.append(lineno)
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 10)
    classes, parents = data[:, 0].astype(np.int64), data[:, 9].astype(np.int64)
    for i, (p, lineno) in enumerate(zip(parents, where)):
        if p < -1 or p >= len(data) or p == i:
            raise CompressError(
                f"{path}:{lineno}: parent id {p} is out of range; use -1 for no parent or the 0-based index "
                f"(0..{len(data) - 1}) of another non-empty line"
            )
        if p >= 0 and not np.allclose(data[i, 5:9], data[p, 1:5], atol=PARENT_BOX_ATOL):
            raise CompressError(
                f"{path}:{lineno}: parent box {data[i, 5:9].tolist()} differs from the box of parent {p} "
                f"(line {where[p]}) {data[p, 1:5].tolist()}; parent ids are 0-based indices of non-empty lines"
            )
    xy, wh = data[:, 1:3], data[:, 3:5]
    return classes, np.concatenate([xy - wh / 2, xy + wh / 2], axis=1), parents
