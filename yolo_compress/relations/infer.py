"""Parent relations between nested boxes: inference, drawing and scoring.

Diagram-style images (containers holding nodes holding labels) carry structure a detector does not output:
which box sits inside which. Here that structure is derived from the boxes alone, so any detector's output
can be turned into a tree and scored against ground-truth parent labels.

Rules (shared by inference and scoring):

* **Containment** of ``a`` in ``b`` is ``area(a & b) / area(a)``; ``b`` may be ``a``'s parent when it is at
  least ``tol`` (default 0.9), so a predicted child poking a few pixels out of its container still counts.
  A degenerate box (zero width or height) is contained by nothing.
* **Parent** of a box = the smallest-area OTHER box with STRICTLY larger area that contains it. Area falls
  strictly along every parent chain, so the result is always a forest (no cycles).
* **Ties:** among equal-area candidate parents the lowest index wins.
* **Duplicates:** boxes of equal area (exact duplicates included) are never parents of each other; duplicates
  become siblings under the same container.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)

# BGR colours cycled per box; link arrows use LINK_COLOUR so they stand out from the outlines.
PALETTE = ((255, 56, 56), (56, 56, 255), (56, 180, 56), (255, 157, 0), (200, 0, 200), (0, 190, 190))
LINK_COLOUR = (0, 0, 255)


def as_boxes(boxes: Sequence | np.ndarray, name: str = "boxes") -> np.ndarray:
    """Return ``boxes`` as a float64 ``(N, 4)`` xyxy array; an empty input gives shape ``(0, 4)``."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) in xyxy order, got {arr.shape}")
    return arr


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of xyxy boxes, 0 for degenerate ones (negative widths are clipped, not trusted)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas, shape ``(len(a), len(b))``."""
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    return np.clip(wh, 0, None).prod(axis=2)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, shape ``(len(a), len(b))``; 0 where the union is empty."""
    inter = intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def find_parent_nodes(boxes: Sequence | np.ndarray, tol: float = 0.9) -> list[int]:
    """Give each box the index of the smallest strictly larger box that contains it, or -1.

    Args:
        boxes (Sequence | np.ndarray): ``(N, 4)`` xyxy boxes in any one coordinate frame.
        tol (float): minimum ``area(child & parent) / area(child)``, in ``(0, 1]``; below 1 it forgives
            predicted children that stick out of their container a little.

    Returns:
        (list[int]): parent index per box, -1 for roots. Equal-area boxes (duplicates) are never each other's
            parent; equal-area candidate parents resolve to the lowest index. See the module docstring.

    Examples:
        >>> find_parent_nodes([[0, 0, 10, 10], [1, 1, 5, 5], [2, 2, 3, 3]])
        [-1, 0, 1]
    """
    if not 0.0 < tol <= 1.0:
        raise ValueError(f"tol={tol} must be in (0, 1]; 0.9 forgives a child 10% outside its parent")
    b = as_boxes(boxes)
    area = box_area(b)
    inter = intersection(b, b)  # inter[i, j] = area(i & j)
    contained = inter >= tol * area[:, None]  # row i (child) inside column j (parent)
    ok = contained & (area[None, :] > area[:, None]) & (area[:, None] > 0)
    # Lexicographic (area, index) minimum over allowed columns: argmin on area picks the lowest index on ties.
    masked = np.where(ok, area[None, :], np.inf)
    parents = np.argmin(masked, axis=1) if len(b) else np.zeros(0, dtype=int)
    return [int(p) if ok[i].any() else -1 for i, p in enumerate(parents)]


def check_parent_ids(parent_ids: Sequence[int], n: int, name: str = "parent_ids") -> np.ndarray:
    """Return ``parent_ids`` as an int array after checking its length and range against ``n`` boxes."""
    ids = np.asarray(parent_ids, dtype=np.int64).reshape(-1)
    if len(ids) != n:
        raise ValueError(f"{name} has {len(ids)} entries for {n} boxes; give one parent index (or -1) per box")
    bad = (ids < -1) | (ids >= n) | (ids == np.arange(n))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}]={ids[i]} is not -1 or the index of another box (0..{n - 1})")
    return ids


