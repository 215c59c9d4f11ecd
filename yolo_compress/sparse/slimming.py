"""Network slimming in short runs: free the channels pruning will remove, gradually, while the rest adapts.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017, arXiv:1708.06519,
drives BatchNorm scales of unneeded channels to zero with an L1 penalty over a long training, so that cutting
them afterwards costs little. In the few epochs a compression pipeline affords, an L1 pull cannot tell channels
apart: Ultralytics' AdamW moves a scale by at most ~lr per step, so a pull strong enough to reach zero flattens
every channel alike (measured: all mAP gone), and a weaker one zeroes nothing (pruning then costs all mAP).

So the channels are chosen first, as the pruner would with a magnitude criterion per layer (DepGraph groups, so
coupled channels go together), and only their BatchNorm scale *and* shift are shrunk, a growing decay in the spirit
of growing regularisation (Wang et al., ICLR 2021, arXiv:2012.09243): by ``zero_at`` of the stage both are exactly
zero, the channel outputs SiLU(0) = 0, and the network has trained without it. BN-scale pruning then removes
exactly these channels and the mAP right after pruning equals the sparse model's.

The published L1 pull stays available (``sparse_method="l1"``, :func:`soft_threshold_`) for long sparse runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import nn

from yolo_compress.models import prunable_batchnorms
from yolo_compress.sparse.settings import SparseSettings

LOGGER = logging.getLogger(__name__)

BatchNorms = Union[nn.Module, Iterable[nn.BatchNorm2d]]


def _as_batchnorms(model_or_bns: BatchNorms) -> list[nn.BatchNorm2d]:
    """Accept a model (take its prunable BatchNorms) or an explicit iterable of BatchNorm layers."""
    if isinstance(model_or_bns, nn.Module):
        return prunable_batchnorms(model_or_bns)
    return list(model_or_bns)


def shrink_factor(progress: float, zero_at: float) -> float:
    """Share of their starting magnitude the freed channels may keep at ``progress``: 1 -> 0 linearly at ``zero_at``."""
    return max(0.0, 1.0 - min(max(progress, 0.0), 1.0) / zero_at)


@torch.no_grad()
def scale_channels_(model: nn.Module, plan: dict[str, list[int]], ratio: float) -> int:
    """Multiply the scale and shift of the planned channels by ``ratio`` in place (0 sets them to exactly zero).

    Args:
        model: the network; ``plan`` names its BatchNorm layers as ``model.named_modules()`` does.
        plan: BatchNorm name -> channel indices to free.
        ratio: the factor, in [0, 1].

    Returns:
        (int): number of channels touched.
    """
    modules = dict(model.named_modules())
    count = 0
    for name, channels in plan.items():
        bn, idx = modules[name], torch.as_tensor(channels, dtype=torch.long)
        for p in (bn.weight, bn.bias):
            p[idx] = p[idx] * ratio if ratio > 0 else 0.0
        count += len(channels)
    return count


@torch.no_grad()
def soft_threshold_(model_or_bns: BatchNorms, amount: float) -> None:
    """The proximal step of an L1 penalty on BatchNorm scales (ISTA): |gamma| shrinks by ``amount``, stopping at
    exactly zero. Applied after the optimizer step, it does not depend on how the optimizer rescales gradients.
    """
    for bn in _as_batchnorms(model_or_bns):
        bn.weight.copy_(bn.weight.sign() * (bn.weight.abs() - amount).clamp_min(0))


class SparsityPull:
    """The sparsity update after each optimizer step, for one run (the trainer calls :meth:`step_`).

    ``plan``: shrink the planned channels so their magnitude follows ``shrink_factor(progress, zero_at)`` (exactly
    zero from ``zero_at`` on, whatever the optimizer did in between); ``l1``: soft-threshold every prunable scale by
    ``l1_total`` times the share of the run since the last step.

    Args:
        settings: the stage's settings.
        plan: BatchNorm name -> channel indices to free (``plan`` method).
    """

    def __init__(self, settings: SparseSettings, plan: dict[str, list[int]]) -> None:
        self.settings, self.plan = settings, plan
        self.kept, self.progress = 1.0, 0.0

    def resume_at(self, progress: float) -> None:
        """A resumed run's channels are already as small as the schedule wanted at ``progress``."""
        self.progress, self.kept = progress, shrink_factor(progress, self.settings.zero_at)

    @torch.no_grad()
    def step_(self, models: list[nn.Module], progress: float) -> None:
        """Apply the update for the run having reached ``progress`` to each of ``models`` (the live one, its EMA)."""
        if self.settings.sparse_method == "l1":
            amount = self.settings.l1_total * max(progress - self.progress, 0.0)
            for model in models:
                soft_threshold_(model, amount)
        else:
            kept = shrink_factor(progress, self.settings.zero_at)
            ratio = kept / self.kept if self.kept > 0 else 0.0
            for model in models:
                scale_channels_(model, self.plan, ratio)
            self.kept = kept
        self.progress = progress


@dataclass(frozen=True)
class GammaStats:
    """Summary of |gamma| over the prunable BatchNorm layers.

    Attributes:
        n: number of scales (channels).
        threshold: the threshold ``share_below`` counts against.
        share_below: share of channels with ``|gamma| < threshold``.
        mean_abs: mean of |gamma|.
        median_abs: median of |gamma|.
    """

    n: int
    threshold: float
    share_below: float
    mean_abs: float
    median_abs: float


def _abs_gammas(model_or_bns: BatchNorms) -> torch.Tensor:
    bns = _as_batchnorms(model_or_bns)
    if not bns:
        return torch.zeros(0)
    return torch.cat([bn.weight.detach().abs().flatten().float().cpu() for bn in bns])


def gamma_stats(model_or_bns: BatchNorms, threshold: float) -> GammaStats:
    """Share of BatchNorm scales below ``threshold`` and their mean/median: the per-epoch sparsity read-out."""
    g = _abs_gammas(model_or_bns)
    if g.numel() == 0:
        return GammaStats(0, threshold, 0.0, 0.0, 0.0)
    return GammaStats(n=g.numel(), threshold=threshold, share_below=float((g < threshold).float().mean()),
                      mean_abs=float(g.mean()), median_abs=float(g.median()))


def save_gamma_histogram(model_or_bns: BatchNorms, path: str | Path, threshold: float,
                         title: str | None = None) -> Path:
    """Write a histogram PNG of |gamma| (log-count axis, threshold marked) to ``path`` and return it.

    The picture answers "did sparse training work": a healthy run shows a second mode piling up at zero.
    Uses matplotlib's Agg canvas explicitly, so it works headless and never changes the global backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = _abs_gammas(model_or_bns).numpy()
    stats = gamma_stats(model_or_bns, threshold)
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if g.size:
        ax.hist(g, bins=100, color="tab:blue")
        ax.set_yscale("log")
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("|BatchNorm gamma|")
    ax.set_ylabel("channels")
    ax.set_title(title or f"{stats.n} channels, {stats.share_below:.1%} below {threshold:g}")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
