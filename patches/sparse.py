"""Sparse (network-slimming) training: the plug-in that frees the planned channels as the model trains.

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
from yolo_compress.patches.plugin import TrainerPlugin
from yolo_compress.sparse import SparseSettings, SparsityPull, gamma_stats, save_gamma_histogram

LOGGER = logging.getLogger(__name__)
HISTOGRAM_NAME = "bn_gamma_hist.png"
ZERO = 1e-2  # |gamma| below this shows as "zero" in the histogram's title


class Sparsity(TrainerPlugin):
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

    trigger = "sparse_plan"
    settings_cls = SparseSettings

    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        self.plan: dict[str, list[int]] = dict(trainer.args.sparse_plan or {})
        self.pull = SparsityPull(self.settings, self.plan)
        trainer.add_callback("on_train_start", self._start_schedule)
        trainer.add_callback("on_train_end", _write_histogram)

    def after_optimizer_step(self) -> None:
        """The sparsity update (:class:`~yolo_compress.sparse.SparsityPull`) on the live model and the EMA, which
        checkpoints hold."""
        t = self.trainer
        self.pull.step_([unwrap_model(t.model), *([t.ema.ema] if t.ema else [])], t.progress())

    def epoch_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Add the sparsity columns to ``results.csv`` and log them (once per epoch, rank 0)."""
        model, epoch = unwrap_model(self.trainer.model), self.trainer.epoch + 1
        if self.settings.sparse_method == "l1":
            gammas = [bn.weight.detach() for bn in prunable_batchnorms(model)]
            share = sum(int((g == 0).sum()) for g in gammas) / max(sum(g.numel() for g in gammas), 1)
            pulled = self.settings.l1_total * self.pull.progress
            LOGGER.info("sparsity epoch %d: L1 pull %.3f so far, %.1f%% of prunable scales at zero",
                        epoch, pulled, 100 * share)
            return {**metrics, "sparse/pulled": pulled, "sparse/zero": share}
        modules = dict(model.named_modules())
        freed = sum(len(c) for c in self.plan.values())
        zero = sum(int((modules[n].weight.detach()[c] == 0).sum()) for n, c in self.plan.items())
        share = zero / freed if freed else 0.0
        LOGGER.info("sparsity epoch %d: %d channels being freed, at %.0f%% of their magnitude, %.0f%% at zero",
                    epoch, freed, 100 * self.pull.kept, 100 * share)
        return {**metrics, "sparse/kept": self.pull.kept, "sparse/zero": share}

    def _start_schedule(self, trainer: Any) -> None:
        self.pull.resume_at(trainer.progress())


def _write_histogram(trainer: Any) -> None:
    """Histogram of the final (EMA) BatchNorm scales, ``save_dir/bn_gamma_hist.png``; never fails the run."""
    if RANK not in {-1, 0}:
        return
    model = trainer.ema.ema if getattr(trainer, "ema", None) else unwrap_model(trainer.model)
    try:
        save_gamma_histogram(model, trainer.save_dir / HISTOGRAM_NAME, ZERO)
        LOGGER.info("sparsity: %s", gamma_stats(model, ZERO))
    except (OSError, ValueError, RuntimeError) as e:  # a plot must never fail a finished training
        LOGGER.warning("could not write the BN gamma histogram: %s", e)
