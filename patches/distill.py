"""Distillation plug-ins: CWD / MGD feature distillation and logit KD for detectors, soft targets for classifiers.

The maths (settings and schedule, recorder, connectors, losses, ``Distiller``) is in ``yolo_compress.distill``;
this is the seam. Checked against Ultralytics 8.4.190. Both plug-ins are switched on by ``teacher`` (a checkpoint
path) in the trainer's ``args`` and read :class:`~yolo_compress.distill.DistillSettings` from there, so ``resume``
and the DDP launcher rebuild the same distillation from ``vars(args)``. How :class:`FeatureDistillation` plugs in:

* ``after_setup_model`` builds the :class:`~yolo_compress.distill.Distiller` (teacher + connectors) once the
  student exists; ``add_param_groups`` adds the connectors' parameters as extra groups, before the LR scheduler.
* The ``on_train_start`` callback (after the EMA was copied from the bare student) hooks the student and wraps its
  criterion in :class:`DistillCriterion`, which appends one loss item per distillation loss (``cwd_loss``,
  ``mgd_loss``, ``kd_loss``, ``mask_kd_loss``). The validator runs the EMA, whose criterion is the plain detection
  loss: the extra keys read 0 there, so train and val columns match.
* ``teardown`` (run by ``BaseTrainer.train`` also on error) removes the hooks and restores the plain criterion.
* ``before_optimizer_step`` averages the connectors' gradients over DDP ranks (they are outside the DDP-wrapped
  student) and clips them; ``clean_for_save`` strips any stray hook from the EMA (a NaN recovery rebuilds the EMA
  from the live, hooked student), so ``best.pt``/``last.pt`` hold the student alone.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from ultralytics.utils.torch_utils import unwrap_model

from yolo_compress.distill import Distiller, DistillSettings, remove_output_hooks_
from yolo_compress.distill.teacher import check_teacher_path, load_teacher
from yolo_compress.errors import CompressError
from yolo_compress.patches.plugin import TrainerPlugin

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
        self.weights = {"kd_loss": settings.kd_weight, "mask_kd_loss": settings.kd_weight}
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


class _Teacher(TrainerPlugin):
    """A frozen teacher checkpoint (``teacher``, checked and loaded once) and the distillation settings."""

    trigger = "teacher"
    settings_cls = DistillSettings

    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        args = trainer.args
        args.teacher = str(check_teacher_path(args.teacher))
        self.teacher = load_teacher(args.teacher, args.task, trainer.data["nc"], self.settings, int(args.imgsz))


class FeatureDistillation(_Teacher):
    """Train a (pruned) detector with CWD/MGD feature distillation and/or logit KD from ``teacher`` (same classes,
    same strides for KD).

    Examples:
        >>> from ultralytics import YOLO
        >>> YOLO("pruned.pt").train(trainer=ModuleKeepingTrainer, data="shapes/data.yaml", teacher="teacher.pt",
        ...                         loss="cwd+kd", epochs=10)
    """

    tasks = frozenset({"detect", "segment", "pose", "obb"})  # KD on the detection outputs every such head has

    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        if trainer.args.distill_model:
            raise CompressError("distill_model= starts Ultralytics' own distillation; drop it and pass teacher=")
        if trainer.args.compile:
            LOGGER.warning("compile is off with distillation: the student's hooks must run eagerly")
            trainer.args.compile = False
        self.distiller: Distiller | None = None
        trainer.add_callback("on_train_start", self._attach)
        trainer.add_callback("on_train_epoch_start", self._connectors_train)
        trainer.add_callback("teardown", self._detach)

    def after_setup_model(self) -> None:
        """Build the distiller (teacher + connectors) on the training device."""
        student = unwrap_model(self.trainer.model).float()
        probe = 2 * int(max(student.stride.max(), 32))
        self.distiller = Distiller(student, self.teacher, self.settings, probe_imgsz=probe)
        self.distiller.move_(self.trainer.device)

    def add_param_groups(self, optimizer: torch.optim.Optimizer, decay: float) -> None:
        add_param_groups_(optimizer, self.distiller, decay)

    def before_optimizer_step(self) -> None:
        """Average the connectors' gradients over DDP ranks and clip them like the student's."""
        adapters = [p for p in self.distiller.parameters() if p.grad is not None]
        world = self.trainer.world_size
        if world > 1 and dist.is_initialized():
            for p in adapters:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world
        if adapters:
            torch.nn.utils.clip_grad_norm_(adapters, max_norm=10.0)

    def clean_for_save(self, ema: nn.Module) -> None:
        strip_distillation_(ema)

    def _attach(self, trainer: Any) -> None:
        """Hook the student and wrap its criterion (after ``_setup_train``: the EMA copy never sees either)."""
        student = unwrap_model(trainer.model)
        base = getattr(student, "criterion", None) or student.init_criterion()
        student.criterion = DistillCriterion(base, self.distiller, self.settings, trainer.progress)
        self.distiller.attach()

    def _connectors_train(self, trainer: Any) -> None:
        self.distiller.train()

    def _detach(self, trainer: Any) -> None:
        """Remove every hook and restore the plain criterion; safe when training never started."""
        if self.distiller is not None:
            self.distiller.detach()
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


class SoftTargets(_Teacher):
    """Train a classifier with soft targets from a teacher classifier (Hinton et al. 2015, arXiv:1503.02531).

    ``teacher``: an Ultralytics classification checkpoint, a whole pickled module such as a torchvision ResNet-18,
    or TorchScript, over the same classes. Of ``DistillSettings``: ``kd_alpha``, ``kd_tau``, ``teacher_input``,
    ``teacher_imgsz``. The teacher is frozen, in eval mode, and sees the student's preprocessed batch (resized /
    ImageNet-normalised for it when set).
    """

    tasks = frozenset({"classify"})

    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        trainer.add_callback("on_train_start", self._attach)
        trainer.add_callback("teardown", self._detach)

    def clean_for_save(self, ema: nn.Module) -> None:
        """Reset the EMA's criterion (a rebuilt EMA may carry ours)."""
        if isinstance(getattr(ema, "criterion", None), SoftTargetCriterion):
            ema.criterion = None

    def _attach(self, trainer: Any) -> None:
        from yolo_compress.distill.losses import SoftTargetLoss

        self.teacher.to(trainer.device)
        unwrap_model(trainer.model).criterion = SoftTargetCriterion(
            self.teacher, SoftTargetLoss(self.settings.kd_tau, self.settings.kd_alpha))

    def _detach(self, trainer: Any) -> None:
        student = unwrap_model(trainer.model) if isinstance(trainer.model, nn.Module) else None
        if student is not None and isinstance(getattr(student, "criterion", None), SoftTargetCriterion):
            student.criterion = None
