"""Stage 1, sparse training (network slimming): settings and maths. The trainer is ``patches.sparse``."""

from yolo_compress.sparse.settings import SparseSettings
from yolo_compress.sparse.slimming import (
    GammaStats,
    ShrinkSchedule,
    gamma_stats,
    prunable_batchnorms,
    save_gamma_histogram,
    soft_threshold_,
)

__all__ = [
    "GammaStats",
    "ShrinkSchedule",
    "SparseSettings",
    "gamma_stats",
    "prunable_batchnorms",
    "save_gamma_histogram",
    "soft_threshold_",
]
