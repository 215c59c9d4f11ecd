"""The pipeline's ``export`` stage: the final weights (distilled, else fine-tuned, else pruned) to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.deploy.export import check_format, export, exported_path
from yolo_compress.stage import Stage

FINAL = ("distill", "finetune", "prune")  # the first of these that runs is the final model


class ExportStage(Stage):
    """Export the final weights with Ultralytics, next to them (``<out>/distill.onnx``)."""

    name = "export"

    def enabled(self) -> bool:
        return self.ctx.config.run.export is not None

    def check(self, model: nn.Module) -> None:
        check_format(self.ctx.config.run.export)

    def final_stage(self) -> str:
        run = self.ctx.config.run
        on = {"distill": run.distill, "finetune": run.finetune, "prune": True}
        return next(s for s in FINAL if on[s])

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": done[self.final_stage()]}

    def outputs(self) -> dict[str, Path]:
        return {"file": exported_path(self.ctx.out / f"{self.final_stage()}.pt", self.ctx.config.run.export)}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "format": self.ctx.config.run.export}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        export(sources["weights"], self.ctx.config.run.export, self.ctx.imgsz)
        return {}
