"""The `sparse` stage (network slimming): settings and maths. The trainer is ``patches.sparse``."""

from yolo_compress.sparse.settings import SparseSettings
from yolo_compress.sparse.slimming import (
    GammaStats,
    SparsityPull,
    gamma_stats,
    save_gamma_histogram,
    scale_channels_,
    shrink_factor,
    soft_threshold_,
)

__all__ = [
    "GammaStats",
    "SparseSettings",
    "SparsityPull",
    "gamma_stats",
    "save_gamma_histogram",
    "scale_channels_",
    "shrink_factor",
    "soft_threshold_",
]
