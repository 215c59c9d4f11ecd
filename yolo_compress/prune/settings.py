"""Settings of the pruning stage."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from yolo_compress.errors import CompressError
from yolo_compress.settings import Settings, fraction, positive, setting, unit_open

IMPORTANCES = ("auto", "bn_scale", "l2", "group_norm")
DEFAULT_SPEED_UP = 2.0  # the target when neither factor nor speed_up is given
TARGET_KEYS = ("factor", "speed_up", "round_to", "head_ratio")  # what to remove: the part sparse training aims at too
# tasks whose head is kept whole when head_ratio is unset: with their inner convs cut like other layers the default
# was 14-17 (pose) and 0.8-1.0 (OBB) points of the task's mAP50-95 under (A) at 2x; kept whole, +1.8 (pose) and -0.3
# (OBB) on 3 paired seeds (benchmarks/results/accuracy.md, sections pose and obb; explorations xposehw, xobbhw)
HEAD_KEPT_WHOLE = frozenset({"pose", "obb"})


def _above_one(v: float) -> bool:
    return v > 1


@dataclass(frozen=True)
class PruneSettings(Settings):
    """What to remove and how to rank channels.

    Give at most one target: ``factor`` (share of channels) or ``speed_up`` (GFLOPs before / after); with
    neither, the target is ``speed_up`` = 2.0. The detection head's inner convs (the 3x3 convs of each box and
    class branch; the output convs, fixed by ``reg_max`` and ``nc``, always keep their widths) are pruned like any
    other layer when ``head_ratio`` is unset; ``head_ratio`` = r removes a share r of their channels first and then
    prunes the rest to the target; 0 keeps the head whole, as Torch-Pruning's YOLOv8 example does (the head is
    37% of YOLOv8n's GFLOPs at 10 classes, so the rest then has to lose much more), and is what an unset
    ``head_ratio`` means for pose and OBB heads (:data:`HEAD_KEPT_WHOLE`) and YOLO26 detectors' up to 2x (a
    family's ``head_whole``). ``importance="auto"`` ranks by BatchNorm scale (``bn_scale``) when sparse training has
    zeroed channels, else by group magnitude (``group_norm``): on a model that was not sparse-trained, |gamma|
    barely varies and says little.
    ``global_pruning`` unset means: global for ``bn_scale`` (network slimming's one threshold on |gamma| across
    layers, which takes exactly the zeroed channels), per layer for the magnitude criteria, whose scales differ
    between layers.
    """

    factor: float | None = setting(None, "share of prunable channels to remove, in (0, 1)", check=unit_open,
                                   must="in (0, 1), e.g. 0.5")
    speed_up: float | None = setting(None, f"GFLOPs ratio before/after to reach, > 1 (default target "
                                     f"{DEFAULT_SPEED_UP} when no factor is given)", check=_above_one,
                                     must="> 1 (GFLOPs before / after), e.g. 2.0")
    importance: str = setting("auto", "channel ranking (auto: bn_scale after sparse training, else group_norm)",
                              choices=IMPORTANCES)
    global_pruning: bool | None = setting(None, "rank channels across layers (default: yes for bn_scale)")
    round_to: int = setting(8, "keep channel counts multiples of this", check=positive, must=">= 1")
    head_ratio: float | None = setting(None, "detection head: share of its inner channels to remove first, then "
                                       "the rest is pruned to the target (0: the head is kept whole, as "
                                       "torch-pruning's YOLOv8 example does); unset: pruned like any other layer "
                                       "(pose and OBB heads, and YOLO26 detection heads up to 2x: kept "
                                       "whole, as measured)",
                                       check=fraction, must="in [0, 1), e.g. 0.5")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factor is not None and self.speed_up is not None:
            raise CompressError("give factor (share of channels) or speed_up (GFLOPs ratio), not both")

    @property
    def target_speed_up(self) -> float | None:
        """The GFLOPs target to search for, ``None`` when pruning by ``factor``."""
        return None if self.factor is not None else (self.speed_up or DEFAULT_SPEED_UP)

    def target(self) -> dict[str, float | int | None]:
        """The keys that say what to remove (:data:`TARGET_KEYS`), as sparse training needs them."""
        return {k: getattr(self, k) for k in TARGET_KEYS}

    def resolved(self, sparse_trained: bool, task: str = "detect",
                 head_whole: tuple[tuple[str, float], ...] = ()) -> PruneSettings:
        """Concrete criterion, scope and head share: ``auto``, an unset ``global_pruning`` and an unset
        ``head_ratio`` decided: 0 (head kept whole) for the tasks of :data:`HEAD_KEPT_WHOLE`, and for a task of
        ``head_whole`` (the model family's (task, largest speed-up) pairs, ``yolo_compress.families``) when the
        target is a speed-up up to that one; else the head's inner convs are pruned like other layers."""
        importance = self.importance
        if importance == "auto":
            importance = "bn_scale" if sparse_trained else "group_norm"
        is_global = importance == "bn_scale" if self.global_pruning is None else self.global_pruning
        up_to = dict(head_whole).get(task, 0.0)
        whole = self.head_ratio is None and (task in HEAD_KEPT_WHOLE or (self.target_speed_up or math.inf) <= up_to)
        head_ratio = 0.0 if whole else self.head_ratio
        return replace(self, importance=importance, global_pruning=is_global, head_ratio=head_ratio)
