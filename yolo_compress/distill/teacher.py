"""The teacher of a distillation: found, loaded, checked against the data and frozen, once per file.

Detection teachers are Ultralytics checkpoints; classification teachers may also be whole torchvision modules or
TorchScript (``distill.classifier``). The stage checks the teacher before any training and the trainer uses it:
both get the same loaded module (cached by file path, size and modification time), so it is unpickled once.
"""

from __future__ import annotations

import functools
from pathlib import Path

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
        raise CompressError(f"teacher {path} is a {task_of(model)} model; a detector needs a detection teacher")
    check_class_count(model, nc, f"teacher {path}", "use a teacher trained on this dataset")
    if settings.feature:
        hooked_layer_names(model, settings.distill_layers)
    return freeze_(model)
