"""Settings of the sparse-training stage."""

from __future__ import annotations

from dataclasses import dataclass

from yolo_compress.settings import Settings, non_negative, positive, setting


@dataclass(frozen=True)
class SparseSettings(Settings):
    """Network slimming by proximal L1 steps on the prunable BatchNorm scales.

    ``shrink`` is the total distance each scale is pulled towards zero over the whole stage, in |gamma| units,
    spread evenly over the training batches (the proximal step of an L1 penalty). It is a budget, not a rate, so
    it means the same whatever the epochs, batch size, dataset size or optimizer: a scale the loss does not
    defend by at least that much ends at exactly zero.
    """

    shrink: float = setting(0.5, "total L1 pull on each prunable BatchNorm scale over the stage, in |gamma| units",
                            check=non_negative, must=">= 0")
    gamma_threshold: float = setting(1e-2, "|gamma| below this counts as zero in the log and the histogram",
                                     check=positive, must="> 0")
