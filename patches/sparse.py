"""Sparse (network-slimming) training: the module-keeping trainer plus a proximal L1 pull on BatchNorm scales.

The maths (``soft_threshold_``, ``ShrinkSchedule``, statistics) is in ``yolo_compress.sparse``; this is the seam.
Checked against Ultralytics 8.4.190 (``BaseTrainer.save_metrics``, the ``on_train_start``/``on_train_end``
callbacks).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ultralytics.utils import RANK
from ultralytics.utils.torch_utils import unwrap_model

from yolo_compress.patches.trainers import KeepModule, ModuleKeepingClassifyTrainer, ModuleKeepingTrainer
from yolo_compress.sparse import (
    ShrinkSchedule,
    SparseSettings,
    gamma_stats,
    prunable_batchnorms,
    save_gamma_histogram,
    soft_threshold_,
)

LOGGER = logging.getLogger(__name__)
HISTOGRAM_NAME = "bn_gamma_hist.png"


class SparseTraining(KeepModule):
    """Train while pulling every prunable BatchNorm scale towards zero (Liu et al., arXiv:1708.06519).

    After each optimizer step (:meth:`after_optimizer_step`) the scales are soft-thresholded by the share of
    ``shrink`` that the run's progress makes due (:class:`~yolo_compress.sparse.ShrinkSchedule`), so the whole
    budget is spent by the last batch, whatever the optimizer, epochs or batch size. The EMA then follows.

    Settings (``SparseSettings``, passed as ``YOLO.train`` keywords and kept in ``self.args``): ``shrink``,
    ``gamma_threshold``. Each epoch adds the columns ``sparse/shrink`` (pull applied so far) and
    ``sparse/gamma_zero`` (share of scales below ``gamma_threshold``) to ``results.csv`` and logs them; at the
    end ``bn_gamma_hist.png`` (final EMA scales) is written to ``save_dir``.
    """

    settings_cls = SparseSettings

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._bns: list[torch.nn.BatchNorm2d] | None = None
        self._bns_of: int | None = None
        self.schedule = ShrinkSchedule(self.settings.shrink)
        self.add_callback("on_train_start", _start_schedule)
        self.add_callback("on_train_end", _write_histogram)

    def sparse_batchnorms(self) -> list[torch.nn.BatchNorm2d]:
        """Prunable BatchNorms of the trained module, found once per model object (the head is excluded)."""
        model = unwrap_model(self.model)
        if self._bns is None or self._bns_of != id(model):
            self._bns, self._bns_of = prunable_batchnorms(model), id(model)
        return self._bns

    def after_optimizer_step(self) -> None:
        """Soft-threshold the scales by what the schedule makes due at this point of the run."""
        soft_threshold_(self.sparse_batchnorms(), self.schedule.due(self.progress()))

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        """Append the sparsity columns to ``results.csv`` and log them (once per epoch, rank 0)."""
        stats = gamma_stats(self.sparse_batchnorms(), self.settings.gamma_threshold)
        LOGGER.info("sparsity epoch %d: pulled %.3f of %.3f, %.1f%% of %d BN scales below %g (mean |gamma| %.3f)",
                    self.epoch + 1, self.schedule.applied, self.schedule.total, 100 * stats.share_below, stats.n,
                    stats.threshold, stats.mean_abs)
        columns = {"sparse/shrink": self.schedule.applied, "sparse/gamma_zero": stats.share_below}
        super().save_metrics({**metrics, **columns})


def _start_schedule(trainer: SparseTraining) -> None:
    """On a resumed run, the share of the budget due at the resumed epoch was already applied."""
    trainer.schedule = ShrinkSchedule(trainer.settings.shrink, start=trainer.progress())


def _write_histogram(trainer: SparseTraining) -> None:
    """Histogram of the final (EMA) BatchNorm scales, ``save_dir/bn_gamma_hist.png``; never fails the run."""
    if RANK not in {-1, 0}:
        return
    model = trainer.ema.ema if getattr(trainer, "ema", None) else unwrap_model(trainer.model)
    try:
        save_gamma_histogram(model, trainer.save_dir / HISTOGRAM_NAME, trainer.settings.gamma_threshold)
    except (OSError, ValueError, RuntimeError) as e:  # a plot must never fail a finished training
        LOGGER.warning("could not write the BN gamma histogram: %s", e)


class SparseTrainer(SparseTraining, ModuleKeepingTrainer):
    """Sparse training of a detector."""


class SparseClassifyTrainer(SparseTraining, ModuleKeepingClassifyTrainer):
    """Sparse training of a classifier."""


TRAINERS = {"detect": SparseTrainer, "classify": SparseClassifyTrainer}
