"""Network-slimming sparsity: an L1 pull on BatchNorm scales, and the statistics that show it worked.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017,
arXiv:1708.06519. Training with ``loss + sr * sum |gamma|`` drives the scales of unneeded channels towards
zero, so that ranking channels by ``|gamma|`` (``BNScaleImportance``) removes channels that carry little signal
and the accuracy right after pruning drops less.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)

# |gamma| below this counts as "pruned in all but name" in the per-epoch log: YOLOv8 BN scales start at 1.0,
# and a channel scaled by < 1e-2 contributes about 1% of a typical channel through the following SiLU.
DEFAULT_THRESHOLD = 1e-2

BatchNorms = Union[nn.Module, Iterable[nn.BatchNorm2d]]


def _head_modules(model: nn.Module) -> set[int]:
    """Ids of every module inside a detection head (``Detect`` and subclasses), which is never pruned."""
    from ultralytics.nn.modules.head import Detect

    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, Detect):
            ids.update(id(m) for m in module.modules())
    return ids


def prunable_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """BatchNorm layers whose output channels channel pruning may remove: all except those of the Detect head.

    The head's convs keep their widths (box/class outputs are fixed by ``reg_max`` and ``nc``, and the pruner
    ignores the whole head), so sparsifying their scales would only cost accuracy.
    """
    head = _head_modules(model)
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine and id(m) not in head]


def _as_batchnorms(model_or_bns: BatchNorms) -> list[nn.BatchNorm2d]:
    """Accept a model (take its prunable BatchNorms) or an explicit iterable of BatchNorm layers."""
    if isinstance(model_or_bns, nn.Module):
        return prunable_batchnorms(model_or_bns)
    return list(model_or_bns)


@torch.no_grad()
def bn_l1_(model_or_bns: BatchNorms, sr: float) -> int:
    """Add the L1 subgradient ``sr * sign(gamma)`` to the gradient of every BatchNorm scale, in place.

    Call it between ``backward()`` (after AMP unscaling) and ``optimizer.step()``: then the term is the gradient
    of ``sr * sum |gamma|`` in true, unscaled units, whatever the loss scale. A scale without a gradient yet
    (``.grad is None``) gets the term alone; frozen scales (``requires_grad=False``) are skipped.

    Args:
        model_or_bns: a model (its :func:`prunable_batchnorms` are used) or the BatchNorm layers themselves.
        sr: sparsity rate, the L1 coefficient; 0 does nothing.

    Returns:
        (int): number of BatchNorm layers that received the term.
    """
    if sr == 0:
        return 0
    count = 0
    for bn in _as_batchnorms(model_or_bns):
        gamma = bn.weight
        if gamma is None or not gamma.requires_grad:
            continue
        term = torch.sign(gamma).mul_(sr)
        if gamma.grad is None:
            gamma.grad = term
        else:
            gamma.grad.add_(term.to(gamma.grad.dtype))
        count += 1
    return count


def linear_sr(sr: float, sr_final: float | None, epoch: int, epochs: int) -> float:
    """Sparsity rate for ``epoch`` (0-based): constant ``sr``, or linear from ``sr`` to ``sr_final`` over the run.

    A decaying rate lets the last epochs recover accuracy while the scales already pushed to zero stay small.
    """
    if sr_final is None or epochs <= 1:
        return float(sr)
    t = min(max(epoch / (epochs - 1), 0.0), 1.0)
    return float(sr + (sr_final - sr) * t)


@dataclass(frozen=True)
class GammaStats:
    """Summary of BatchNorm scales |gamma| over the prunable layers.

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


def gamma_stats(model_or_bns: BatchNorms, threshold: float = DEFAULT_THRESHOLD) -> GammaStats:
    """Share of BatchNorm scales below ``threshold`` and their mean/median: the per-epoch sparsity read-out."""
    g = _abs_gammas(model_or_bns)
    if g.numel() == 0:
        return GammaStats(0, threshold, 0.0, 0.0, 0.0)
    return GammaStats(
        n=g.numel(),
        threshold=threshold,
        share_below=float((g < threshold).float().mean()),
        mean_abs=float(g.mean()),
        median_abs=float(g.median()),
    )


def save_gamma_histogram(
    model_or_bns: BatchNorms, path: str | Path, threshold: float = DEFAULT_THRESHOLD, title: str | None = None
) -> Path:
    """Write a histogram PNG of |gamma| (log-count axis, threshold marked) to ``path`` and return it.

    The picture answers "did sparse training work": a healthy run shows a second mode piling up near zero.
    Uses matplotlib's Agg backend explicitly, so it works headless and never changes the global backend.
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
    LOGGER.info("BN gamma histogram written to %s", path)
    return path
