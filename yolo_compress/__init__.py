"""yolo-compress: sparse training, channel pruning, fine-tuning and distillation for Ultralytics YOLOv8.

Importing the package applies the offline-safe runtime settings of ``yolo_compress.patches.runtime`` (which
imports Ultralytics) before anything else uses Ultralytics. ``PruneModel`` is imported on first access.
"""

from yolo_compress.errors import CompressError
from yolo_compress.patches import runtime as _runtime

_runtime.apply()

__all__ = ["CompressError", "PruneModel"]
__version__ = "0.2.0"


def __getattr__(name: str):
    if name == "PruneModel":
        from yolo_compress.api import PruneModel

        return PruneModel
    raise AttributeError(f"module 'yolo_compress' has no attribute {name!r}")
