"""The one trainer of each task: it keeps the model it is given and takes its features as plug-ins.

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
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, RANK, YAML
from ultralytics.utils.torch_utils import TORCH_2_0, one_cycle

from yolo_compress.checkpoint import atomic_write_bytes
from yolo_compress.errors import CompressError
from yolo_compress.patches.datasets import keep_images_unchanged
from yolo_compress.patches.distill import FeatureDistillation, SoftTargets
from yolo_compress.patches.plugin import TrainerPlugin
from yolo_compress.patches.sparse import Sparsity
from yolo_compress.run_folder import record_files

P = TypeVar("P", bound=TrainerPlugin)
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
    """Mixin for an Ultralytics task trainer: train the exact module it is handed, with the plug-ins its ``args`` ask.

    * ``get_model`` replaces the task trainer's, which rebuilds the network from its yaml and copies matching
      weights: a pruned network would silently grow back to full width ("Transferred 125/355 items") and
      ``resume=True`` would then fail on optimizer shapes.
    * Plug-ins (:data:`PLUGINS`: sparsity, feature distillation, soft targets) are switched on by their trigger key
      (``sparse_plan``, ``teacher``) and read their settings from the same ``args``. Ultralytics rejects unknown
      keys in ``get_cfg``, so they are taken out of the overrides before ``BaseTrainer.__init__`` and set on
      ``self.args`` afterwards: they travel in ``vars(self.args)``, i.e. in checkpoints (``resume`` restores them
      and with them the plug-ins) and through the DDP launcher, which re-creates the trainer from
      ``vars(trainer.args)`` in a new process. A plug-in's key given without its trigger is an error.
    * ``schedule_start`` / ``schedule_epochs``: this run is the segment ``[start, start + epochs)`` of one learning
      rate schedule over ``schedule_epochs`` epochs (a pipeline's stages then decay the rate as one run would);
      unset, Ultralytics' own schedule over this run's epochs.
    * ``recovery_lr``: where Ultralytics picks the optimizer itself and takes its small-data branch (``optimizer=auto``,
      at most 10,000 iterations: AdamW at 0.002 x 5 / (4 + nc)), AdamW runs at this rate instead
      (:meth:`build_optimizer`); unset, Ultralytics' choice as it is.
    * ``optimizer_step`` is ``BaseTrainer.optimizer_step`` with the plug-ins' hooks around ``scaler.step``.
    * :meth:`progress` is the share of the run's training batches done so far, for schedules.
    """

    extra_keys: ClassVar[tuple[str, ...]] = ("schedule_start", "schedule_epochs", "recovery_lr")

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        overrides = dict(overrides or {})
        accepted = {**dict.fromkeys(self.extra_keys), **{k: v for p in PLUGINS for k, v in p.arg_defaults().items()}}
        given = {k: overrides.pop(k) for k in list(overrides) if k in accepted}
        _check_given(given)  # bad values fail before Ultralytics creates the run folder
        super().__init__(cfg, overrides, _callbacks)
        # on resume, check_resume() already restored the checkpoint's values (triggers included) into self.args
        triggered = [p for p in PLUGINS if given.get(p.trigger, getattr(self.args, p.trigger, None)) is not None]
        on = [p for p in triggered if p.serves(self.args.task)]
        unserved = sorted({p.trigger for p in triggered} - {p.trigger for p in on})
        if unserved:
            raise CompressError(f"{', '.join(unserved)}: not supported for {self.args.task} models")
        extra = {**dict.fromkeys(self.extra_keys), **{k: v for p in on for k, v in p.arg_defaults().items()}}
        for key, default in extra.items():
            setattr(self.args, key, given.get(key, getattr(self.args, key, default)))
        self._extra = tuple(extra)
        if RANK in {-1, 0} and (Path(self.save_dir) / "args.yaml").is_file():  # BaseTrainer wrote it without them
            YAML.save(Path(self.save_dir) / "args.yaml", vars(self.args))
        self.last, self.best = _AtomicPath(self.last), _AtomicPath(self.best)
        self._batches_done, self._batches_total = 0, 1
        self.add_callback("on_train_start", _count_batches_from_start)
        self.add_callback("on_train_start", _forget_unsaved_epochs)
        self.add_callback("on_train_batch_start", _count_batch)
        for event in ("on_train_start", "on_train_batch_end", "on_model_save", "on_train_end"):
            self.add_callback(event, _record_run_files)
        self.plugins: list[TrainerPlugin] = [plugin(self) for plugin in on]

    def plugin(self, cls: type[P]) -> P:
        """This trainer's plug-in of class ``cls``.

        Raises:
            KeyError: the plug-in is not on.
        """
        for plugin in self.plugins:
            if isinstance(plugin, cls):
                return plugin
        raise KeyError(f"{cls.__name__} is not on in this trainer")

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
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        for plugin in self.plugins:
            plugin.add_param_groups(optimizer, decay)
        return optimizer

    def setup_model(self):
        """Set the model up as usual, then let each plug-in add what it builds around it (a distiller)."""
        ckpt = super().setup_model()
        for plugin in self.plugins:
            plugin.after_setup_model()
        return ckpt

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
        saved = {k: getattr(self.args, k) for k in self._extra if hasattr(self.args, k)}
        for k in saved:
            delattr(self.args, k)
        try:
            return super().get_validator()
        finally:
            for k, v in saved.items():
                setattr(self.args, k, v)

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        """``BaseTrainer.save_metrics`` with the plug-ins' columns, ``results.csv`` on the run's record before it is
        written (a kill mid-epoch-end must not leave a file the next fresh start would take for the user's)."""
        for plugin in self.plugins:
            metrics = plugin.epoch_metrics(metrics)
        _record_run_files(self, "results.csv")
        super().save_metrics(metrics)

    def save_model(self):
        """``BaseTrainer.save_model`` of an EMA the plug-ins cleaned, with the checkpoints it writes on the run's
        record first (see :meth:`save_metrics`)."""
        for plugin in self.plugins:
            plugin.clean_for_save(self.ema.ema)
        _record_run_files(self, *(Path(p).relative_to(self.save_dir).as_posix() for p in (self.last, self.best)))
        return super().save_model()

    def optimizer_step(self) -> None:
        """``BaseTrainer.optimizer_step`` (8.4.190) with the two override points around ``scaler.step``."""
        self.scaler.unscale_(self.optimizer)  # unscale gradients
        if self.device.type == "npu" and TORCH_2_0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0, foreach=False)
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        for plugin in self.plugins:
            plugin.before_optimizer_step()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        for plugin in self.plugins:
            plugin.after_optimizer_step()
        if self.ema:
            self.ema.update(self.model)

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


def _check_given(given: dict[str, Any]) -> None:
    """Check the plug-in settings given to a trainer: each plug-in's values, and no key without its trigger.

    Raises:
        CompressError: a bad value, or a plug-in's setting given while the plug-in is off.
    """
    for plugin in PLUGINS:
        mine = {k: v for k, v in given.items() if k in plugin.arg_defaults() and k != plugin.trigger}
        if given.get(plugin.trigger) is None:
            stray = [k for k, v in mine.items() if v is not None]
            if stray:
                raise CompressError(f"{', '.join(stray)} only apply with {plugin.trigger}= ({plugin.__name__})")
        elif plugin.settings_cls is not None:
            plugin.settings_cls.pick({k: v for k, v in mine.items() if k in plugin.settings_cls.field_names()})


class ModuleKeepingTrainer(KeepModule, DetectionTrainer):
    """``DetectionTrainer`` that trains the module it is given, with plug-ins (see :class:`KeepModule`)."""


class ModuleKeepingSegmentTrainer(KeepModule, SegmentationTrainer):
    """``SegmentationTrainer`` that trains the module it is given, with plug-ins (see :class:`KeepModule`)."""


class ModuleKeepingPoseTrainer(KeepModule, PoseTrainer):
    """``PoseTrainer`` that trains the module it is given, with plug-ins (see :class:`KeepModule`)."""


class ModuleKeepingOBBTrainer(KeepModule, OBBTrainer):
    """``OBBTrainer`` that trains the module it is given, with plug-ins (see :class:`KeepModule`)."""


class ModuleKeepingClassifyTrainer(KeepModule, ClassificationTrainer):
    """``ClassificationTrainer`` that trains the module it is given, with plug-ins (see :class:`KeepModule`)."""


PLUGINS: tuple[type[TrainerPlugin], ...] = (FeatureDistillation, SoftTargets, Sparsity)
"""Every plug-in, in the order they join a trainer (a new one is one entry here)."""
TRAINERS = {"detect": ModuleKeepingTrainer, "segment": ModuleKeepingSegmentTrainer, "pose": ModuleKeepingPoseTrainer,
            "obb": ModuleKeepingOBBTrainer, "classify": ModuleKeepingClassifyTrainer}
"""The one trainer of each Ultralytics task."""


def supports(trigger: str, task: str) -> bool:
    """Whether a plug-in switched on by ``trigger`` (``"teacher"``, ``"sparse_plan"``) serves ``task`` models."""
    return task in TRAINERS and any(p.trigger == trigger and p.serves(task) for p in PLUGINS)
