"""``DistillationTrainer``: CWD / MGD feature distillation and logit KD from a frozen teacher checkpoint.

Checked against Ultralytics 8.4.190. How it plugs in:

* ``setup_model`` builds a :class:`~yolo_compress.distill.Distiller` (teacher + adapters) after the student exists;
  ``build_optimizer`` adds the adapters' parameters as extra groups, before the LR scheduler is built.
* ``_setup_train`` (after the EMA copy exists, so the EMA never sees them) hooks the student and wraps the student's
  criterion in :class:`DistillCriterion`, which appends one loss item per distillation loss (``cwd_loss``,
  ``mgd_loss``, ``kd_loss``). The validator runs the EMA, whose criterion is the plain detection loss: the extra
  keys stay in its dict at 0, so train and val columns match.
* ``save_model`` strips any stray hook from the EMA first: ``best.pt``/``last.pt`` hold the student alone.
* ``_do_train`` removes the hooks and restores the criterion when training ends, also on error.

Settings are plain values in ``self.args`` (see ``extra_args``), so the DDP launcher and ``resume`` rebuild the
same distillation from ``vars(args)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import unwrap_model

from yolo_compress.checkpoint import load_detection_model
from yolo_compress.distill import (
    DEFAULT_LAYERS,
    Distiller,
    cosine_factor,
    hooked_layer_names,
    parse_loss_type,
    remove_output_hooks_,
)
from yolo_compress.errors import CompressError
from yolo_compress.patches.trainers import ModuleKeepingTrainer

LOGGER = logging.getLogger(__name__)
SCHEDULES = ("cosine", "cosine_epoch", "constant")


@dataclass(frozen=True)
class DistillSettings:
    """Validated distillation settings read from trainer ``args`` (see ``DistillationTrainer.extra_args``)."""

    teacher: str
    loss: str
    layers: tuple[int, ...]
    weight: float
    kd_weight: float
    kd_tau: float
    kd_box: bool
    cwd_tau: float
    mgd_alpha: float
    mgd_lambda: float
    schedule: str
    final: float

    @classmethod
    def from_args(cls, args: Any) -> DistillSettings:
        """Read and check the settings.

        Raises:
            CompressError: missing teacher file, unknown loss or schedule, malformed layers, or out-of-range numbers.
        """
        if not args.teacher:
            raise CompressError("distillation needs a teacher: pass teacher='path/to/teacher.pt'")
        teacher = Path(args.teacher).expanduser()
        if not teacher.is_file():
            raise CompressError(f"teacher checkpoint not found: {teacher}; pass the .pt file of a trained detector")
        parse_loss_type(args.distill_loss)
        if args.distill_schedule not in SCHEDULES:
            raise CompressError(f"distill_schedule={args.distill_schedule!r}; use one of {', '.join(SCHEDULES)}")
        numbers = {k: float(getattr(args, k)) for k in ("distill_weight", "kd_weight", "kd_tau", "cwd_tau",
                                                        "mgd_alpha", "mgd_lambda", "distill_final")}
        if min(numbers.values()) < 0 or numbers["kd_tau"] <= 0 or numbers["cwd_tau"] <= 0:
            raise CompressError(f"distillation weights and temperatures must be >= 0 (tau > 0); got {numbers}")
        if numbers["mgd_lambda"] >= 1:
            raise CompressError(f"mgd_lambda is the masked fraction, in [0, 1); got {numbers['mgd_lambda']}")
        return cls(
            teacher=str(teacher.resolve()),
            loss=str(args.distill_loss).lower().replace(" ", ""),
            layers=parse_layers(args.distill_layers),
            weight=numbers["distill_weight"],
            kd_weight=numbers["kd_weight"],
            kd_tau=numbers["kd_tau"],
            kd_box=str(args.kd_box).lower() not in {"false", "0", "none", ""},
            cwd_tau=numbers["cwd_tau"],
            mgd_alpha=numbers["mgd_alpha"],
            mgd_lambda=numbers["mgd_lambda"],
            schedule=args.distill_schedule,
            final=numbers["distill_final"],
        )


def parse_layers(value: Any) -> tuple[int, ...]:
    """Layer indices from a list/tuple of ints or a CLI string such as ``"6,8,12"`` or ``"[6, 8, 12]"``.

    Raises:
        CompressError: an entry is not an integer.
    """
    items = str(value).strip("[]() ").replace(" ", "").split(",") if isinstance(value, str) else list(value or ())
    try:
        return tuple(int(i) for i in items if str(i) != "")
    except (TypeError, ValueError) as e:
        raise CompressError(f"distill_layers={value!r} must be layer indices, e.g. {list(DEFAULT_LAYERS)}") from e


class DistillCriterion:
    """Wrap an Ultralytics criterion: detection loss plus weighted, scheduled distillation losses.

    ``__call__(preds, batch)`` returns ``(cat([loss, extra * batch_size]), {**items, **extra_items})``; the
    trainer sums the vector. Each extra item is ``weight * factor * loss`` per image (``factor`` from the schedule),
    mirroring how Ultralytics scales its own terms by batch size. Not copied by ``deepcopy`` (returns ``None``),
    so an EMA rebuilt from the live model never carries the teacher.
    """

    def __init__(self, base: Any, distiller: Distiller, weights: dict[str, float], schedule: str, final: float):
        self.base, self.distiller, self.weights = base, distiller, weights
        self.schedule, self.final = schedule, final
        self.epoch, self.epochs, self.batches, self.step = 0, 1, 1, 0

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        """Reset the in-epoch batch counter; called by the trainer when an epoch starts."""
        self.epoch, self.epochs, self.batches, self.step = epoch, max(epochs, 1), max(batches, 1), 0

    def factor(self) -> float:
        """Schedule factor: cosine 1 -> ``final`` over the run (``cosine``) or each epoch (``cosine_epoch``)."""
        within = min(self.step / self.batches, 1.0)
        if self.schedule == "cosine":
            return cosine_factor((self.epoch + within) / self.epochs, self.final)
        if self.schedule == "cosine_epoch":
            return cosine_factor(within, self.final)
        return 1.0

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, items = self.base(preds, batch)
        losses = self.distiller(batch["img"], preds)
        factor = self.factor()
        self.step += 1
        extra = torch.stack([self.weights[k] * factor * v for k, v in losses.items()]).to(loss.dtype)
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

    Settings (``extra_args``, passed as ``YOLO.train`` keywords and kept in ``self.args``):

    * ``teacher``: path of the teacher ``.pt`` (same classes; strides must match for KD).
    * ``distill_loss``: ``"cwd"``, ``"mgd"``, ``"kd"``, ``"cwd+kd"`` or ``"mgd+kd"``.
    * ``distill_layers``: model indices whose ``cv2`` output is distilled (default: the C2f blocks 6, 8, 12, 15,
      18, 21 of YOLOv8); matched by attribute name, so pruned chunk-free C2f twins work.
    * ``distill_weight`` / ``kd_weight``: weights of the feature loss and of the KD loss.
    * ``cwd_tau``, ``mgd_alpha``, ``mgd_lambda`` (masked fraction), ``kd_tau``, ``kd_box`` (distil DFL bins).
    * ``distill_schedule``: ``"cosine"`` (default: weight factor 1 -> ``distill_final`` over the whole run),
      ``"cosine_epoch"`` (the same decay restarted every epoch) or ``"constant"``; ``distill_final`` = 0.1.

    Examples:
        >>> from ultralytics import YOLO
        >>> YOLO("pruned.pt").train(trainer=DistillationTrainer, data="shapes/data.yaml", teacher="teacher.pt",
        ...                         distill_loss="cwd+kd", epochs=10)
    """

    extra_args: dict[str, Any] = {
        "teacher": None,
        "distill_loss": "cwd",
        "distill_layers": DEFAULT_LAYERS,
        "distill_weight": 1.0,
        "kd_weight": 1.0,
        "kd_tau": 1.0,
        "kd_box": True,
        "cwd_tau": 1.0,
        "mgd_alpha": 2e-5,
        "mgd_lambda": 0.65,
        "distill_schedule": "cosine",
        "distill_final": 0.1,
    }

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        super().__init__(cfg, overrides, _callbacks)
        self.settings = DistillSettings.from_args(self.args)
        self.args.teacher, self.args.distill_layers = self.settings.teacher, list(self.settings.layers)
        if self.args.distill_model:
            raise CompressError("distill_model= starts Ultralytics' own distillation; drop it and use teacher=")
        if self.args.compile:
            LOGGER.warning("compile is off with distillation: the student's hooks must run eagerly")
            self.args.compile = False
        self.teacher_model = load_teacher(self.settings.teacher, self.data["nc"], self.settings)
        self.distiller: Distiller | None = None
        self.distill_criterion: DistillCriterion | None = None

    def setup_model(self):
        """Set up the student as usual, then build the distiller (teacher + adapters) on the training device."""
        ckpt = super().setup_model()
        s = self.settings
        self.distiller = Distiller(
            unwrap_model(self.model).float(), self.teacher_model, s.layers, s.loss, s.cwd_tau, s.mgd_alpha,
            s.mgd_lambda, s.kd_tau, s.kd_box, probe_imgsz=2 * int(max(unwrap_model(self.model).stride.max(), 32)),
        ).move_(self.device)
        return ckpt

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer for the student, plus the adapters' parameters as extra groups."""
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        add_param_groups_(optimizer, self.distiller, decay)
        return optimizer

    def _setup_train(self):
        """Ultralytics' setup (EMA copied from the bare student), then hook the student and wrap its criterion."""
        super()._setup_train()
        student = unwrap_model(self.model)
        base = getattr(student, "criterion", None) or student.init_criterion()
        s = self.settings
        weights = {"cwd_loss": s.weight, "mgd_loss": s.weight, "kd_loss": s.kd_weight}
        self.distill_criterion = DistillCriterion(base, self.distiller, weights, s.schedule, s.final)
        student.criterion = self.distill_criterion
        self.distiller.attach()

    def _do_train(self):
        """Train; always remove the hooks and restore the plain criterion afterwards."""
        try:
            super()._do_train()
        finally:
            self._detach_distiller()

    def _detach_distiller(self) -> None:
        if self.distiller is not None:
            self.distiller.detach()
        student = unwrap_model(self.model) if isinstance(self.model, nn.Module) else None
        if student is not None and isinstance(getattr(student, "criterion", None), DistillCriterion):
            student.criterion = student.criterion.base

    def _model_train(self):
        """Student (and adapters) to train mode at each epoch start; restart the in-epoch schedule counter."""
        super()._model_train()
        if self.distiller is not None:
            self.distiller.train()
        if self.distill_criterion is not None:
            self.distill_criterion.start_epoch(self.epoch, self.epochs, len(self.train_loader))

    def optimizer_step(self):
        """``BaseTrainer.optimizer_step`` with the adapters' gradients averaged over DDP ranks and clipped too."""
        adapters = [p for p in self.distiller.parameters() if p.grad is not None]
        if self.world_size > 1 and dist.is_initialized():
            for p in adapters:  # the adapters are outside the DDP-wrapped student
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.world_size
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        if adapters:
            torch.nn.utils.clip_grad_norm_(adapters, max_norm=10.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema:
            self.ema.update(self.model)

    def save_model(self):
        """Save as usual, after making sure the EMA holds no hook or distillation criterion."""
        strip_distillation_(self.ema.ema)
        return super().save_model()

    def _handle_nan_recovery(self, epoch):
        """Ultralytics' recovery rebuilds the EMA from the live (hooked) student: clean the copy."""
        recovered = super()._handle_nan_recovery(epoch)
        strip_distillation_(self.ema.ema)
        return recovered


def load_teacher(path: str, nc: int, settings: DistillSettings) -> nn.Module:
    """Load a frozen teacher and check it against the dataset and the chosen layers (on CPU; moved later).

    Raises:
        CompressError: not a detection checkpoint, a different number of classes, or a layer without ``cv2``.
    """
    teacher = load_detection_model(path)
    teacher_nc = getattr(teacher, "nc", None) or teacher.model[-1].nc
    if teacher_nc != nc:
        raise CompressError(
            f"teacher {path} predicts {teacher_nc} classes but the dataset has {nc}; "
            "use a teacher trained on this dataset"
        )
    if parse_loss_type(settings.loss)[0]:
        hooked_layer_names(teacher, settings.layers)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


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
    LOGGER.info("distillation adapters: %d weight, %d bias tensors added to the optimizer", len(weights), len(biases))


def strip_distillation_(model: nn.Module) -> None:
    """Remove recorder hooks and a distillation criterion from ``model`` (an EMA copy) in place."""
    remove_output_hooks_(model)
    if isinstance(getattr(model, "criterion", None), DistillCriterion):
        model.criterion = None
