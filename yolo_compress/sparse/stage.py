"""Run sparse training: from ``PruneModel.sparse_train`` and as the pipeline's ``sparse`` stage.

Sparse training frees the channels the pruning target will remove, so it asks the pruner for its plan
(``yolo_compress.prune.plan_channels``), and with ``sparse_distill`` it learns from distillation's ``Teacher``: the
one place where an earlier stage uses later ones' code.
"""

from __future__ import annotations

import logging
from argparse import ArgumentParser
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import atomic_write_bytes, load_model
from yolo_compress.dataset import Dataset
from yolo_compress.distill.settings import DistillSettings
from yolo_compress.distill.teacher import Teacher
from yolo_compress.errors import CompressError
from yolo_compress.prune import TARGET_KEYS, PruneSettings, plan_channels, swap_c2f_
from yolo_compress.sparse.settings import SparseSettings
from yolo_compress.stage import Command, TrainingStage
from yolo_compress.training import Fit, fit

LOGGER = logging.getLogger(__name__)


def sparse_train(model: nn.Module, data: Dataset, out: Path, settings: SparseSettings, target: PruneSettings,
                 imgsz: int, args: dict[str, Any], resume: bool = False, require_resume: bool = False,
                 teacher: Teacher | None = None) -> Fit:
    """Free the channels ``target`` would prune while training (or pull every scale, ``sparse_method="l1"``);
    save the final weights to ``out``.

    ``teacher`` (with ``sparse_distill``): the student also learns from it while its channels are freed.

    The C2f blocks are swapped for their exact chunk-free twins first (what pruning does too), so the plan names
    the layers of the trained network. The final epoch is kept (its freed channels are exactly zero), not the
    best-validating one. The |gamma| histogram is copied next to ``out`` (``sparse.pt`` ->
    ``sparse_bn_gamma_hist.png``).
    """
    from yolo_compress.patches.sparse import HISTOGRAM_NAME
    from yolo_compress.patches.trainers import TRAINERS

    model = deepcopy(model)
    swap_c2f_(model)
    plan: dict[str, list[int]] = {}
    if settings.sparse_method == "plan":
        plan, result = plan_channels(model, imgsz, replace(target, importance=settings.sparse_importance,
                                                           global_pruning=False))
        LOGGER.info("sparse training frees %d channels in %d layers (%.2fx fewer GFLOPs once pruned)",
                    sum(len(c) for c in plan.values()), len(plan), result.speed_up)
    extra = {**settings.to_dict(), "sparse_plan": plan}
    if settings.sparse_distill:
        if not teacher:
            raise CompressError("sparse_distill needs a teacher: the unpruned model's checkpoint (load the model from "
                                "a .pt file, not a yaml)")
        extra = {**extra, **teacher.trainer_args()}
    fitted = fit(model, TRAINERS[data.task], out, data, {**args, **extra}, resume=resume, take="last",
                 require_resume=require_resume)
    histogram = fitted.run_dir / HISTOGRAM_NAME
    if histogram.is_file():
        atomic_write_bytes(out.with_name(f"{out.stem}_{HISTOGRAM_NAME}"), histogram.read_bytes())
    return fitted


class SparseStage(TrainingStage):
    """Sparse-train the baseline towards the prune stage's target; its output is pruned next.

    Off by default (``--sparse`` turns it on): at an equal budget of 20 epochs it cost 0.25 (2x) and 0.54 (3x) points
    against handing its epochs to distillation (``benchmarks/results/accuracy.md``).
    """

    name = "sparse"
    settings_cls = SparseSettings
    switch = False
    follows = ("baseline",)
    command = Command("sparse", "sparse training: free the channels a pruning target removes", "sparse_train",
                      save="sparse")

    @classmethod
    def add_command_arguments(cls, parser: ArgumentParser) -> None:
        """Its settings, the pruning target it frees channels for, and distillation's (with ``--sparse-distill``)."""
        super().add_command_arguments(parser)
        PruneSettings.add_arguments(parser, only=TARGET_KEYS)
        DistillSettings.add_arguments(parser)

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        teacher = self.config.run.teacher if self._distils() else None
        return {"weights": self.start(done), **({"teacher": Path(teacher)} if teacher else {})}

    def _distils(self) -> bool:
        return self.config.settings_of(SparseSettings).sparse_distill

    def fingerprint(self) -> dict[str, Any]:
        target = self.config.settings_of(PruneSettings).target()
        distill = self.config.settings_of(DistillSettings).to_dict() if self._distils() else {}
        return {**super().fingerprint(), **target, **distill}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        """Sparse-train; with ``sparse_distill``, learning from the run's ``teacher``, else from its own input (the
        unpruned model), with the distill stage's settings."""
        c, data = self.config, self.ctx.data
        teacher = Teacher.checked(sources.get("teacher", sources["weights"]), data.task, data.nc,
                                  c.settings_of(DistillSettings), self.ctx.imgsz) if self._distils() else None
        result = sparse_train(load_model(sources["weights"]), data, self.outputs()["weights"],
                              c.settings_of(SparseSettings), c.settings_of(PruneSettings), self.ctx.imgsz,
                              self.ultralytics_args(), resume, teacher=teacher)
        return {"metrics": result.metrics}
