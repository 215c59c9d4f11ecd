"""The teacher of a distillation: found, loaded, checked against the data and frozen, once per file.

Detection teachers are Ultralytics checkpoints; classification teachers may also be whole torchvision modules or
TorchScript (``distill.classifier``). A :class:`Teacher` (the checked file and the distillation settings) is built
once, before any training, and handed to every stage that learns from it; the trainer loads the same module
(cached by file path, size and modification time), so it is unpickled once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.distill.settings import DistillSettings
from yolo_compress.errors import CompressError
from yolo_compress.models import check_class_count, freeze_, task_of


def check_teacher_path(teacher: str | Path | None) -> Path:
    """The teacher's file, resolved.

    Raises:
        CompressError: no teacher given, or its file does not exist.
    """
    if not teacher:
        raise CompressError("distillation needs a teacher: pass teacher='path/to/teacher.pt' (--teacher)")
    path = Path(teacher).expanduser()
    if not path.is_file():
        raise CompressError(f"teacher checkpoint not found: {path}; pass the .pt file of a trained model")
    return path.resolve()


def load_teacher(teacher: str | Path, task: str, nc: int, settings: DistillSettings, imgsz: int) -> nn.Module:
    """The frozen teacher of ``task`` (on CPU; the trainer moves it), checked against ``nc`` classes and, for
    feature losses, the distilled layers.

    Raises:
        CompressError: a missing file, a model of another task or class count, a layer without ``cv2``, or (for
            classifiers) a module that cannot take the student's batch.
    """
    path = check_teacher_path(teacher)
    stat = path.stat()
    return _load(path, stat.st_size, stat.st_mtime_ns, task, nc, settings.for_task(task), imgsz)


@functools.lru_cache(maxsize=2)
def _load(path: Path, size: int, mtime_ns: int, task: str, nc: int, settings: DistillSettings,
          imgsz: int) -> nn.Module:
    if task == "classify":
        from yolo_compress.distill.classifier import load_classifier_teacher

        return load_classifier_teacher(path, nc, imgsz, settings.teacher_input, settings.teacher_imgsz)
    from yolo_compress.checkpoint import load_model
    from yolo_compress.distill.distiller import hooked_layer_names

    model = load_model(path, what="teacher")
    if task_of(model) != task:
        raise CompressError(f"teacher {path} is a {task_of(model)} model; a {task} student needs a {task} teacher")
    check_class_count(model, nc, f"teacher {path}", "use a teacher trained on this dataset")
    if settings.feature:
        hooked_layer_names(model, settings.distill_layers)
    return freeze_(model)


@dataclass(frozen=True)
class Teacher:
    """What a student learns from: the teacher's file and the distillation settings, checked once.

    Attributes:
        path: the teacher checkpoint (or, for classifiers, a pickled module or TorchScript), resolved.
        settings: the distillation losses and their weights.
    """

    path: Path
    settings: DistillSettings

    @classmethod
    def checked(cls, teacher: str | Path | None, task: str, nc: int, settings: DistillSettings,
                imgsz: int) -> Teacher:
        """The teacher, loaded once and checked against the data (task, classes) and the distilled layers.

        Raises:
            CompressError: see :func:`load_teacher`.
        """
        load_teacher(teacher, task, nc, settings, imgsz)
        return cls(check_teacher_path(teacher), settings)

    def trainer_args(self) -> dict[str, Any]:
        """The trainer keys that switch its distillation plug-in on (``patches.distill``)."""
        return {**self.settings.to_dict(), "teacher": str(self.path)}
