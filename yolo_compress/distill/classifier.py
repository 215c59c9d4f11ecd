"""Logit distillation for classifiers: any classifier checkpoint as a frozen teacher, seen through the student's
batches. Ultralytics classifiers, whole torchvision modules and TorchScript files are accepted."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from yolo_compress.errors import CompressError
from yolo_compress.models import freeze_

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassifierTeacher(nn.Module):
    """A frozen classifier that returns class logits for the student's preprocessed batch.

    Ultralytics feeds classifiers RGB images in [0, 1] at the student's size. A teacher trained otherwise gets its
    own view: ``input="imagenet"`` normalises with torchvision's ImageNet mean/std, ``imgsz`` resizes (bilinear).
    Ultralytics classifiers answer ``(probabilities, logits)`` in eval mode; the logits are taken.

    Args:
        model (nn.Module): the teacher network (any module mapping (N, 3, H, W) to (N, C) logits).
        input (str): ``"same"`` or ``"imagenet"``.
        imgsz (int | None): the teacher's input size, ``None`` for the student's.
    """

    def __init__(self, model: nn.Module, input: str = "same", imgsz: int | None = None) -> None:
        super().__init__()
        self.model = freeze_(model)
        self.imagenet = input == "imagenet"
        self.imgsz = imgsz
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> ClassifierTeacher:
        super().train(mode)
        self.model.eval()  # frozen BatchNorm statistics, no dropout
        return self

    @torch.no_grad()
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float()
        if self.imgsz is not None and x.shape[-1] != self.imgsz:
            x = F.interpolate(x, size=(self.imgsz, self.imgsz), mode="bilinear", align_corners=False)
        if self.imagenet:
            x = (x - self.mean) / self.std
        out = self.model(x)
        return (out[1] if isinstance(out, (tuple, list)) else out).float()


def load_classifier(path: str | Path) -> nn.Module:
    """The network in ``path``: an Ultralytics classification checkpoint, a whole pickled module, or TorchScript.

    Loading a pickled module runs code from the file, as any ``torch.load`` of a module does: pass files you trust.

    Raises:
        CompressError: a detection model, a bare ``state_dict``, or a file that is none of these.
    """
    from yolo_compress.checkpoint import load_model
    from yolo_compress.models import task_of

    path = Path(path)
    if not path.is_file():
        raise CompressError(f"teacher checkpoint not found: {path}; pass the .pt file of a trained classifier")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError):
        pass  # not TorchScript
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # pickle raises many types for a file that is not one
        raise CompressError(f"teacher {path} is not a checkpoint, a saved module or TorchScript "
                            f"({type(e).__name__})") from e
    if isinstance(obj, dict) and ("model" in obj or "ema" in obj):  # an Ultralytics checkpoint
        model = load_model(path, what="teacher")
        if task_of(model) != "classify":
            raise CompressError(f"teacher {path} is a {task_of(model)} model; a classifier needs a classification "
                                "teacher")
        return model
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CompressError(f"teacher {path} is a state_dict, which holds no architecture; save the whole module "
                            "(torch.save(model, path)) or TorchScript (torch.jit.script(model).save(path))")
    raise CompressError(f"teacher {path} holds a {type(obj).__name__}, not a model")


def load_classifier_teacher(path: str | Path, nc: int, imgsz: int, input: str = "same",
                            teacher_imgsz: int | None = None) -> ClassifierTeacher:
    """Load and check a classification teacher: it must map the student's batches to ``nc`` logits.

    Raises:
        CompressError: not loadable, not a classifier, or a different number of classes.
    """
    teacher = ClassifierTeacher(load_classifier(path).float(), input, teacher_imgsz)
    try:
        out = teacher(torch.zeros(2, 3, imgsz, imgsz))
    except Exception as e:  # a module that cannot take the batch: wrong input size or channels
        raise CompressError(f"teacher {path} fails on a {imgsz}x{imgsz} RGB batch ({type(e).__name__}: {e}); set "
                            "teacher_imgsz (--teacher-imgsz) to the size it was trained at") from e
    if out.ndim != 2 or out.shape[1] != nc:
        raise CompressError(f"teacher {path} outputs {tuple(out.shape[1:])} per image but the dataset has {nc} "
                            "classes; use a teacher trained on this dataset's classes")
    return teacher
