"""Built-in synthetic datasets, generated on demand under ``data/`` (git-ignored), installed as ``yolo_compress.data``.

* ``shapes`` (detection): filled shapes on cluttered backgrounds, the default demo and benchmark data.
* ``clutter`` (detection): ten look-alike classes, small overlapping objects among clutter: where capacity matters.
* ``diagram`` (detection + parent labels): nested boxes, for the relations feature.
* ``classify`` (ImageFolder): which of six shapes is the large one, for classifiers.
* ``segment``, ``pose``, ``obb``: shapes with exact polygon masks, corner keypoints, rotated boxes (``tasks.py``).
"""

from __future__ import annotations

from pathlib import Path

from yolo_compress.data.classify import CLASSES as CLASSIFY_CLASSES
from yolo_compress.data.classify import ensure_classify_dataset, make_classify_dataset
from yolo_compress.data.clutter import make_clutter_dataset
from yolo_compress.data.diagram import make_diagram_dataset
from yolo_compress.data.synthetic import SHAPES, ensure_dataset, ensure_shapes_dataset, make_shapes_dataset
from yolo_compress.data.tasks import (
    OBB_CLASSES,
    POSE_CLASSES,
    SEGMENT_CLASSES,
    make_obb_dataset,
    make_pose_dataset,
    make_segment_dataset,
)

GENERATORS = {"shapes": make_shapes_dataset, "clutter": make_clutter_dataset, "diagram": make_diagram_dataset,
              "classify": make_classify_dataset, "segment": make_segment_dataset, "pose": make_pose_dataset,
              "obb": make_obb_dataset}
# the class names of each task's built-in set, known before it is generated (a model of another class count is refused
# without writing anything)
BUILTIN_CLASSES = {"detect": SHAPES, "classify": CLASSIFY_CLASSES, "segment": SEGMENT_CLASSES, "pose": POSE_CLASSES,
                   "obb": OBB_CLASSES}
# a YOLOv8n trained on the built-in shapes set until its mAP stopped rising (the README gives the command), shipped
# so the demo spends its minutes on compression; present in a source checkout
SHIPPED_BASELINE = Path(__file__).resolve().parents[1] / "weights" / "shapes-yolov8n.pt"


def ensure_builtin(task: str) -> Path:
    """The built-in dataset of ``task`` (a data yaml or an ImageFolder root), generated when missing."""
    if task == "classify":
        return ensure_classify_dataset()
    if task == "detect":
        return ensure_shapes_dataset()
    return ensure_dataset(Path("data") / task, GENERATORS[task])
