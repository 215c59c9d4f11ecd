"""Sparse (network-slimming) training: ``ModuleKeepingTrainer`` plus an L1 pull on BatchNorm scales.

Checked against Ultralytics 8.4.190 (``BaseTrainer.optimizer_step`` and ``save_metrics`` in
``ultralytics/engine/trainer.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ultralytics.utils import RANK
from ultralytics.utils.torch_utils import TORCH_2_0, unwrap_model

from yolo_compress.pruning.sparsity import (
    DEFAULT_THRESHOLD,
    bn_l1_,
    gamma_stats,
    linear_sr,
    prunable_batchnorms,
    save_gamma_histogram,
)

from .trainers import ModuleKeepingTrainer

LOGGER = logging.getLogger(__name__)

HISTOGRAM_NAME = "bn_gamma_hist.png"


class SparseTrainer(ModuleKeepingTrainer):
    """Train with ``loss + sr * sum |gamma|`` over the prunable BatchNorm scales (Liu et al., arXiv:1708.06519).

    The L1 subgradient is added once per optimizer step, after ``scaler.unscale_`` and gradient clipping and
    before ``scaler.step``: the term is then in true gradient units whether AMP scales the loss or not, gradient
    accumulation does not multiply it, and the max-norm-10 clipping (meant for loss spikes) never shrinks it.

    Extra settings (pass them to ``YOLO(...).train(trainer=SparseTrainer, sr=..., ...)``):

    * ``sr`` (default 5e-3): L1 coefficient, in the units of the gradient of Ultralytics' loss (which is summed
      over the batch, so gradients accumulated over ``nbs=64`` images are ~8x those of one batch of 8).
      Measured on YOLOv8n early in training (shapes set, batch 8): median |dL/dgamma| 6-8e-4 per 8 images,
      so ~5e-3 per 64. An ``sr`` at that median pulls down the scales of the channels the loss uses least and
      leaves the busier half to the loss. 1e-2 sparsifies faster at a larger mAP cost; 1e-3 barely moves the
      scales in a short run. With a smaller ``nbs`` the same ``sr`` weighs relatively more.
    * ``sr_final`` (default None): if set, ``sr`` decays linearly to it over the epochs (per epoch).
    * ``sr_threshold`` (default 1e-2): |gamma| below it counts as sparse in the per-epoch log and results.csv.

    Each epoch adds the columns ``sparse/sr`` and ``sparse/gamma_below`` (share of scales under the threshold)
    to ``results.csv`` and logs them; at the end ``bn_gamma_hist.png`` is written to ``save_dir``.
    """

    extra_args: dict[str, Any] = {"sr": 5e-3, "sr_final": None, "sr_threshold": DEFAULT_THRESHOLD}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if float(self.args.sr) < 0 or (self.args.sr_final is not None and float(self.args.sr_final) < 0):
            raise ValueError(f"sparsity rates must be >= 0, got sr={self.args.sr}, sr_final={self.args.sr_final}")
        self._bns: list[torch.nn.BatchNorm2d] | None = None
        self._bns_of: int | None = None

    @property
    def current_sr(self) -> float:
        """The sparsity rate of the running epoch (constant, or linearly decayed to ``sr_final``)."""
        sr_final = None if self.args.sr_final is None else float(self.args.sr_final)
        return linear_sr(float(self.args.sr), sr_final, int(getattr(self, "epoch", 0)), int(self.epochs))

    def sparse_batchnorms(self) -> list[torch.nn.BatchNorm2d]:
        """Prunable BatchNorms of the trained module, found once per model object (the head is excluded)."""
        model = unwrap_model(self.model)
        if self._bns is None or self._bns_of != id(model):
            self._bns, self._bns_of = prunable_batchnorms(model), id(model)
        return self._bns

    def optimizer_step(self) -> None:
        """``BaseTrainer.optimizer_step`` with the L1 subgradient added between unscaling/clipping and the step."""
        self.scaler.unscale_(self.optimizer)  # unscale gradients
        if self.device.type == "npu" and TORCH_2_0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0, foreach=False)
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        bn_l1_(self.sparse_batchnorms(), self.current_sr)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema:
            self.ema.update(self.model)

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        """Append the sparsity columns to ``results.csv`` and log them (called once per epoch on rank 0)."""
        threshold = float(self.args.sr_threshold)
        stats = gamma_stats(self.sparse_batchnorms(), threshold)
        LOGGER.info(
            "sparsity epoch %d: sr=%.3g, %.1f%% of %d BN scales below %g (mean |gamma| %.3f)",
            self.epoch + 1, self.current_sr, 100 * stats.share_below, stats.n, threshold, stats.mean_abs,
        )
        super().save_metrics({**metrics, "sparse/sr": self.current_sr, "sparse/gamma_below": stats.share_below})

    def final_eval(self) -> None:
        """Validate ``best.pt`` as usual, then write the histogram of the final (EMA) scales to ``save_dir``.

        An override, not an ``on_train_end`` callback: ``YOLO.train`` shares its callback dict with every trainer
        it creates, so a callback added here would also fire in a later, non-sparse training of the same object.
        """
        super().final_eval()
        if RANK in {-1, 0}:
            self._write_histogram()

    def _write_histogram(self) -> None:
        """Histogram of the final (EMA) BatchNorm scales, ``save_dir/bn_gamma_hist.png``."""
        model = self.ema.ema if getattr(self, "ema", None) else unwrap_model(self.model)
        try:
            save_gamma_histogram(model, self.save_dir / HISTOGRAM_NAME, float(self.args.sr_threshold))
        except (OSError, ValueError, RuntimeError) as e:  # a plot must never fail a finished training
            LOGGER.warning("could not write the BN gamma histogram: %s", e)
