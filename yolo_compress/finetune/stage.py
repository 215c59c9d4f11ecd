"""Plain training with the architecture kept: the baseline (from a model yaml) and the fine-tuning after pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import load_model
from yolo_compress.dataset import Dataset
from yolo_compress.models import build_from_yaml
from yolo_compress.stage import Command, PipelineConfig, TrainingStage
from yolo_compress.training import Fit, fit
from yolo_compress.validation import validate


def train_model(model: nn.Module, data: Dataset, out: Path, args: dict[str, Any], resume: bool = False,
                require_resume: bool = False) -> Fit:
    """Train ``model`` as it is (a pruned network keeps its widths); save the best weights to ``out``."""
    from yolo_compress.patches.trainers import TRAINERS

    return fit(model, TRAINERS[data.task], out, data, args, resume=resume, require_resume=require_resume)


class BaselineStage(TrainingStage):
    """The model to compress: the user's weights as they are, or a model trained from ``config.model``."""

    name = "baseline"
    default_epochs = 25
    share = 0.0
    recovers = False  # it trains from a yaml, from scratch: Ultralytics' own optimizer choice

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        weights = self.ctx.config.run.weights
        return {"weights": Path(weights)} if weights is not None else {}

    def outputs(self) -> dict[str, Path]:
        weights = self.ctx.config.run.weights
        return {"weights": Path(weights)} if weights is not None else super().outputs()

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        if c.run.weights is not None:
            return {"imgsz": self.ctx.imgsz}
        return {**super().fingerprint(), "model": c.run.model}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        c, data = self.config, self.ctx.data
        if c.run.weights is not None:
            return {"metrics": validate(sources["weights"], data, self.ctx.imgsz)}
        out = self.outputs()["weights"]
        model = build_from_yaml(c.run.model, data, seed=c.train_args.get("seed", 0))
        result = train_model(model, data, out, self.ultralytics_args(), resume)
        return {"metrics": result.metrics}


class FinetuneStage(TrainingStage):
    """Fine-tune the pruned model without a teacher: the final weights without distillation, or (``reference``) the
    reference a distillation recipe must beat, trained beside it on the same epochs."""

    name = "finetune"
    switch = True
    command = Command("train", "train or fine-tune, keeping the model's exact architecture", "train", save="retrain")
    follows = ("prune",)

    @classmethod
    def enabled(cls, config: PipelineConfig) -> bool:
        """On (its switch) where it leads to the final weights; beside distillation only as the asked-for reference
        (``reference``): the default run trains nothing whose weights it does not keep."""
        run = config.run
        leads = not config.is_on("distill") or run.distill_from == "finetune"
        return super().enabled(config) and (leads or run.reference)

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": self.start(done)}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        out = self.outputs()["weights"]
        result = train_model(load_model(sources["weights"]), self.ctx.data, out, self.ultralytics_args(), resume)
        return {"metrics": result.metrics}
