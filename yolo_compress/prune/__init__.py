"""The `prune` stage: settings, the exact C2f swap, the criteria table and the DepGraph pruner."""

from yolo_compress.prune.c2f import C2fChunkFree, swap_c2f_
from yolo_compress.prune.pruner import PruneResult, plan_channels, prune_model
from yolo_compress.prune.settings import DEFAULT_SPEED_UP, IMPORTANCES, TARGET_KEYS, PruneSettings

__all__ = ["DEFAULT_SPEED_UP", "IMPORTANCES", "TARGET_KEYS", "C2fChunkFree", "PruneResult", "PruneSettings",
           "plan_channels", "prune_model", "swap_c2f_"]
