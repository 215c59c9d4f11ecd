"""``predict_relations`` / ``evaluate_relations``: values with a ground-truth oracle, mechanics with a real YOLO."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from ultralytics import YOLO
from ultralytics.engine.results import Results
from ultralytics.utils.patches import imread

from yolo_compress.data.diagram import NAMES, make_diagram_dataset, read_parent_labels
from yolo_compress.errors import CompressError
from yolo_compress.relations import evaluate_relations, predict_relations
from yolo_compress.relations.infer import LINK_COLOUR, PALETTE

KEYS = {"precision", "recall", "f1", "tp", "n_pred", "n_gt", "images", "skipped"}


class FakeModel:
    """Stands in for ``YOLO``: ``detect(image) -> (boxes_xyxy_px, classes)`` decides what it 'sees'."""

    def __init__(self, detect):
        self.detect = detect

    def predict(self, source, stream=False, **kwargs):
        items = [("image0.png", source)] if isinstance(source, np.ndarray) else [(str(source), imread(source))]
        out = []
        for path, image in items:
            boxes, classes = self.detect(image)
            data = np.concatenate([boxes, np.full((len(boxes), 1), 0.9), np.reshape(classes, (-1, 1))], axis=1)
            out.append(Results(image, path, dict(enumerate(NAMES)), boxes=torch.as_tensor(data, dtype=torch.float32)))
        return iter(out) if stream else out


def oracle(root: Path, split: str = "val", drop_class: int | None = None) -> FakeModel:
    """A model that returns the ground truth of each dataset image, optionally missing one class."""
    table = {}
    for path in (root / "images" / split).glob("*.png"):
        image = imread(path)
        classes, boxes, _ = read_parent_labels(root / "parents" / split / f"{path.stem}.txt")
        keep = classes != drop_class
        table[image.tobytes()] = (boxes[keep] * 64, classes[keep])
    return FakeModel(lambda image: table[image.tobytes()])


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_diagram_dataset(tmp_path / "diagram", n_train=1, n_val=3, imgsz=64, seed=0)


@pytest.fixture(scope="module")
def yolo() -> YOLO:
    torch.manual_seed(0)
    return YOLO("yolov8n.yaml")


def gt_relation_count(root: Path, split: str = "val") -> tuple[int, int]:
    """(relations, relations whose child is a label) over a split's parent files."""
    total = labels = 0
    for path in (root / "parents" / split).glob("*.txt"):
        classes, _, parents = read_parent_labels(path)
        total += int((parents >= 0).sum())
        labels += int(((parents >= 0) & (classes == NAMES.index("label"))).sum())
    return total, labels


def test_oracle_scores_perfectly(dataset):
    root = dataset.parent
    n_gt, _ = gt_relation_count(root)
    result = evaluate_relations(oracle(root), dataset, imgsz=64)
    assert set(result) == KEYS
    assert (result["tp"], result["n_pred"], result["n_gt"], result["f1"]) == (n_gt, n_gt, n_gt, 1.0)
    assert (result["images"], result["skipped"]) == (3, 0)
    assert evaluate_relations(oracle(root), root, imgsz=64) == result  # a dataset folder works like its yaml


def test_missing_class_lowers_recall_only(dataset):
    root = dataset.parent
    n_gt, n_label = gt_relation_count(root)
    assert n_label > 0
    result = evaluate_relations(oracle(root, drop_class=NAMES.index("label")), dataset, imgsz=64)
    assert (result["tp"], result["n_pred"], result["n_gt"]) == (n_gt - n_label, n_gt - n_label, n_gt)
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx((n_gt - n_label) / n_gt)


def test_real_model_skips_unreadable_image(dataset, yolo, caplog):
    root = dataset.parent
    (root / "images" / "val" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="yolo_compress.relations.evaluate"):
        result = evaluate_relations(yolo, dataset, imgsz=64)
    assert set(result) == KEYS
    assert (result["images"], result["skipped"], result["n_gt"]) == (3, 1, gt_relation_count(root)[0])
    assert "broken.png" in caplog.text


def test_bad_label_line_names_file_and_line(dataset, yolo):
    label = dataset.parent / "parents" / "val" / "val_00001.txt"
    lines = label.read_text().splitlines()
    label.write_text("\n".join([*lines, lines[-1].rsplit(" ", 1)[0] + f" {len(lines) + 5}"]) + "\n")
    with pytest.raises(CompressError, match=rf"val_00001.txt:{len(lines) + 1}: parent id"):
        evaluate_relations(yolo, dataset, imgsz=64)
    label.write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(CompressError, match="val_00001.txt:1: expected 10 fields"):
        evaluate_relations(yolo, dataset, imgsz=64)


def test_missing_parents_folder(dataset, yolo):
    shutil.rmtree(dataset.parent / "parents")
    with pytest.raises(CompressError, match="no parent labels"):
        evaluate_relations(yolo, dataset, imgsz=64)


def test_predict_real_model_writes_visualisations(dataset, yolo, tmp_path):
    records = predict_relations(yolo, dataset.parent / "images" / "val", save_dir=tmp_path / "vis", imgsz=64)
    assert [Path(r["path"]).name for r in records] == ["val_00000.png", "val_00001.png", "val_00002.png"]
    for r in records:
        assert set(r) == {"path", "boxes", "classes", "scores", "parent_ids"}
        assert r["boxes"].shape == (len(r["classes"]), 4) and len(r["parent_ids"]) == len(r["scores"])
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == [Path(r["path"]).name for r in records]


def test_predict_draws_boxes_and_links(tmp_path):
    source = tmp_path / "blank.png"
    cv2.imwrite(str(source), np.zeros((96, 96, 3), np.uint8))
    model = FakeModel(lambda image: (np.array([[4, 4, 90, 90], [30, 40, 70, 80]], float), [0, 1]))
    (record,) = predict_relations(model, source, save_dir=tmp_path / "vis")
    assert record["parent_ids"] == [-1, 0]
    drawn = cv2.imread(str(tmp_path / "vis" / "blank.png"))
    assert tuple(drawn[90, 47]) == PALETTE[0]  # container's bottom edge
    assert tuple(drawn[80, 50]) == PALETTE[1]  # node's bottom edge
    assert tuple(drawn[22, 17]) == LINK_COLOUR  # midway along the arrow (30, 40) -> (4, 4)
    assert drawn[60, 50].sum() == 0  # inside the node, nothing drawn
