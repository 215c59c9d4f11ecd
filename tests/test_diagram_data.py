"""The diagram dataset is deterministic, its parent labels are consistent, and the reader rejects bad lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from yolo_compress.data.diagram import NAMES, make_diagram_dataset, read_parent_labels
from yolo_compress.errors import CompressError
from yolo_compress.relations import find_parent_nodes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_diagram_dataset(tmp_path_factory.mktemp("d") / "diagram", n_train=4, n_val=2, imgsz=96, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_yaml(dataset):
    spec = yaml.safe_load(dataset.read_text())
    root = Path(spec["path"])
    assert root.is_absolute() and root == dataset.parent
    assert spec["names"] == dict(enumerate(NAMES)) and spec["val"] == "images/val"
    for split, n in (("train", 4), ("val", 2)):
        stems = sorted(p.stem for p in (root / "images" / split).glob("*.png"))
        assert len(stems) == n
        assert stems == sorted(p.stem for p in (root / "labels" / split).glob("*.txt"))
        assert stems == sorted(p.stem for p in (root / "parents" / split).glob("*.txt"))


def test_deterministic_and_prefix_stable(dataset, tmp_path):
    again = make_diagram_dataset(tmp_path / "again", n_train=4, n_val=2, imgsz=96, seed=3)
    a, b = _files(dataset.parent), _files(again.parent)
    a.pop("data.yaml"), b.pop("data.yaml")  # differs only in the absolute path
    assert a == b
    fewer = _files(make_diagram_dataset(tmp_path / "fewer", n_train=2, n_val=1, imgsz=96, seed=3).parent)
    assert all(fewer[k] == a[k] for k in fewer if k != "data.yaml")  # image i depends on (seed, split, i) only
    other = _files(make_diagram_dataset(tmp_path / "other", n_train=4, n_val=2, imgsz=96, seed=4).parent)
    assert other["images/train/train_00000.png"] != a["images/train/train_00000.png"]


def test_parent_labels_are_consistent(dataset):
    root, seen = dataset.parent, set()
    for path in sorted((root / "parents").rglob("*.txt")):
        classes, boxes, parents = read_parent_labels(path)
        assert len(classes) > 0
        yolo = np.loadtxt(root / "labels" / path.parent.name / path.name, ndmin=2)
        xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)
        np.testing.assert_allclose(yolo[:, 0], classes)
        np.testing.assert_allclose(yolo[:, 1:], xywh, atol=1e-6)
        for i, p in enumerate(parents):
            if p >= 0:
                assert (boxes[p, :2] < boxes[i, :2]).all() and (boxes[p, 2:] > boxes[i, 2:]).all()
                assert classes[p] != NAMES.index("label")  # labels hold nothing
            seen.add((int(classes[i]), int(p >= 0)))
        assert find_parent_nodes(boxes * 96, tol=1.0) == parents.tolist()
    assert len(seen) >= 4  # several classes, with and without parents


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.txt"
    path.write_text(text)
    return path


ROOT = "0 0.5 0.5 0.8 0.8 0 0 0 0 -1"
CHILD = "1 0.5 0.5 0.2 0.2 0.5 0.5 0.8 0.8 0"


def test_reader_values_and_blank_lines(tmp_path):
    classes, boxes, parents = read_parent_labels(_write(tmp_path, f"{ROOT}\n\n{CHILD}\n"))
    assert classes.tolist() == [0, 1] and parents.tolist() == [-1, 0]
    np.testing.assert_allclose(boxes, [[0.1, 0.1, 0.9, 0.9], [0.4, 0.4, 0.6, 0.6]])
    classes, boxes, parents = read_parent_labels(_write(tmp_path, ""))
    assert classes.shape == (0,) and boxes.shape == (0, 4) and parents.shape == (0,)


@pytest.mark.parametrize(
    "text, lineno, match",
    [
        (f"{ROOT}\n0 0.5 0.5 0.2 0.2 0", 2, "expected 10 fields"),
        (f"{ROOT}\n{CHILD[:-1]}2", 2, "parent id 2 is out of range"),
        (f"{ROOT}\n{CHILD[:-1]}1", 2, "parent id 1 is out of range"),  # its own index
        (f"{ROOT[:-2]}-2", 1, "parent id -2"),
        (f"{ROOT}\n\n1 0.5 0.5 0.2 0.2 0.5 0.5 0.7 0.8 0", 3, "differs from the box of parent 0"),
        (f"{ROOT}\n1 0.5 0.5 a 0.2 0.5 0.5 0.8 0.8 0", 2, "non-numeric"),
        (f"{ROOT}\n{CHILD[:-1]}0.5", 2, "integers"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path, text, lineno, match):
    path = _write(tmp_path, text)
    with pytest.raises(CompressError, match=match) as info:
        read_parent_labels(path)
    assert f"{path}:{lineno}:" in str(info.value)
