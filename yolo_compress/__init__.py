"""yolo-compress: sparse training, channel pruning, fine-tuning and distillation for Ultralytics YOLOv8.

Importing the package applies the offline-safe runtime settings of ``yolo_compress.patches.runtime`` before
Ultralytics is imported anywhere else in it.
"""

from yolo_compress.patches import runtime as _runtime

_runtime.apply()

from yolo_compress.api import PruneModel  # noqa: E402
from yolo_compress.errors import CompressError  # noqa: E402

__all__ = ["CompressError", "PruneModel"]
__version__ = "0.1.0"
