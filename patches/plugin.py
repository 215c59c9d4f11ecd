"""What a training feature (sparsity, distillation, ...) adds to the one module-keeping trainer of a task.

A plug-in is switched on by one key of the trainer's ``args`` (its ``trigger``: ``teacher``, ``sparse_plan``) and
carries its other settings there too, so ``resume`` (settings restored from the checkpoint) and the DDP launcher
(the trainer re-created from ``vars(args)``) rebuild the same run. It adds callbacks of its own in ``__init__`` and
joins the trainer at the few points Ultralytics gives no callback for: after the model is set up, when the
optimizer is built, around the optimizer step, when an epoch's metrics are written and before a checkpoint is
saved. Checked against Ultralytics 8.4.190 (``engine/trainer.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from yolo_compress.settings import Settings


class TrainerPlugin:
    """Base of every plug-in: every hook a no-op, so a plug-in writes only the ones it needs."""

    trigger: ClassVar[str]
    """The ``args`` key that switches the plug-in on (any value but ``None``)."""
    settings_cls: ClassVar[type[Settings] | None] = None
    """Its settings, read from ``args`` (checked, task defaults filled in by ``for_task`` where the class has it)."""
    extra_keys: ClassVar[tuple[str, ...]] = ()
    """Other ``args`` keys it reads (plain data)."""
    tasks: ClassVar[frozenset[str] | None] = None
    """The Ultralytics tasks it serves; ``None``: every task."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.settings: Any = None
        if self.settings_cls is not None:
            settings = self.settings_cls.from_args(trainer.args)
            self.settings = settings.for_task(trainer.args.task) if hasattr(settings, "for_task") else settings

    @classmethod
    def arg_defaults(cls) -> dict[str, Any]:
        """Every ``args`` key of this plug-in, with its default."""
        defaults = cls.settings_cls.defaults() if cls.settings_cls else {}
        return {cls.trigger: None, **dict.fromkeys(cls.extra_keys), **defaults}

    @classmethod
    def serves(cls, task: str) -> bool:
        return cls.tasks is None or task in cls.tasks

    def after_setup_model(self) -> None:
        """The model is built and on the training device; the optimizer is not."""

    def add_param_groups(self, optimizer: torch.optim.Optimizer, decay: float) -> None:
        """Add parameters the model does not hold (before the LR scheduler records the groups)."""

    def before_optimizer_step(self) -> None:
        """Gradients are unscaled (true units) and clipped; the step has not run."""

    def after_optimizer_step(self) -> None:
        """The optimizer step has run; the EMA has not seen it yet."""

    def epoch_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The epoch's row of ``results.csv``, with this plug-in's columns added."""
        return metrics

    def clean_for_save(self, ema: nn.Module) -> None:
        """Remove from the EMA whatever of the plug-in's it may carry, before a checkpoint holds it."""
