"""Network slimming and DepGraph channel pruning of YOLOv8.

``c2f`` makes YOLOv8 prunable (exact chunk-free C2f), ``sparsity`` holds the BatchNorm-L1 math used by
``yolo_compress.patches.sparse.SparseTrainer``, ``pruner`` runs Torch-Pruning's DepGraph with the head ignored.
"""

from yolo_compress.pruning.c2f import C2fChunkFree, swap_c2f_
from yolo_compress.pruning.pruner import IMPORTANCES, PruneResult, count_gflops, count_params, prune_detector
from yolo_compress.pruning.sparsity import (
    DEFAULT_THRESHOLD,
    GammaStats,
    bn_l1_,
    gamma_stats,
    linear_sr,
    prunable_batchnorms,
    save_gamma_histogram,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "IMPORTANCES",
    "C2fChunkFree",
    "GammaStats",
    "PruneResult",
    "bn_l1_",
    "count_gflops",
    "count_params",
    "gamma_stats",
    "linear_sr",
    "prunable_batchnorms",
    "prune_detector",
    "save_gamma_histogram",
    "swap_c2f_",
]
