"""Channel-ranking criteria: name -> (Torch-Pruning importance, pruner class). The pruner only calls them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch_pruning as tp

from yolo_compress.errors import CompressError
from yolo_compress.prune.settings import IMPORTANCES


def importance_and_pruner(name: str) -> tuple[Callable[[Any], Any], type]:
    """The Torch-Pruning importance for ``name`` and the pruner class that matches it.

    * ``bn_scale``: mean |gamma| over the BatchNorms of a channel group (network slimming, arXiv:1708.06519),
      not normalised per group (``normalizer=None``): with global pruning, one |gamma| threshold across layers,
      as slimming prescribes. Torch-Pruning's default divides each group by its mean, which would rank a
      channel against its own layer only.
    * ``l2``: L2 norm of the root conv's filters only (Li et al., arXiv:1608.08710), the classic criterion.
    * ``group_norm``: L2 norm over every coupled layer of the group, mean-normalised (DepGraph's criterion).

    Raises:
        CompressError: an unknown name.
    """
    if name == "bn_scale":
        return tp.importance.BNScaleImportance(normalizer=None), tp.pruner.BNScalePruner
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="first"), tp.pruner.BasePruner
    if name == "group_norm":
        return tp.importance.GroupMagnitudeImportance(p=2), tp.pruner.GroupNormPruner
    raise CompressError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCES)}")
