"""Run pruning: from ``PruneModel.prune`` and as the pipeline's ``prune`` stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import load_model, save_checkpoint
from yolo_compress.prune.pruner import PruneResult, prune_model
from yolo_compress.prune.settings import PruneSettings
from yolo_compress.stage import Command, Stage


def prune_to(model: nn.Module, imgsz: int, settings: PruneSettings, out: Path) -> tuple[nn.Module, PruneResult]:
    """Prune ``model`` and write the pruned checkpoint (with the numbers under ``"prune"``) to ``out``."""
    pruned, result = prune_model(model, imgsz, settings)
    save_checkpoint(pruned, out, prune=result.to_dict())
    return pruned, result


class PruneStage(Stage):
    """Prune the sparse model (or the baseline when sparse training is off)."""

    name = "prune"
    settings_cls = PruneSettings
    makes_weights = True
    follows = ("sparse", "baseline")
    command = Command("prune", "DepGraph channel pruning, head kept", "prune", save="prune")

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": self.start(done)}

    def check(self, model: nn.Module) -> None:
        """A speed-up target that cannot be reached fails now (a dry run on the baseline, seconds), not after
        sparse training."""
        settings = self.config.settings_of(PruneSettings)
        if settings.target_speed_up is not None:
            prune_model(model, self.ctx.imgsz, settings)

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        _, result = prune_to(load_model(sources["weights"]), self.ctx.imgsz, self.config.settings_of(PruneSettings),
                             self.outputs()["weights"])
        return {"prune": result.to_dict()}