def visualize_nodes(
    image: np.ndarray,
    boxes: Sequence | np.ndarray,
    parent_ids: Sequence[int],
    labels: Sequence[str] | None = None,
    thickness: int = 1,
) -> np.ndarray:
    """Draw boxes and a child->parent arrow per relation on a copy of ``image``.

    The arrow runs from the child's top-left corner to its parent's top-left corner: with nested boxes the
    centres often coincide, while the corners sit in the margin between the two outlines.

    Args:
        image (np.ndarray): ``(H, W, 3)`` uint8 BGR image (``(H, W)`` grey is converted); never modified.
        boxes (Sequence | np.ndarray): ``(N, 4)`` xyxy pixel boxes.
        parent_ids (Sequence[int]): parent index per box, -1 for none (as from ``find_parent_nodes``).
        labels (Sequence[str] | None): optional text per box, drawn above its top-left corner in its colour.
        thickness (int): line width in pixels for outlines and arrows.

    Returns:
        (np.ndarray): the annotated BGR copy.
    """
    b = as_boxes(boxes)
    ids = check_parent_ids(parent_ids, len(b))
    if labels is not None and len(labels) != len(b):
        raise ValueError(f"labels has {len(labels)} entries for {len(b)} boxes; pass one string per box or None")
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    pts = np.round(b).astype(int)
    for i, (x1, y1, x2, y2) in enumerate(pts):
        cv2.rectangle(out, (x1, y1), (x2, y2), PALETTE[i % len(PALETTE)], thickness)
    for i, p in enumerate(ids):
        if p >= 0:
            child, parent = (int(pts[i, 0]), int(pts[i, 1])), (int(pts[p, 0]), int(pts[p, 1]))
            cv2.arrowedLine(out, child, parent, LINK_COLOUR, thickness, tipLength=0.3)
    if labels is not None:
        scale = max(0.3, min(out.shape[:2]) / 1000)
        for i, ((x1, y1, _, _), text) in enumerate(zip(pts, labels)):
            org = (int(x1) + 2, max(int(y1) - 2, 8))
            colour = PALETTE[i % len(PALETTE)]
            cv2.putText(out, str(text), org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return out


def match_boxes(
    gt_boxes: np.ndarray,
    pred_boxes: np.ndarray,
    iou: float = 0.5,
    gt_classes: Sequence[int] | None = None,
    pred_classes: Sequence[int] | None = None,
) -> np.ndarray:
    """One-to-one greedy matching: highest-IoU pair first, ties by (pred index, gt index).

    Returns:
        (np.ndarray): for each predicted box the matched GT index, -1 when unmatched.
    """
    ious = box_iou(pred_boxes, gt_boxes)
    if gt_classes is not None and pred_classes is not None:
        same = np.asarray(pred_classes).reshape(-1, 1) == np.asarray(gt_classes).reshape(1, -1)
        ious = np.where(same, ious, 0.0)
    match = np.full(len(pred_boxes), -1, dtype=np.int64)
    pi, gi = np.nonzero(ious >= iou)
    order = np.lexsort((gi, pi, -ious[pi, gi]))  # last key is primary: IoU descending
    gt_used = np.zeros(len(gt_boxes), dtype=bool)
    for k in order:
        if match[pi[k]] < 0 and not gt_used[gi[k]]:
            match[pi[k]], gt_used[gi[k]] = gi[k], True
    return match


def prf(tp: int, n_pred: int, n_gt: int) -> dict[str, float]:
    """Precision, recall and F1 from counts; 1.0 all round when nothing was expected or predicted.

    Any other 0/0 (e.g. recall with no GT relations but some predicted) is 0.0.
    """
    if n_pred == 0 and n_gt == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def relation_metrics(
    gt_boxes: Sequence | np.ndarray,
    pred_boxes: Sequence | np.ndarray,
    gt_parent_ids: Sequence[int],
    pred_parent_ids: Sequence[int],
    iou: float = 0.5,
    gt_classes: Sequence[int] | None = None,
    pred_classes: Sequence[int] | None = None,
) -> dict[str, float]:
    """Score predicted (child, parent) relations against ground truth for one image.

    Boxes are matched one-to-one (``match_boxes``; class-aware when both class lists are given). A predicted
    relation ``(c, p)`` is a true positive when ``c`` matches GT box ``g`` and ``p`` matches ``g``'s GT parent.
    Each GT box has at most one parent and one match, so a GT relation is counted at most once.

    Args:
        gt_boxes (Sequence | np.ndarray): ``(G, 4)`` xyxy GT boxes.
        pred_boxes (Sequence | np.ndarray): ``(P, 4)`` xyxy predicted boxes, same frame as ``gt_boxes``.
        gt_parent_ids (Sequence[int]): GT parent index per GT box, -1 for none.
        pred_parent_ids (Sequence[int]): predicted parent index per predicted box, -1 for none.
        iou (float): minimum IoU for a box match.
        gt_classes (Sequence[int] | None): GT class per box; used only together with ``pred_classes``.
        pred_classes (Sequence[int] | None): predicted class per box.

    Returns:
        (dict[str, float]): ``precision, recall, f1`` (see ``prf`` for empty cases) and the counts ``tp``,
            ``n_pred`` (predicted relations), ``n_gt`` (GT relations), summable over images for micro scores.
    """
    gt, pred = as_boxes(gt_boxes, "gt_boxes"), as_boxes(pred_boxes, "pred_boxes")
    gt_par = check_parent_ids(gt_parent_ids, len(gt), "gt_parent_ids")
    pred_par = check_parent_ids(pred_parent_ids, len(pred), "pred_parent_ids")
    match = match_boxes(gt, pred, iou, gt_classes, pred_classes)
    tp = 0
    for c, p in enumerate(pred_par):
        if p >= 0 and match[c] >= 0 and match[p] >= 0:
            tp += int(gt_par[match[c]] == match[p])
    n_pred, n_gt = int((pred_par >= 0).sum()), int((gt_par >= 0).sum())
    return {**prf(tp, n_pred, n_gt), "tp": tp, "n_pred": n_pred, "n_gt": n_gt}
