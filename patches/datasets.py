"""Ultralytics' own dataset rules, called the way yolo-compress needs them: no download, no image rewritten.

yolo-compress checks a dataset before training so bad input fails in one line; the check must accept exactly what
Ultralytics' trainer accepts. So it does not re-implement Ultralytics' rules, it calls them:

* :func:`read_det_yaml`: ``ultralytics.data.utils.check_det_dataset`` with ``autodownload=False`` (a yaml whose
  ``val`` is missing raises instead of running the yaml's ``download:`` script or URL).
* :func:`image_files`: ``ultralytics.data.base.BaseDataset.get_img_files`` (folders searched recursively, ``.txt``
  lists whose ``./`` lines are relative to the list and other relative lines to the current folder).
* :func:`verify_labels`: ``ultralytics.data.utils.verify_image_label`` per image, as ``YOLODataset.cache_labels``
  runs it (UTF-8 BOM labels, polygon rows, 1% coordinate tolerance, duplicates...).
* :func:`keep_images_unchanged`: ``ultralytics.data.utils.check_image`` rewrites a JPEG that lacks its end marker
  in place ("corrupt JPEG restored and saved"): the user's file changes and every dataset fingerprint with it.
  ``ultralytics.data.utils._replace_image`` is replaced by a function that leaves the file as it is (OpenCV reads
  such JPEGs fine) and ``check_image``'s message says so; process-wide, from ``patches.runtime.apply`` and the
  trainers' import (so DDP workers get it too).

Checked against Ultralytics 8.4.190.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from multiprocessing.pool import ThreadPool
from pathlib import Path
from types import SimpleNamespace
from typing import Any

LOGGER = logging.getLogger(__name__)


def read_det_yaml(path: Path) -> dict[str, Any]:
    """The data dict Ultralytics' trainer builds from ``path`` (absolute split paths, names as a dict), without ever
    downloading: a missing ``val`` raises ``FileNotFoundError``."""
    from ultralytics.data.utils import check_det_dataset

    return check_det_dataset(str(path), autodownload=False)


def image_files(entries: Iterable[str | Path]) -> list[Path]:
    """The image files Ultralytics' dataset reads from split ``entries`` (folders, image lists), sorted.

    Raises:
        FileNotFoundError: an entry that does not exist, or no image at all (Ultralytics' own message).
    """
    from ultralytics.data.base import BaseDataset

    reader = SimpleNamespace(prefix="", fraction=1.0)  # the two attributes get_img_files reads from its dataset
    return [Path(f) for f in BaseDataset.get_img_files(reader, [str(e) for e in entries])]


def label_files(images: list[Path]) -> list[Path]:
    """Ultralytics' ``img2label_paths``: the last ``images`` folder becomes ``labels``, the suffix ``.txt``."""
    from ultralytics.data.utils import img2label_paths

    return [Path(p) for p in img2label_paths([str(i) for i in images])]


def verify_labels(images: list[Path], data: dict[str, Any], keypoints: bool = False) -> list[tuple[bool, str]]:
    """``(kept, message)`` per image, as Ultralytics' label scan decides it (``kept``: not counted corrupt)."""
    from ultralytics.data.utils import verify_image_label
    from ultralytics.utils import NUM_THREADS

    nkpt, ndim = data.get("kpt_shape", (0, 0))
    nc = data.get("bg_class_idx") or len(data["names"])
    args = [(str(i), str(lb), "", keypoints, nc, nkpt, ndim, False) for i, lb in zip(images, label_files(images))]
    with ThreadPool(NUM_THREADS) as pool:
        return [(r[8] == 0, r[9]) for r in pool.imap(verify_image_label, args)]


def _leave_image(im_file: str | Path, write: Any) -> None:
    """Stands in for ``ultralytics.data.utils._replace_image``: the user's image is never rewritten."""
    LOGGER.debug("%s lacks its JPEG end marker; read as it is, not rewritten", im_file)


def keep_images_unchanged() -> None:
    """Stop Ultralytics' label scan from rewriting JPEGs in the dataset (see the module docstring); idempotent."""
    from ultralytics.data import utils

    if utils._replace_image is _leave_image:
        return
    upstream = utils.check_image

    def check_image(im_file: str) -> tuple[str, tuple[int, int]]:
        msg, shape = upstream(im_file)
        return msg.replace("corrupt JPEG restored and saved", "JPEG lacks its end marker, read as it is"), shape

    utils._replace_image, utils.check_image = _leave_image, check_image
