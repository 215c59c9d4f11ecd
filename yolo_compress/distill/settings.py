"""Settings of the distillation stage, and the weight schedule they describe."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from yolo_compress.errors import CompressError
from yolo_compress.settings import Settings, non_negative, positive, setting

SCHEDULES = ("constant", "cosine")
TEACHER_INPUTS = ("same", "imagenet")
# the default temperature per task (kd_tau unset): segment, pose and obb heads distil their detection outputs
KD_TAU = {"detect": 1.0, "segment": 1.0, "pose": 1.0, "obb": 1.0, "classify": 4.0}
FEATURES = ("cwd", "mgd")  # feature methods; ``distill.methods.FEATURE_METHODS`` builds them
LOSSES = (*FEATURES, "kd", *(f"{name}+kd" for name in FEATURES))  # a feature loss, logit KD, or both
DEFAULT_LOSS = "kd"  # for every task: the best measured for detectors, the only one for classifiers


def _fraction(v: float) -> bool:
    return 0 <= v < 1


def _layers(v: tuple[int, ...]) -> bool:
    return all(i >= 0 for i in v)


@dataclass(frozen=True)
class DistillSettings(Settings):
    """What the teacher teaches and how strongly.

    Detection: the distillation weight ramps linearly from 0 to 1 over the first ``distill_warmup`` share of the run
    (a freshly pruned student is not hit at full strength), then stays (``constant``) or decays along a cosine to
    ``distill_final`` (``cosine``: better at 20 epochs where pruning costs most, worse at 40 on the easy set, so not
    the default; ``benchmarks/results/accuracy_notes.md``); it multiplies both ``distill_weight`` and ``kd_weight``.
    """

    loss: str | None = setting(None, f"distillation losses: a feature loss, logit KD, or both (default "
                               f"{DEFAULT_LOSS}; classifiers take kd)", choices=LOSSES)
    distill_layers: tuple[int, ...] | None = setting(None, "layer indices whose outputs are distilled (default: the "
                                                     "layers the head reads, from its own f: 15,18,21 on YOLOv8, "
                                                     "16,19,22 on YOLO11/YOLO26)", check=_layers,
                                                     must="layer indices >= 0", metavar="16,19,22")
    distill_weight: float = setting(1.0, "weight of the feature loss", check=non_negative, must=">= 0")
    cwd_tau: float = setting(1.0, "CWD softmax temperature", check=positive, must="> 0")
    mgd_alpha: float = setting(2e-5, "MGD loss weight alpha", check=non_negative, must=">= 0")
    mgd_lambda: float = setting(0.65, "MGD share of masked positions", check=_fraction, must="in [0, 1)")
    kd_weight: float = setting(1.0, "weight of logit KD (detection)", check=non_negative, must=">= 0")
    kd_tau: float | None = setting(None, f"logit KD temperature T (default {KD_TAU['detect']:g} for detection, "
                                   f"{KD_TAU['classify']:g} for classification)", check=positive, must="> 0")
    kd_alpha: float = setting(0.5, "classification: weight of the soft targets, (1 - a) * CE + a * T^2 * KL",
                              check=lambda v: 0 <= v <= 1, must="in [0, 1]")
    teacher_input: str = setting("same", "classification: the teacher's input normalisation (imagenet: mean/std "
                                 "of torchvision's pretrained models)", choices=TEACHER_INPUTS)
    teacher_imgsz: int | None = setting(None, "classification: resize images to this for the teacher (default: "
                                        "the student's size)", check=positive, must="> 0")
    kd_box: bool = setting(True, "also distil the DFL box bins (detection)")
    kd_box_min: float = setting(0.25, "teacher score from which an anchor's box bins are distilled", check=_fraction,
                                must="in [0, 1)")
    kd_mask: bool = setting(False, "segmentation: also distil each anchor's mask, inside the teacher's box, where "
                            "the teacher sees an object (scored from kd_box_min)")
    distill_warmup: float = setting(0.2, "detection: share of the run over which the weight ramps up from 0",
                                    check=_fraction, must="in [0, 1)")
    distill_schedule: str = setting("constant", "detection, after the warm-up: constant, or cosine decay to "
                                    "distill_final", choices=SCHEDULES)
    distill_final: float = setting(0.1, "final weight factor of the cosine schedule", check=non_negative, must=">= 0")

    def for_task(self, task: str) -> DistillSettings:
        """These settings with the task's defaults filled in (``loss``, ``kd_tau``).

        Raises:
            CompressError: a feature loss for a classifier.
        """
        loss = self.loss or DEFAULT_LOSS
        if task == "classify" and loss != "kd":
            raise CompressError(f"loss={loss!r}: classifiers are distilled with logit KD; set loss kd (--loss kd)")
        return replace(self, loss=loss, kd_tau=self.kd_tau if self.kd_tau is not None else KD_TAU[task])

    @property
    def feature(self) -> str | None:
        """The feature method (``"cwd"``, ``"mgd"``) or ``None`` for logit KD alone (after :meth:`for_task`)."""
        name = (self.loss or DEFAULT_LOSS).split("+")[0]
        return None if name == "kd" else name

    @property
    def use_kd(self) -> bool:
        return (self.loss or DEFAULT_LOSS).endswith("kd")

    def weight_at(self, progress: float) -> float:
        """Weight factor at ``progress`` (share of the run done, in [0, 1])."""
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.distill_warmup:
            return progress / self.distill_warmup
        if self.distill_schedule == "constant":
            return 1.0
        rest = (progress - self.distill_warmup) / (1.0 - self.distill_warmup)
        return self.distill_final + (1.0 - self.distill_final) * 0.5 * (1.0 + math.cos(math.pi * rest))
