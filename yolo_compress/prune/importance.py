"""Channel-ranking criteria: name -> Torch-Pruning importance. The pruner only calls them."""

from __future__ import annotations

import torch_pruning as tp

from yolo_compress.errors import CompressError
from yolo_compress.prune.settings import IMPORTANCES


def importance(name: str) -> tp.importance.Importance:
    """The Torch-Pruning importance for ``name`` (one pruner class serves all: their own ``regularize`` is never
    used, sparse training is ``yolo_compress.sparse``'s).

    * ``bn_scale``: mean |gamma| over the BatchNorms of a channel group (network slimming, arXiv:1708.06519),
      not normalised per group (``normalizer=None``): with global pruning, one |gamma| threshold across layers,
      as slimming prescribes. Torch-Pruning's default divides each group by its mean, which would rank a
      channel against its own layer only.
    * ``l2``: L2 norm of the root conv's filters only (Li et al., arXiv:1608.08710), the classic criterion.
    * ``group_norm``: L2 norm over every coupled layer of the group, mean-normalised (DepGraph's criterion,
      Torch-Pruning's default ``GroupMagnitudeImportance``).

    Raises:
        CompressError: an unknown name.
    """
    if name == "bn_scale":
        return tp.importance.BNScaleImportance(normalizer=None)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="first")
    if name == "group_norm":
        return tp.importance.GroupMagnitudeImportance(p=2)
    raise CompressError(f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCES)}")
