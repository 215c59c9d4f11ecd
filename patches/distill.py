"""``DistillationTrainer``: CWD / MGD feature distillation and logit KD from a frozen teacher checkpoint.

The maths (settings and schedule, recorder, connectors, losses, ``Distiller``) is in ``yolo_compress.distill``;
this is the seam. Checked against Ultralytics 8.4.190. How it plugs in:

* ``setup_model`` builds the :class:`~yolo_compress.distill.Distiller` (teacher + connectors) after the student
  exists; ``build_optimizer`` adds the connectors' parameters as extra groups, before the LR scheduler is built.
* The ``on_train_start`` callback (after the EMA was copied from the bare student) hooks the student and wraps its
  criterion in :class:`DistillCriterion`, which appends one loss item per distillation loss (``cwd_loss``,
  ``mgd_loss``, ``kd_loss``). The validator runs the EMA, whose criterion is the plain detection loss: the extra
  keys read 0 there, so train and val columns match.
* ``teardown`` (run by ``BaseTrainer.train`` also on error) removes the hooks and restores the plain criterion.
* ``before_optimizer_step`` averages the connectors' gradients over DDP ranks (they are outside the DDP-wrapped
  student) and clips them; ``save_model`` strips any stray hook from the EMA (a NaN recovery rebuilds the EMA from
  the live, hooked student), so ``best.pt``/``last.pt`` hold the student alone.

Settings are plain values in ``self.args`` (``DistillSettings`` and ``teacher``), so ``resume`` and the DDP
launcher rebuild the same distillation from ``vars(args)``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import unwrap_model

from yolo_compress.distill import Distiller, DistillSettings, remove_output_hooks_
from yolo_compress.distill.teacher import check_teacher_path, load_teacher
from yolo_compress.errors import CompressError
from yolo_compress.patches.trainers import ModuleKeepingClassifyTrainer, ModuleKeepingTrainer

LOGGER = logging.getLogger(__name__)


class DistillCriterion:
    """Wrap an Ultralytics criterion: detection loss plus weighted, scheduled distillation losses.

    ``__call__(preds, batch)`` returns ``(cat([loss, extra * batch_size]), {**items, **extra_items})``; the trainer
    sums the vector. Each extra item is ``weight * ramp * loss`` per image (``ramp`` from
    ``DistillSettings.weight_at`` the trainer's progress), scaled by the batch size as Ultralytics scales its own
    terms. Not copied by ``deepcopy`` (returns ``None``), so an EMA rebuilt from the live model never carries the
    teacher.
    """

    def __init__(self, base: Any, distiller: Distiller, settings: DistillSettings, progress: Any) -> None:
        self.base, self.distiller, self.settings, self.progress = base, distiller, settings, progress
        self.weights = {"kd_loss": settings.kd_weight}
        if settings.feature:
            self.weights[f"{settings.feature}_loss"] = settings.distill_weight

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, items = self.base(preds, batch)
        losses = self.distiller(batch["img"], preds)
        ramp = self.settings.weight_at(self.progress())
        extra = torch.stack([self.weights[k] * ramp * v for k, v in losses.items()]).to(loss.dtype)
        items = {**items, **dict(zip(losses, extra.detach()))}
        return torch.cat([loss, extra * batch["img"].shape[0]]), items

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)  # e.g. ``update`` for criteria that have one

    def __deepcopy__(self, memo: dict) -> None:
        return None


class DistillationTrainer(ModuleKeepingTrainer):
    """Train a (pruned) student with CWD/MGD feature distillation and/or logit KD from a teacher checkpoint.

    Settings: ``teacher`` (path of the teacher ``.pt``: same classes, same strides for KD) and the fields of
    :class:`~yolo_compress.distill.DistillSettings`, all passed as ``YOLO.train`` keywords.

    Examples:
        >>> from ultralytics import YOLO
        >>> YOLO("pruned.pt").train(trainer=DistillationTrainer, data="shapes/data.yaml", teacher="teacher.pt",
        ...                         loss="cwd+kd", epochs=10)
    """

    settings_cls = DistillSettings
    extra_keys = ("teacher",)

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        super().__init__(cfg, overrides, _callbacks)
        if self.args.distill_model:
            raise CompressError("distill_model= starts Ultralytics' own distillation; drop it and pass teacher=")
        if self.args.compile:
            LOGGER.warning("compile is off with distillation: the student's hooks must run eagerly")
            self.args.compile = False
        self.distill = self.settings_of(DistillSettings)
        self.args.teacher = str(check_teacher_path(self.args.teacher))
        self.teacher_model = load_teacher(self.args.teacher, "detect", self.data["nc"], self.distill,
                                          int(self.args.imgsz))
        self.distiller: Distiller | None = None
        self.add_callback("on_train_start", _attach)
        self.add_callback("on_train_epoch_start", _connectors_train)
        self.add_callback("teardown", _detach)

    def setup_model(self):
        """Set up the student as usual, then build the distiller (teacher + connectors) on the training device."""
        ckpt = super().setup_model()
        student = unwrap_model(self.model).float()
        probe = 2 * int(max(student.stride.max(), 32))
        self.distiller = Distiller(student, self.teacher_model, self.distill, probe_imgsz=probe)
        self.distiller.move_(self.device)
        return ckpt

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer for the student, plus the connectors' parameters as extra groups."""
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        add_param_groups_(optimizer, self.distiller, decay)
        return optimizer

    def before_optimizer_step(self) -> None:
        """Average the connectors' gradients over DDP ranks and clip them like the student's."""
        adapters = [p for p in self.distiller.parameters() if p.grad is not None]
        if self.world_size > 1 and dist.is_initialized():
            for p in adapters:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.world_size
        if adapters:
            torch.nn.utils.clip_grad_norm_(adapters, max_norm=10.0)

    def save_model(self):
        """Save as usual, after making sure the EMA holds no hook or distillation criterion."""
        strip_distillation_(self.ema.ema)
        return super().save_model()


def _attach(trainer: DistillationTrainer) -> None:
    """Hook the student and wrap its criterion (after ``_setup_train``: the EMA copy never sees either)."""
    student = unwrap_model(trainer.model)
    base = getattr(student, "criterion", None) or student.init_criterion()
    student.criterion = DistillCriterion(base, trainer.distiller, trainer.distill, trainer.progress)
    trainer.distiller.attach()


def _connectors_train(trainer: DistillationTrainer) -> None:
    trainer.distiller.train()


def _detach(trainer: DistillationTrainer) -> None:
    """Remove every hook and restore the plain criterion; safe when training never started."""
    if trainer.distiller is not None:
        trainer.distiller.detach()
    student = unwrap_model(trainer.model) if isinstance(trainer.model, nn.Module) else None
    if student is not None and isinstance(getattr(student, "criterion", None), DistillCriterion):
        student.criterion = student.criterion.base


def add_param_groups_(optimizer: torch.optim.Optimizer, module: nn.Module, decay: float) -> None:
    """Add ``module``'s parameters to ``optimizer``: weights with ``decay``, biases without, hyper-parameters copied.

    Must run before the LR scheduler is built (``LambdaLR`` records each group's ``initial_lr``).
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    template = next((g for g in optimizer.param_groups if g.get("param_group") == "weight"), optimizer.param_groups[0])
    base = {k: v for k, v in template.items() if k not in {"params", "initial_lr"}}
    if "use_muon" in base:
        base["use_muon"] = False
    weights, biases = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    for group, wd, kind in ((weights, decay, "weight"), (biases, 0.0, "bias")):
        if group:
            optimizer.add_param_group({**base, "params": group, "weight_decay": wd, "param_group": kind})
    LOGGER.info("distillation connectors: %d weight, %d bias tensors added to the optimizer", len(weights), len(biases))


def strip_distillation_(model: nn.Module) -> None:
    """Remove recorder hooks and a distillation criterion from ``model`` (an EMA copy) in place."""
    remove_output_hooks_(model)
    if isinstance(getattr(model, "criterion", None), DistillCriterion):
        model.criterion = None


class SoftTargetCriterion:
    """Replace a classifier's cross-entropy by Hinton's objective against a frozen teacher (same batch, no_grad).

    ``__call__(preds, batch)`` returns the two weighted terms ``(1 - kd_alpha) * CE`` and
    ``kd_alpha * T^2 * KL`` as the loss vector (the trainer sums it) and logs them as ``loss`` and ``kd_loss``.
    Not copied by ``deepcopy``, so the EMA keeps the plain criterion (validation logs ``kd_loss`` as 0).
    """

    def __init__(self, teacher: nn.Module, loss: nn.Module) -> None:
        self.teacher, self.loss = teacher, loss

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = preds[1] if isinstance(preds, (tuple, list)) else preds
        ce, kd = self.loss(logits.float(), self.teacher(batch["img"]), batch["cls"])
        return torch.stack([ce, kd]), {"loss": ce.detach(), "kd_loss": kd.detach()}

    def __deepcopy__(self, memo: dict) -> None:
        return None


class ClassifyDistillationTrainer(ModuleKeepingClassifyTrainer):
    """Train a classifier with soft targets from a teacher classifier (Hinton et al. 2015, arXiv:1503.02531).

    Settings: ``teacher`` (an Ultralytics classification checkpoint, a whole pickled module such as a torchvision
    ResNet-18, or TorchScript, over the same classes) and, of ``DistillSettings``, ``kd_alpha``, ``kd_tau``,
    ``teacher_input``, ``teacher_imgsz``. The teacher is frozen, in eval mode, and sees the student's preprocessed
    batch (resized / ImageNet-normalised for it when set).
    """

    settings_cls = DistillSettings
    extra_keys = ("teacher",)

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        super().__init__(cfg, overrides, _callbacks)
        self.distill = self.settings_of(DistillSettings)
        self.args.teacher = str(check_teacher_path(self.args.teacher))
        self.teacher_model = load_teacher(self.args.teacher, "classify", self.data["nc"], self.distill,
                                          int(self.args.imgsz))
        self.add_callback("on_train_start", _attach_soft_targets)
        self.add_callback("teardown", _detach_soft_targets)

    def save_model(self):
        """Save as usual, with the EMA's criterion (a rebuilt EMA may carry ours) reset."""
        if isinstance(getattr(self.ema.ema, "criterion", None), SoftTargetCriterion):
            self.ema.ema.criterion = None
        return super().save_model()


def _attach_soft_targets(trainer: ClassifyDistillationTrainer) -> None:
    from yolo_compress.distill.losses import SoftTargetLoss

    s = trainer.distill
    trainer.teacher_model.to(trainer.device)
    unwrap_model(trainer.model).criterion = SoftTargetCriterion(trainer.teacher_model,
                                                                SoftTargetLoss(s.kd_tau, s.kd_alpha))


def _detach_soft_targets(trainer: ClassifyDistillationTrainer) -> None:
    student = unwrap_model(trainer.model) if isinstance(trainer.model, nn.Module) else None
    if student is not None and isinstance(getattr(student, "criterion", None), SoftTargetCriterion):
        student.criterion = None


TRAINERS = {"detect": DistillationTrainer, "classify": ClassifyDistillationTrainer}
