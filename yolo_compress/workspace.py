"""The model being compressed, its data and image size: what ``PruneModel`` and the pipeline both start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from yolo_compress.checkpoint import load_model
from yolo_compress.dataset import Dataset, resolve_data
from yolo_compress.models import build_from_yaml, task_of, yaml_task
from yolo_compress.preflight import check_imgsz
from yolo_compress.training import check_classes


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
        (``None``: the built-in set of the model's task); ``imgsz`` ``None`` takes the dataset's.

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
        dataset = resolve_data(data, task_of(model))
        check_classes(model, dataset, f"{flag} {source}")
        return cls(model, dataset, check_imgsz(imgsz or dataset.imgsz), Path(source))

    @property
    def task(self) -> str:
        return self.data.task
