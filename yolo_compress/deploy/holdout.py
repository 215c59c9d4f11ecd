"""mAP50-95 of a compiled OpenVINO detector on held-out train images: the yardstick of accuracy-controlled INT8.

The images are train images the calibration did not use (the val split stays for the report), preprocessed with
Ultralytics' inference letterbox; predictions go through Ultralytics' NMS (conf 0.001, IoU 0.7, as its validator)
and its ``ap_per_class``, with the validator's greedy matching at the ten IoU thresholds 0.50:0.95.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from yolo_compress.dataset import Dataset, split_images

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def letterboxed_labels(image: Path, shape: tuple[int, int], imgsz: int) -> np.ndarray:
    """The image's YOLO labels as ``(n, 5)`` rows ``cls, x1, y1, x2, y2`` in the letterboxed input's pixels."""
    from yolo_compress.dataset import label_file

    h, w = shape
    r = min(imgsz / h, imgsz / w)
    left = round((imgsz - round(w * r)) / 2 - 0.1)
    top = round((imgsz - round(h * r)) / 2 - 0.1)
    file = label_file(image)
    rows = np.loadtxt(file, ndmin=2, dtype=np.float32) if file.is_file() and file.stat().st_size else np.zeros(
        (0, 5), np.float32)
    cls, x, y, bw, bh = rows[:, :5].T
    return np.stack([cls, (x - bw / 2) * w * r + left, (y - bh / 2) * h * r + top,
                     (x + bw / 2) * w * r + left, (y + bh / 2) * h * r + top], 1)


def holdout_items(data: Dataset, imgsz: int, count: int) -> tuple[list[Path], list[tuple[np.ndarray, np.ndarray]]]:
    """Up to ``count`` train images (at most half the split, so the rest can calibrate), evenly spread, and each as
    (model input, letterboxed labels)."""
    from yolo_compress.deploy.calibration import read_image, to_input

    images = split_images(data, "train")
    count = min(count, len(images) // 2)
    step = max(len(images) // max(count, 1), 1)
    chosen = images[::step][:count]
    items = []
    for path in chosen:
        img = read_image(path)  # read once: its shape places the labels
        items.append((to_input(img, imgsz, data.task), letterboxed_labels(path, img.shape[:2], imgsz)))
    return chosen, items


def match(iou: np.ndarray, pred_cls: np.ndarray, true_cls: np.ndarray) -> np.ndarray:
    """``(n_pred, 10)`` true positives, predictions in descending confidence (Ultralytics' greedy matching)."""
    correct = np.zeros((len(pred_cls), len(IOU_THRESHOLDS)), bool)
    iou = iou * (true_cls[:, None] == pred_cls[None])
    claimed = np.zeros((iou.shape[0], len(IOU_THRESHOLDS)), bool)
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS.min()).any(0)):
        available = np.where(claimed, 0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        claimed[k, range(len(IOU_THRESHOLDS))] |= correct[j]
    return correct


def map50_95(compiled: Any, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """mAP50-95 of ``compiled`` (an ``openvino.CompiledModel`` or any callable returning the raw head output)."""
    import torch
    from ultralytics.utils.metrics import ap_per_class, box_iou
    from ultralytics.utils.nms import non_max_suppression

    stats: list[tuple[np.ndarray, ...]] = []
    for x, labels in items:
        out = compiled(x)
        raw = out[0] if isinstance(out, (list, tuple)) else next(iter(out.values())) if hasattr(out, "values") else out
        det = non_max_suppression(torch.from_numpy(np.asarray(raw)), conf_thres=0.001, iou_thres=0.7,
                                  max_det=300)[0].numpy()
        true_cls = labels[:, 0]
        if len(det) and len(labels):
            iou = box_iou(torch.from_numpy(labels[:, 1:]), torch.from_numpy(det[:, :4])).numpy()
            tp = match(iou, det[:, 5], true_cls)
        else:
            tp = np.zeros((len(det), len(IOU_THRESHOLDS)), bool)
        stats.append((tp, det[:, 4], det[:, 5], true_cls))
    tp, conf, pred_cls, true_cls = (np.concatenate(s) for s in zip(*stats))
    if not len(true_cls):
        return 0.0
    ap = ap_per_class(tp, conf, pred_cls, true_cls)[5]
    return float(ap.mean()) if ap.size else 0.0
