"""Settings of the pruning stage."""

from __future__ import annotations

from dataclasses import dataclass

from yolo_compress.errors import CompressError
from yolo_compress.settings import Settings, positive, setting, unit_open

IMPORTANCES = ("bn_scale", "l2", "group_norm")
DEFAULT_SPEED_UP = 2.0  # the target when neither factor nor speed_up is given


def _above_one(v: float) -> bool:
    return v > 1


@dataclass(frozen=True)
class PruneSettings(Settings):
    """What to remove and how to rank channels.

    Give at most one target: ``factor`` (share of channels) or ``speed_up`` (GFLOPs before / after); with
    neither, the target is ``speed_up`` = 2.0. ``global_pruning`` unset means: global for ``bn_scale`` (network
    slimming's threshold on |gamma| across layers, which is what sparse training prepares), per layer for the
    magnitude criteria, whose scales differ between layers.
    """

    factor: float | None = setting(None, "share of prunable channels to remove, in (0, 1)", check=unit_open,
                                   must="in (0, 1), e.g. 0.5")
    speed_up: float | None = setting(None, f"GFLOPs ratio before/after to reach, > 1 (default target "
                                     f"{DEFAULT_SPEED_UP} when no factor is given)", check=_above_one,
                                     must="> 1 (GFLOPs before / after), e.g. 2.0")
    importance: str = setting("bn_scale", "channel ranking", choices=IMPORTANCES)
    global_pruning: bool | None = setting(None, "rank channels across layers (default: yes for bn_scale)")
    round_to: int = setting(8, "keep channel counts multiples of this", check=positive, must=">= 1")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factor is not None and self.speed_up is not None:
            raise CompressError("give factor (share of channels) or speed_up (GFLOPs ratio), not both")

    @property
    def target_speed_up(self) -> float | None:
        """The GFLOPs target to search for, ``None`` when pruning by ``factor``."""
        return None if self.factor is not None else (self.speed_up or DEFAULT_SPEED_UP)

    @property
    def is_global(self) -> bool:
        return self.importance == "bn_scale" if self.global_pruning is None else self.global_pruning
