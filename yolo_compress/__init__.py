"""yolo-compress: sparse training, channel pruning, fine-tuning and distillation for Ultralytics YOLOv8.

Importing the package changes nothing in the process. The offline-safe runtime settings
(``yolo_compress.patches.runtime``: offline Ultralytics, no auto-install, a local font, all CPU cores) are applied
when work starts: by the command line, ``PruneModel`` and ``CompressionPipeline``. Set ``YOLO_COMPRESS_RUNTIME=0``
to keep your own. ``PruneModel`` is imported on first access.
"""

from yolo_compress.errors import CompressError

__all__ = ["CompressError", "PruneModel"]
__version__ = "0.13.4"


def __getattr__(name: str):
    if name == "PruneModel":
        from yolo_compress.api import PruneModel

        return PruneModel
    raise AttributeError(f"module 'yolo_compress' has no attribute {name!r}")
