"""Built-in synthetic datasets, generated on demand under ``data/`` (git-ignored), installed as ``yolo_compress.data``.

* ``shapes`` (detection): filled shapes on cluttered backgrounds, the default demo and benchmark data.
* ``diagram`` (detection + parent labels): nested boxes, for the relations feature.
"""

from __future__ import annotations

from pathlib import Path

from yolo_compress.data.diagram import make_diagram_dataset
from yolo_compress.data.synthetic import ensure_shapes_dataset, make_shapes_dataset

GENERATORS = {"shapes": make_shapes_dataset, "diagram": make_diagram_dataset}


def ensure_builtin(task: str) -> Path:
    """The built-in dataset of ``task`` (a data yaml or an ImageFolder root), generated when missing."""
    return ensure_shapes_dataset()
