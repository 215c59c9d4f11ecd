"""Sparse (network-slimming) training: the module-keeping trainer, freeing the planned channels as it trains.

The maths (plan, shrink schedule, statistics) is in ``yolo_compress.sparse`` and ``yolo_compress.prune``; this is
the seam. Checked against Ultralytics 8.4.190 (``BaseTrainer.save_metrics``, the ``on_train_start``/``on_train_end``
callbacks).
"""

from __future__ import annotations

import logging
from typing import Any

from ultralytics.utils import RANK
from ultralytics.utils.torch_utils import unwrap_model

from yolo_compress.models import prunable_batchnorms
from yolo_compress.patches.distill import ClassifyDistillationTrainer, DistillationTrainer
from yolo_compress.patches.trainers import KeepModule, ModuleKeepingClassifyTrainer, ModuleKeepingTrainer
from yolo_compress.sparse import SparseSettings, SparsityPull, gamma_stats, save_gamma_histogram

LOGGER = logging.getLogger(__name__)
HISTOGRAM_NAME = "bn_gamma_hist.png"
ZERO = 1e-2  # |gamma| below this shows as "zero" in the histogram's title


class SparseTraining(KeepModule):
    """Train while the planned channels' BatchNorm scale and shift shrink to exactly zero (network slimming).

    With ``sparse_method="l1"`` every prunable BatchNorm scale gets the proximal L1 step instead: after each
    optimizer step, ``soft_threshold_`` by ``l1_total`` times the share of the run that step covered.

    ``sparse_plan`` (BatchNorm name -> channel indices, plain data in ``args``) comes from
    ``yolo_compress.prune.plan_channels``. After each optimizer step (:meth:`after_optimizer_step`) the planned
    parameters are scaled so their magnitude follows ``shrink_factor(progress, zero_at)`` (``SparsityPull``): the
    optimizer may move them in between, but from ``zero_at`` of the run on they are exactly zero, in the EMA too.

    Each epoch adds ``sparse/kept`` (the share of their magnitude the freed channels may still have) and
    ``sparse/zero`` (share of freed channels already at zero) to ``results.csv``; at the end ``bn_gamma_hist.png``
    (final EMA scales) is written to ``save_dir``.
    """

    settings_cls = SparseSettings
    extra_keys = ("sparse_plan",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sparse = self.settings_of(SparseSettings)
        self.plan: dict[str, list[int]] = dict(self.args.sparse_plan or {})
        self.pull = SparsityPull(self.sparse, self.plan)
        self.add_callback("on_train_start", _start_schedule)
        self.add_callback("on_train_end", _write_histogram)

    def after_optimizer_step(self) -> None:
        """The sparsity update (:class:`~yolo_compress.sparse.SparsityPull`) on the live model and the EMA, which
        checkpoints hold."""
        self.pull.step_([unwrap_model(self.model), *([self.ema.ema] if self.ema else [])], self.progress())

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        """Append the sparsity columns to ``results.csv`` and log them (once per epoch, rank 0)."""
        model = unwrap_model(self.model)
        if self.sparse.sparse_method == "l1":
            gammas = [bn.weight.detach() for bn in prunable_batchnorms(model)]
            share = sum(int((g == 0).sum()) for g in gammas) / max(sum(g.numel() for g in gammas), 1)
            pulled = self.sparse.l1_total * self.pull.progress
            LOGGER.info("sparsity epoch %d: L1 pull %.3f so far, %.1f%% of prunable scales at zero",
                        self.epoch + 1, pulled, 100 * share)
            super().save_metrics({**metrics, "sparse/pulled": pulled, "sparse/zero": share})
            return
        modules = dict(model.named_modules())
        freed = sum(len(c) for c in self.plan.values())
        zero = sum(int((modules[n].weight.detach()[c] == 0).sum()) for n, c in self.plan.items())
        share = zero / freed if freed else 0.0
        LOGGER.info("sparsity epoch %d: %d channels being freed, at %.0f%% of their magnitude, %.0f%% at zero",
                    self.epoch + 1, freed, 100 * self.pull.kept, 100 * share)
        super().save_metrics({**metrics, "sparse/kept": self.pull.kept, "sparse/zero": share})


def _start_schedule(trainer: SparseTraining) -> None:
    trainer.pull.resume_at(trainer.progress())


def _write_histogram(trainer: SparseTraining) -> None:
    """Histogram of the final (EMA) BatchNorm scales, ``save_dir/bn_gamma_hist.png``; never fails the run."""
    if RANK not in {-1, 0}:
        return
    model = trainer.ema.ema if getattr(trainer, "ema", None) else unwrap_model(trainer.model)
    try:
        save_gamma_histogram(model, trainer.save_dir / HISTOGRAM_NAME, ZERO)
        LOGGER.info("sparsity: %s", gamma_stats(model, ZERO))
    except (OSError, ValueError, RuntimeError) as e:  # a plot must never fail a finished training
        LOGGER.warning("could not write the BN gamma histogram: %s", e)


class SparseTrainer(SparseTraining, ModuleKeepingTrainer):
    """Sparse training of a detector."""


class SparseClassifyTrainer(SparseTraining, ModuleKeepingClassifyTrainer):
    """Sparse training of a classifier."""


class SparseDistillationTrainer(SparseTraining, DistillationTrainer):
    """Sparse training of a detector with a teacher (the unpruned model): while the freed channels shrink, the
    distillation losses (``DistillSettings``, ``teacher``) hold the student's outputs to the teacher's."""


class SparseClassifyDistillationTrainer(SparseTraining, ClassifyDistillationTrainer):
    """Sparse training of a classifier with soft targets from a teacher."""


TRAINERS = {"detect": SparseTrainer, "classify": SparseClassifyTrainer}
TEACHER_TRAINERS = {"detect": SparseDistillationTrainer, "classify": SparseClassifyDistillationTrainer}
