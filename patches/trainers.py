"""Trainers that keep the model they are given; the base of every yolo-compress trainer.

Checked against Ultralytics 8.4.190 (``ultralytics/engine/trainer.py``, ``models/yolo/detect/train.py``,
``models/yolo/classify/train.py``); ``patches.runtime.check_version`` warns on other versions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn, optim
from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, RANK, YAML
from ultralytics.utils.torch_utils import TORCH_2_0, one_cycle

from yolo_compress.checkpoint import atomic_write_bytes
from yolo_compress.patches.datasets import keep_images_unchanged
from yolo_compress.run_folder import record_files
from yolo_compress.settings import Settings

S = TypeVar("S", bound=Settings)
LOGGER = logging.getLogger(__name__)
keep_images_unchanged()  # here too: a DDP worker imports its trainer's module but never runs runtime.apply


class _AtomicPath(type(Path())):
    """A path whose ``write_bytes`` goes through a temp file and a rename.

    ``BaseTrainer.save_model`` writes ``last.pt``/``best.pt`` with ``Path.write_bytes`` in place: a kill during the
    write leaves a truncated checkpoint that blocks every resume. Ultralytics reads ``self.last``/``self.best``
    as paths only, so swapping their type is enough.
    """

    def write_bytes(self, data: bytes) -> int:  # type: ignore[override]
        atomic_write_bytes(Path(self), data)
        return len(data)


class KeepModule:
    """Mixin for an Ultralytics task trainer: train the exact module it is handed, carry extra settings in ``args``.

    * ``get_model`` replaces the task trainer's, which rebuilds the network from its yaml and copies matching
      weights: a pruned network would silently grow back to full width ("Transferred 125/355 items") and
      ``resume=True`` would then fail on optimizer shapes.
    * Each mixin names its settings class in ``settings_cls`` (and other extra keys in ``extra_keys``); a trainer
      combining mixins (sparse training with a teacher) takes all of them. Ultralytics rejects unknown keys in
      ``get_cfg``, so they are taken out of the overrides before ``BaseTrainer.__init__`` and set on ``self.args``
      afterwards: they travel in ``vars(self.args)``, i.e. in checkpoints (``resume`` restores them) and through the
      DDP launcher, which re-creates the trainer from ``vars(trainer.args)`` in a new process.
      :meth:`settings_of` returns them checked.
    * ``schedule_start`` / ``schedule_epochs``: this run is the segment ``[start, start + epochs)`` of one learning
      rate schedule over ``schedule_epochs`` epochs (a pipeline's stages then decay the rate as one run would);
      unset, Ultralytics' own schedule over this run's epochs.
    * ``recovery_lr``: where Ultralytics picks the optimizer itself and takes its small-data branch (``optimizer=auto``,
      at most 10,000 iterations: AdamW at 0.002 x 5 / (4 + nc)), AdamW runs at this rate instead
      (:meth:`build_optimizer`); unset, Ultralytics' choice as it is.
    * ``optimizer_step`` is ``BaseTrainer.optimizer_step`` with two override points,
      :meth:`before_optimizer_step` (gradients unscaled and clipped) and :meth:`after_optimizer_step` (weights
      updated, EMA not yet).
    * :meth:`progress` is the share of the run's training batches done so far, for schedules.
    """

    settings_cls: ClassVar[type[Settings] | None] = None
    extra_keys: ClassVar[tuple[str, ...]] = ("schedule_start", "schedule_epochs", "recovery_lr")

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        overrides = dict(overrides or {})
        extra = self.extra_args()
        given = {k: overrides.pop(k) for k in list(overrides) if k in extra}
        for cls in self.settings_classes():  # bad values fail before Ultralytics creates the run folder
            cls.pick({k: v for k, v in given.items() if k in cls.field_names()})
        super().__init__(cfg, overrides, _callbacks)
        for key, default in extra.items():
            # on resume, check_resume() already restored the checkpoint's values into self.args
            setattr(self.args, key, given.get(key, getattr(self.args, key, default)))
        if RANK in {-1, 0} and (Path(self.save_dir) / "args.yaml").is_file():  # BaseTrainer wrote it without them
            YAML.save(Path(self.save_dir) / "args.yaml", vars(self.args))
        self._settings: dict[type[Settings], Settings] = {}
        for cls in self.settings_classes():
            settings = cls.from_args(self.args)
            # task defaults (e.g. the distillation loss) decided once, here
            self._settings[cls] = settings.for_task(self.args.task) if hasattr(settings, "for_task") else settings
        self.last, self.best = _AtomicPath(self.last), _AtomicPath(self.best)
        self._batches_done, self._batches_total = 0, 1
        self.add_callback("on_train_start", _count_batches_from_start)
        self.add_callback("on_train_start", _forget_unsaved_epochs)
        self.add_callback("on_train_batch_start", _count_batch)
        for event in ("on_train_start", "on_train_batch_end", "on_model_save", "on_train_end"):
            self.add_callback(event, _record_run_files)

    @classmethod
    def settings_classes(cls) -> list[type[Settings]]:
        """The settings classes of every mixin of this trainer, most derived first."""
        found = [c.__dict__["settings_cls"] for c in cls.__mro__ if c.__dict__.get("settings_cls") is not None]
        return list(dict.fromkeys(found))

    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        """Every non-Ultralytics key this trainer accepts, with its default."""
        out: dict[str, Any] = {}
        for settings in cls.settings_classes():
            out.update(settings.defaults())
        for c in cls.__mro__:
            out.update(dict.fromkeys(c.__dict__.get("extra_keys", ())))
        return out

    def settings_of(self, cls: type[S]) -> S:
        """This trainer's checked settings of ``cls`` (task defaults filled in)."""
        return self._settings[cls]  # type: ignore[return-value]

    def _setup_scheduler(self) -> None:
        """Ultralytics' schedule, or its segment of a longer one (``schedule_start``, ``schedule_epochs``)."""
        super()._setup_scheduler()
        total = self.args.schedule_epochs
        if not total:
            return
        start, lrf = int(self.args.schedule_start or 0), self.args.lrf
        whole = one_cycle(1, lrf, total) if self.args.cos_lr else (lambda x: max(1 - x / total, 0) * (1 - lrf) + lrf)
        self.lf = lambda x: whole(x + start)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """``BaseTrainer.build_optimizer`` (8.4.190), its small-data ``auto`` branch at ``recovery_lr`` when set."""
        if str(name).lower() == "auto" and self.args.recovery_lr and iterations <= 10000:
            name, lr, momentum = "AdamW", float(self.args.recovery_lr), 0.9
            LOGGER.info("optimizer: AdamW(lr=%g), yolo-compress's recovery_lr for a trained detector, instead of "
                        "Ultralytics' small-data rate", lr)
            self.args.optimizer, self.args.lr0 = name, lr  # resume rebuilds this choice from train_args
            self.args.warmup_bias_lr = 0.0  # as Ultralytics' auto choice sets it
        return super().build_optimizer(model, name, lr, momentum, decay, iterations)

    def get_model(self, cfg=None, weights: nn.Module | None = None, verbose: bool = True) -> nn.Module:
        """Return ``weights`` itself (float32, floating-point parameters trainable) when it is a module, else build
        from ``cfg``. (Integer parameters, such as a fake quantizer's bit width, stay frozen.)"""
        if not isinstance(weights, nn.Module):
            return super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        from yolo_compress.models import check_class_count

        check_class_count(weights, self.data["nc"], "model", f"pass the dataset the model was trained on "
                          f"({self.args.data} is not)")
        model = weights.float()
        for p in model.parameters():
            if p.is_floating_point():
                p.requires_grad_(True)
        return model

    def get_validator(self):
        """The task trainer's validator, built while the extra settings are hidden from ``args``.

        The validator runs ``get_cfg(overrides=copy(args))``, whose ``check_dict_alignment`` rejects keys that
        Ultralytics does not know. They stay on ``self.args`` for checkpoints, resume and DDP.
        """
        saved = {k: getattr(self.args, k) for k in self.extra_args() if hasattr(self.args, k)}
        for k in saved:
            delattr(self.args, k)
        try:
            return super().get_validator()
        finally:
            for k, v in saved.items():
                setattr(self.args, k, v)

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        """``BaseTrainer.save_metrics``, with ``results.csv`` on the run's record before it is written (a kill
        mid-epoch-end must not leave a file the next fresh start would take for the user's)."""
        _record_run_files(self, "results.csv")
        super().save_metrics(metrics)

    def save_model(self):
        """``BaseTrainer.save_model``, with the checkpoints it writes on the run's record first (see
        :meth:`save_metrics`)."""
        _record_run_files(self, *(Path(p).relative_to(self.save_dir).as_posix() for p in (self.last, self.best)))
        return super().save_model()

    def optimizer_step(self) -> None:
        """``BaseTrainer.optimizer_step`` (8.4.190) with the two override points around ``scaler.step``."""
        self.scaler.unscale_(self.optimizer)  # unscale gradients
        if self.device.type == "npu" and TORCH_2_0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0, foreach=False)
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.before_optimizer_step()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        self.after_optimizer_step()
        if self.ema:
            self.ema.update(self.model)

    def before_optimizer_step(self) -> None:
        """Override point: gradients are unscaled (true units) and clipped; the step has not run. No-op."""

    def after_optimizer_step(self) -> None:
        """Override point: the optimizer step has run; the EMA has not seen it yet. No-op."""

    def progress(self) -> float:
        """Share of this run's training batches done, in [0, 1] (counts batches, not optimizer steps)."""
        return min(self._batches_done / self._batches_total, 1.0)


