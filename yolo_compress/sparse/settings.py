"""Settings of the sparse-training stage."""

from __future__ import annotations

from dataclasses import dataclass

from yolo_compress.settings import Settings, setting

PLAN_IMPORTANCES = ("group_norm", "l2")


def _zero_at(v: float) -> bool:
    return 0 < v <= 1


@dataclass(frozen=True)
class SparseSettings(Settings):
    """Which channels sparse training frees, and how fast.

    The channels are those the pruning target (``factor`` / ``speed_up`` / ``round_to`` of the prune settings)
    removes when each layer is ranked by ``sparse_importance``; their BatchNorm scale and shift shrink towards
    zero along the stage and are exactly zero from ``zero_at`` (share of the stage) on, so the rest of the network
    adapts before they are cut. Both are shares of the run, so nothing needs retuning when epochs, batch size or
    dataset size change.
    """

    sparse_importance: str = setting("group_norm", "per-layer ranking that picks the channels to free",
                                     choices=PLAN_IMPORTANCES)
    zero_at: float = setting(0.5, "share of the stage after which the freed channels are exactly zero",
                             check=_zero_at, must="in (0, 1]")
