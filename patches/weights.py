"""Checkpoints are read from exactly the path given: no renaming, no asset download, no network.

``ultralytics.nn.tasks.torch_safe_load`` passes every ``.pt`` path through
``ultralytics.utils.downloads.attempt_download_asset``, which drops ``'`` from the name, renames YOLOv5 names
(``check_yolov5u_filename``), looks in the weights folder and otherwise downloads from GitHub: a user's
``o'brien/best.pt`` was read as ``obrien/best.pt`` (unpickling another file) after DNS look-ups. yolo-compress
replaces ``attempt_download_asset`` process-wide (``patches.runtime.apply``) by :func:`local_file`, which returns
the path unchanged when it is a file and raises ``ConnectionError`` otherwise (the error Ultralytics' offline
callers, e.g. ``check_amp``, already handle).

Checked against Ultralytics 8.4.190.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def local_file(file: str | Path, *args: Any, **kwargs: Any) -> str:
    """Stands in for ``attempt_download_asset``: ``file`` itself when it exists.

    Raises:
        ConnectionError: ``file`` is not a local file (yolo-compress never downloads weights).
    """
    if Path(file).is_file():
        return str(file)
    raise ConnectionError(f"{file} is not a local file; yolo-compress never downloads weights, pass a file path")


def exact_weight_paths() -> None:
    """Install :func:`local_file` in place of Ultralytics' asset download."""
    from ultralytics.utils import downloads

    downloads.attempt_download_asset = local_file