def _count_batches_from_start(trainer: KeepModule) -> None:
    nb = len(trainer.train_loader)
    trainer._batches_total = max(trainer.epochs * nb, 1)
    trainer._batches_done = trainer.start_epoch * nb


def _forget_unsaved_epochs(trainer: KeepModule) -> None:
    """On resume, drop ``results.csv`` rows of epochs after the checkpoint: Ultralytics appends an epoch's row before
    it saves ``last.pt``, so a kill in between would list the retrained epoch twice (``BaseTrainer.save_metrics``)."""
    csv = getattr(trainer, "csv", None)
    if not trainer.start_epoch or csv is None or not Path(csv).is_file():
        return
    lines = Path(csv).read_text().splitlines()
    kept = [lines[0], *(line for line in lines[1:] if float(line.split(",")[0]) <= trainer.start_epoch)]
    if len(kept) < len(lines):
        atomic_write_bytes(Path(csv), ("\n".join(kept) + "\n").encode())


def _count_batch(trainer: KeepModule) -> None:
    trainer._batches_done += 1


def _record_run_files(trainer: KeepModule, *about_to_write: str) -> None:
    """Record the files Ultralytics has written in the run folder so far (and ``about_to_write``, relative to it),
    so that only they are ever replaced (``yolo_compress.run_folder``); cheap when nothing new appeared."""
    if RANK in {-1, 0}:
        trainer._run_files = record_files(trainer.save_dir, getattr(trainer, "_run_files", None), about_to_write)


class ModuleKeepingTrainer(KeepModule, DetectionTrainer):
    """``DetectionTrainer`` that trains the module it is given (see :class:`KeepModule`)."""


class ModuleKeepingClassifyTrainer(KeepModule, ClassificationTrainer):
    """``ClassificationTrainer`` that trains the module it is given (see :class:`KeepModule`)."""


TRAINERS = {"detect": ModuleKeepingTrainer, "classify": ModuleKeepingClassifyTrainer}
