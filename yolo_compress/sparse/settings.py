"""Settings of the sparse-training stage."""

from __future__ import annotations

from dataclasses import dataclass

from yolo_compress.settings import Settings, non_negative, setting

PLAN_IMPORTANCES = ("group_norm", "l2")
METHODS = ("plan", "l1")


def _zero_at(v: float) -> bool:
    return 0 < v <= 1


@dataclass(frozen=True)
class SparseSettings(Settings):
    """Which channels sparse training frees, and how fast.

    ``plan`` (default): the channels are those the pruning target (``factor`` / ``speed_up`` / ``round_to`` of the
    prune settings) removes when each layer is ranked by ``sparse_importance``; their BatchNorm scale and shift
    shrink towards zero along the stage and are exactly zero from ``zero_at`` (share of the stage) on, so the rest
    of the network adapts before they are cut. Both are shares of the run, so nothing needs retuning when epochs,
    batch size or dataset size change.

    ``l1``: network slimming as published (Liu et al., 2017): every prunable BatchNorm scale is pulled towards zero
    by a proximal L1 step after each optimizer step (a soft threshold, so it reaches exactly zero under SGD and
    AdamW alike), ``l1_total`` over the whole stage; pruning then cuts the smallest scales globally. It needs long
    sparse runs to separate channels (see ``benchmarks/results/accuracy_notes.md``).
    """

    sparse_method: str = setting("plan", "plan: free the channels pruning will remove; l1: L1 pull on every scale",
                                 choices=METHODS)
    sparse_importance: str = setting("group_norm", "per-layer ranking that picks the channels to free",
                                     choices=PLAN_IMPORTANCES)
    zero_at: float = setting(0.5, "share of the stage after which the freed channels are exactly zero",
                             check=_zero_at, must="in (0, 1]")
    sparse_distill: bool = setting(False, "distil from the unpruned model while training sparse (with the distill "
                                   "stage's losses and settings)")
    l1_total: float = setting(0.5, "l1: how far each |gamma| is pulled towards 0 over the whole stage",
                              check=non_negative, must=">= 0")
