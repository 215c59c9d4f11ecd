"""The model being compressed, its data and image size: what ``PruneModel`` and the pipeline both start from."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from yolo_compress.checkpoint import load_model, train_args_of
from yolo_compress.data import BUILTIN_CLASSES
from yolo_compress.dataset import Dataset, resolve_data
from yolo_compress.models import build_from_yaml, check_class_count, task_of, yaml_task
from yolo_compress.preflight import check_imgsz
from yolo_compress.training import check_classes

LOGGER = logging.getLogger(__name__)


@dataclass
class Workspace:
    """A network with the dataset it is compressed on and the image size of every stage.

    Attributes:
        model: the current network (a ``.pt``'s, or a seeded one built from a model yaml).
        data: the checked dataset of the model's task.
        imgsz: image size of every stage and measurement.
        weights: the file ``model`` was last loaded from or saved to (``None``: built from a yaml, not saved).
    """

    model: nn.Module
    data: Dataset
    imgsz: int
    weights: Path | None = None

    @classmethod
    def open(cls, source: str | Path, data: str | Path | None = None, imgsz: int | None = None, seed: int = 0,
             flag: str = "weights") -> Workspace:
        """The model of ``source`` (a ``.pt``, or a model yaml built with the data's classes) and its checked data
        (``None``: the one a checkpoint was trained on when it is here, as in Ultralytics, else the built-in set of
        the model's task, never generated for a model of another class count); ``imgsz`` ``None``: the checkpoint's
        training size with its own data, else the dataset's.

        Raises:
            CompressError: a bad image size, checkpoint or dataset, or classes that do not match (``flag`` names
                the input in the message).
        """
        if imgsz is not None:
            check_imgsz(imgsz)  # before anything loads
        text = str(source)
        if text.endswith((".yaml", ".yml")):
            dataset = resolve_data(data, yaml_task(text))
            return cls(build_from_yaml(text, dataset, seed=seed), dataset, check_imgsz(imgsz or dataset.imgsz))
        model = load_model(source, flag)
        if data is None:
            data, trained_imgsz = checkpoint_defaults(model, f"{flag} {source}")
            imgsz = imgsz or trained_imgsz
        dataset = resolve_data(data, task_of(model))
        check_classes(model, dataset, f"{flag} {source}")
        return cls(model, dataset, check_imgsz(imgsz or dataset.imgsz), Path(source))

    @property
    def task(self) -> str:
        return self.data.task


def checkpoint_defaults(model: nn.Module, what: str) -> tuple[Path | None, int | None]:
    """Data and image size for a checkpoint given neither: those it was trained on when that data is on this machine
    (what Ultralytics' ``YOLO(path).val()`` uses); else ``(None, None)``, the built-in set of its task, once the
    model is known to fit it (nothing is generated for a model of another class count)."""
    args = train_args_of(model)
    data, imgsz = args.get("data"), args.get("imgsz")
    if not (isinstance(data, str) and data and Path(data).expanduser().exists()):
        check_class_count(model, len(BUILTIN_CLASSES[task_of(model)]), what,
                          f"it {f'was trained on {data}, which is not here' if data else 'names no dataset'}; "
                          "pass --data (data=) with the dataset it was trained on")
        return None, None
    imgsz = imgsz if isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz > 0 else None
    LOGGER.info("%s: the data it was trained on, %s, at %s px (--data / --imgsz choose others)", what, data, imgsz)
    return Path(data).expanduser(), imgsz
