"""Run a YOLO detector and read its boxes as a nesting tree; score that tree against parent labels.

The detector knows nothing about relations: parents are inferred from its boxes by
``relations.infer.find_parent_nodes``, so a compressed model can be compared with its baseline on structure as well
as on mAP. Ground truth comes from ``parents/<split>/*.txt`` next to ``images/<split>`` (format in
``yolo_compress.data.diagram``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import yaml
from ultralytics.data.utils import IMG_FORMATS
from ultralytics.utils.patches import imread

from yolo_compress.data.diagram import read_parent_labels
from yolo_compress.dataset import resolve_data
from yolo_compress.errors import CompressError
from yolo_compress.relations.infer import find_parent_nodes, prf, relation_metrics, visualize_nodes

if TYPE_CHECKING:
    from ultralytics import YOLO

LOGGER = logging.getLogger(__name__)


def _detections(result, tol: float) -> dict[str, Any]:
    """Plain arrays from one Ultralytics ``Results``, plus inferred parents."""
    boxes = result.boxes.xyxy.cpu().numpy().astype(np.float64)
    return {
        "path": result.path,
        "boxes": boxes,
        "classes": result.boxes.cls.cpu().numpy().astype(np.int64),
        "scores": result.boxes.conf.cpu().numpy().astype(np.float64),
        "parent_ids": find_parent_nodes(boxes, tol),
    }


def predict_relations(
    model: YOLO,
    source: Any,
    save_dir: str | Path | None = None,
    conf: float = 0.25,
    imgsz: int = 640,
    tol: float = 0.9,
) -> list[dict[str, Any]]:
    """Detect boxes and infer each one's parent, optionally saving annotated images.

    Args:
        model (YOLO): an Ultralytics detector.
        source (Any): anything ``model.predict`` accepts (file, folder, glob, array, list); unreadable files
            are skipped by Ultralytics with a warning.
        save_dir (str | Path | None): when given, one annotated image per input (boxes, class and score,
            child->parent arrows) is written there under the input's file name.
        conf (float): detection confidence threshold.
        imgsz (int): inference size.
        tol (float): containment tolerance for ``find_parent_nodes``.

    Returns:
        (list[dict[str, Any]]): per image ``path`` (str), ``boxes`` ``(N, 4)`` xyxy pixels, ``classes`` ``(N,)``,
            ``scores`` ``(N,)``, ``parent_ids`` (list of N ints, -1 for none).
    """
    out_dir = Path(save_dir) if save_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    records = []
    for result in model.predict(source, conf=conf, imgsz=imgsz, stream=True, verbose=False, save=False):
        record = _detections(result, tol)
        records.append(record)
        if out_dir is None:
            continue
        labels = [f"{result.names[int(c)]} {s:.2f}" for c, s in zip(record["classes"], record["scores"])]
        image = visualize_nodes(result.orig_img, record["boxes"], record["parent_ids"], labels)
        name = Path(record["path"]).name or "image.png"
        if Path(name).suffix.lower().lstrip(".") not in IMG_FORMATS:
            name += ".png"  # arrays and streams have no usable file name
        if name in used:
            name = f"{len(records) - 1:05d}_{name}"
        used.add(name)
        cv2.imwrite(str(out_dir / name), image)
    return records


def split_dirs(data: str | Path, split: str = "val") -> tuple[Path, Path]:
    """Image and parent-label folders of a split, from a data yaml or a dataset root folder.

    The label folder replaces the last ``images`` component of the image folder by ``parents``, as Ultralytics
    does with ``labels``.

    Raises:
        CompressError: the yaml lacks the split, the split is not a single folder, or there is no ``parents``
            folder for it.
    """
    data = Path(data).expanduser()
    if data.is_dir():
        images = data / "images" / split
    elif data.is_file():
        spec = yaml.safe_load(data.read_text(encoding="utf-8-sig")) or {}
        if not isinstance(spec, dict) or not isinstance(spec.get(split), str):
            raise CompressError(f"{data}: key {split!r} must name one image folder (e.g. 'images/{split}')")
        images = Path(resolve_data(data).splits[split][0])
    else:
        raise CompressError(f"{data} not found; pass a data yaml or a dataset folder holding images/{split}")
    if not images.is_dir():
        raise CompressError(f"image folder {images} not found; check the {split!r} entry or the dataset path")
    parts = images.parts
    if "images" not in parts:
        raise CompressError(f"{images} has no 'images' component, so parents/ cannot be located next to it")
    k = len(parts) - 1 - parts[::-1].index("images")
    parents = Path(*parts[:k], "parents", *parts[k + 1 :])
    if not parents.is_dir():
        raise CompressError(
            f"no parent labels at {parents}; write one 'class x y w h px py pw ph p' file per image there "
            "(see yolo_compress.data.diagram) or generate a dataset with make_diagram_dataset"
        )
    return images, parents


def _ground_truth(label: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes, normalised boxes and parent ids of one image; none when it has no label file (background)."""
    if label.is_file():
        return read_parent_labels(label)
    return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64)


def evaluate_relations(
    model: YOLO,
    data: str | Path,
    split: str = "val",
    iou: float = 0.5,
    imgsz: int = 640,
    conf: float = 0.25,
    tol: float = 0.9,
) -> dict[str, float]:
    """Micro-averaged parent-relation precision, recall and F1 of ``model`` over one split.

    Per image, predicted boxes get parents from ``find_parent_nodes`` and are matched class-aware to the GT
    boxes (``relation_metrics``); TP and relation counts are summed over the split before dividing. An image
    without a parent-label file is background (no GT boxes), as in Ultralytics.

    Args:
        model (YOLO): an Ultralytics detector.
        data (str | Path): data yaml, or a dataset root holding ``images/<split>`` and ``parents/<split>``.
        split (str): which split to walk.
        iou (float): box-match IoU threshold.
        imgsz (int): inference size.
        conf (float): detection confidence threshold.
        tol (float): containment tolerance for inferring predicted parents.

    Returns:
        (dict[str, float]): ``precision, recall, f1, tp, n_pred, n_gt, images`` (evaluated) and ``skipped``
            (unreadable images, each logged as a warning).

    Raises:
        CompressError: a bad dataset layout, a split with no readable image, or a parent-label line with the
            wrong field count or a parent id out of range (the message names file and line).
    """
    images_dir, parents_dir = split_dirs(data, split)
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower().lstrip(".") in IMG_FORMATS)
    if not files:
        raise CompressError(f"no images in {images_dir}; check the {split!r} entry of {data}")
    tp = n_pred = n_gt = images = skipped = 0
    for path in files:
        gt_classes, gt_boxes, gt_parents = _ground_truth(parents_dir / path.relative_to(images_dir).with_suffix(".txt"))
        image = imread(path)
        if image is None:
            LOGGER.warning("skipping unreadable image %s", path)
            skipped += 1
            continue
        h, w = image.shape[:2]
        pred = _detections(model.predict(image, conf=conf, imgsz=imgsz, verbose=False, save=False)[0], tol)
        m = relation_metrics(gt_boxes * [w, h, w, h], pred["boxes"], gt_parents, pred["parent_ids"], iou,
                             gt_classes=gt_classes, pred_classes=pred["classes"])
        tp, n_pred, n_gt, images = tp + m["tp"], n_pred + m["n_pred"], n_gt + m["n_gt"], images + 1
    if images == 0:
        raise CompressError(f"none of the {len(files)} images in {images_dir} could be read; check the files")
    return {**prf(tp, n_pred, n_gt), "tp": tp, "n_pred": n_pred, "n_gt": n_gt, "images": images, "skipped": skipped}
