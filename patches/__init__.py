"""The one seam where yolo-compress changes Ultralytics' behaviour: trainer subclasses and runtime settings; and
torch-pruning's, for the time a pruner runs (``pruning.cached_index_mapping``).

Nothing here edits site-packages. ``runtime.apply()`` runs when yolo-compress starts work (never at import).
"""

from yolo_compress.patches.runtime import CHECKED_ULTRALYTICS, apply, check_version

__all__ = ["CHECKED_ULTRALYTICS", "apply", "check_version"]
