"""Run distillation: from ``PruneModel.distill`` and as the pipeline's ``distill`` stage."""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Collection
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import load_model
from yolo_compress.dataset import Dataset
from yolo_compress.distill.settings import DistillSettings
from yolo_compress.distill.teacher import Teacher
from yolo_compress.errors import CompressError
from yolo_compress.stage import Command, PipelineConfig, TrainingStage
from yolo_compress.training import Fit, fit


def distill(model: nn.Module, teacher: Teacher, data: Dataset, out: Path, args: dict[str, Any],
            resume: bool = False, require_resume: bool = False, take: str = "best") -> Fit:
    """Train ``model`` with ``teacher``'s guidance; save the ``take`` (best or last) weights, the student alone, to
    ``out``."""
    from yolo_compress.patches.trainers import TRAINERS, supports

    if not supports("teacher", data.task):
        raise CompressError(f"distillation of {data.task} models is not supported")
    return fit(model, TRAINERS[data.task], out, data, {**args, **teacher.trainer_args()}, resume=resume,
               require_resume=require_resume, take=take)


class DistillStage(TrainingStage):
    """Distil the pruned model from the unpruned baseline (the sparse model has already lost its freed channels) or
    from the ``teacher`` the run names."""

    name = "distill"
    settings_cls = DistillSettings
    switch = True
    follows = ("prune",)
    command = Command("distill", "fine-tune the student with a teacher (CWD, MGD, logit KD)", "distill", save="distill")

    @classmethod
    def add_command_arguments(cls, parser: ArgumentParser) -> None:
        super().add_command_arguments(parser)
        parser.add_argument("--teacher", required=True, help="teacher .pt (the unpruned model)")

    @classmethod
    def starts_from(cls, config: PipelineConfig, running: Collection[str]) -> str | None:
        """The pruned weights, or the fine-tuned ones with ``distill_from: finetune`` (when fine-tuning runs)."""
        if config.run.distill_from == "finetune" and "finetune" in running:
            return "finetune"
        return super().starts_from(config, running)

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        """The start weights and the teacher: ``teacher`` when set, else the unpruned baseline."""
        teacher = self.config.run.teacher
        return {"weights": self.start(done), "teacher": Path(teacher) if teacher else done["baseline"]}

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "distill_from": self.config.run.distill_from}

    def check(self, model: nn.Module) -> None:
        from yolo_compress.distill.distiller import hooked_layer_names
        from yolo_compress.patches.trainers import supports

        if not supports("teacher", self.ctx.data.task):
            raise CompressError(f"distillation of {self.ctx.data.task} models is not supported; set distill: false "
                                "(--no-distill)")
        settings = self.config.settings_of(DistillSettings)
        if settings.for_task(self.ctx.data.task).feature:
            hooked_layer_names(model, settings.distill_layers)
        if self.config.run.teacher:
            self.teacher(Path(self.config.run.teacher))

    def teacher(self, path: Path) -> Teacher:
        """The run's teacher at ``path``, checked against its data."""
        data = self.ctx.data
        return Teacher.checked(path, data.task, data.nc, self.config.settings_of(DistillSettings), self.ctx.imgsz)

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        result = distill(load_model(sources["weights"]), self.teacher(sources["teacher"]), self.ctx.data,
                         self.outputs()["weights"], self.ultralytics_args(), resume=resume)
        return {"metrics": result.metrics}
