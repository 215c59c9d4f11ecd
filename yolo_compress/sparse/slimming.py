"""Network slimming: a proximal L1 pull on BatchNorm scales, and the statistics that show it worked.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017, arXiv:1708.06519.
Training with ``loss + lambda * sum |gamma|`` drives the scales of unneeded channels to zero, so that ranking
channels by ``|gamma|`` (``BNScaleImportance``) removes channels that carry little signal and the accuracy right
after pruning drops less.

The penalty is applied as a proximal step after each optimizer step, ``gamma <- sign(gamma) * max(|gamma| - t, 0)``,
not as a subgradient added to the loss gradient: an adaptive optimizer (Ultralytics picks AdamW for short runs)
rescales a subgradient with the loss gradient, so a gamma would move at most ~lr per step whatever the
coefficient, while the proximal step lands on exact zeros under any optimizer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import nn

from yolo_compress.models import head_module_ids

LOGGER = logging.getLogger(__name__)

BatchNorms = Union[nn.Module, Iterable[nn.BatchNorm2d]]


def prunable_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """BatchNorm layers whose channels pruning may remove: all but those inside the output head.

    The head's widths are fixed (box bins, class count) and the pruner ignores it, so sparsifying its scales
    would only cost accuracy.
    """
    head = head_module_ids(model)
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine and id(m) not in head]


def _as_batchnorms(model_or_bns: BatchNorms) -> list[nn.BatchNorm2d]:
    """Accept a model (take its prunable BatchNorms) or an explicit iterable of BatchNorm layers."""
    if isinstance(model_or_bns, nn.Module):
        return prunable_batchnorms(model_or_bns)
    return list(model_or_bns)


@torch.no_grad()
def soft_threshold_(model_or_bns: BatchNorms, amount: float) -> int:
    """Proximal L1 step on BatchNorm scales, in place: ``gamma <- sign(gamma) * max(|gamma| - amount, 0)``.

    Args:
        model_or_bns: a model (its :func:`prunable_batchnorms`) or the BatchNorm layers themselves.
        amount: how far to pull each scale towards zero; 0 does nothing. Scales closer than that become 0.

    Returns:
        (int): number of scales that are exactly zero afterwards.
    """
    zeros = 0
    for bn in _as_batchnorms(model_or_bns):
        gamma = bn.weight
        if amount > 0:
            gamma.copy_(torch.sign(gamma) * (gamma.abs() - amount).clamp_(min=0))
        zeros += int((gamma == 0).sum())
    return zeros


class ShrinkSchedule:
    """Spread a total shrink evenly over a run: at progress ``p`` in [0, 1], ``total * p`` has been applied.

    ``due(p)`` returns what is owed since the last call, so the pull per optimizer step does not depend on how
    many steps there are (epochs, batch size, gradient accumulation, dataset size).

    Examples:
        >>> s = ShrinkSchedule(0.6)
        >>> s.due(0.5), s.due(0.5), s.due(1.0)
        (0.3, 0.0, 0.3)
    """

    def __init__(self, total: float, start: float = 0.0) -> None:
        self.total = float(total)
        self.applied = self.total * min(max(start, 0.0), 1.0)

    def due(self, progress: float) -> float:
        target = self.total * min(max(progress, 0.0), 1.0)
        amount = max(target - self.applied, 0.0)
        self.applied += amount
        return amount


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
