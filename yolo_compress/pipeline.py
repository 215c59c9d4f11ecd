"""The compression pipeline: the list of stages, run in order, recorded in ``manifest.json``.

baseline -> sparse -> prune -> finetune -> distill -> export -> quantize -> compare (``yolo_compress.stages``).
Each stage reads earlier stages' weights and writes its own under ``config.run.out``; the training budget is split
over the stages that make the final weights (``yolo_compress.budget``); ``manifest.json`` records sources and
outputs (with SHA-256), the stage's settings, what it measured and its wall time. A rerun skips every stage whose
record still matches the files on disk and resumes an interrupted one (a training stage continues its Ultralytics
run); ``force=STAGE`` redoes that stage and all after it. Every check that can fail runs before the first stage.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yolo_compress.checkpoint import load_model
from yolo_compress.dataset import data_fingerprint
from yolo_compress.errors import CompressError
from yolo_compress.manifest import Manifest, file_record
from yolo_compress.models import model_size
from yolo_compress.plan import make_plan
from yolo_compress.preflight import check_device, check_disk, check_train_values
from yolo_compress.run_folder import LOCK_NAME, check_not_inside, locked, remove_stale_temps, run_dir_of
from yolo_compress.stage import PipelineConfig, RunContext, Stage, TrainingStage
from yolo_compress.stages import STAGES
from yolo_compress.training import writable_dir
from yolo_compress.workspace import Workspace

LOGGER = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """Which stages ran or were skipped, every stage's weights and the comparison rows."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    weights: dict[str, Path] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


class CompressionPipeline:
    """Run the enabled stages of ``config``; see the module docstring for skip, resume and force.

    Raises:
        CompressError: bad input of any stage, found before anything runs.

    Example:
        >>> result = CompressionPipeline(load_config(epochs=2, imgsz=64)).run()
        >>> result.weights["distill"]
    """

    def __init__(self, config: PipelineConfig, stages: Sequence[type[Stage]] = STAGES) -> None:
        from yolo_compress.data import SHIPPED_BASELINE
        from yolo_compress.patches import runtime

        runtime.apply()
        if config.run.weights is None and config.run.data is None and SHIPPED_BASELINE.is_file():
            LOGGER.info("baseline: the shipped %s, trained on the built-in data", SHIPPED_BASELINE)
            config = replace(config, run=replace(config.run, weights=str(SHIPPED_BASELINE)))
        run = config.run
        self.out = writable_dir(run.out)
        check_device(run.device)
        check_train_values(config.train_args)
        check_disk(self.out)
        plan = make_plan(stages, config)
        self.workspace = Workspace.open(run.weights or run.model, run.data, run.imgsz, flag="--weights")
        self.names = [cls.name for cls in stages]
        self.ctx = RunContext(config, plan, self.out, self.workspace.data, self.workspace.imgsz)
        self.stages = [cls(self.ctx) for cls in stages if cls.name in plan.running]  # built once, planned
        self._check_overwrites()
        for stage in self.stages:
            stage.check(self.workspace.model)
        self.manifest = Manifest(self.out / "manifest.json")

    def _check_overwrites(self) -> None:
        """Refuse a run that would write over one of its inputs (e.g. ``--weights OUT/finetune.pt``) or replace the
        run folder that holds one (``--weights OUT/runs/distill/weights/best.pt``)."""
        c = self.ctx.config
        given = {"--weights": c.run.weights, "--teacher": c.run.teacher, "--data": self.ctx.data.path}
        inputs = {Path(p).resolve(): flag for flag, p in given.items() if p is not None}
        writers = [s for s in self.stages if s.name != self.names[0]]  # the first stage only reads --weights
        for stage in writers:
            for path in stage.outputs().values():
                if path.resolve() in inputs:
                    raise CompressError(f"{inputs[path.resolve()]} {path} would be overwritten by the {stage.name} "
                                        "stage; pass another --out folder or move the file")
        check_not_inside(given, {s.name: run_dir_of(s.outputs()["weights"]) for s in writers
                                 if isinstance(s, TrainingStage)})

    def run(self, force: str | None = None) -> PipelineResult:
        """Run every enabled stage in order; ``force`` names a stage to redo together with all later ones.

        Raises:
            CompressError: another run holds this output folder.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        with locked(self.out / LOCK_NAME, f"the output folder {self.out}"):
            return self._run(force)

    def _run(self, force: str | None) -> PipelineResult:
        if force is not None:
            if force not in self.names:
                raise CompressError(f"--force takes one of {', '.join(self.names)}, got {force!r}")
            self.manifest.forget_from(self.names[self.names.index(force):])
        for tmp in remove_stale_temps(self.out):
            LOGGER.info("removed %s, left by an interrupted write", tmp.name)
        result = PipelineResult()
        data = {"path": str(self.ctx.data.path), "sha256": data_fingerprint(self.ctx.data)}
        for stage in self.stages:
            sources = {k: file_record(v) for k, v in stage.sources(result.weights).items()}
            sources["data"] = data
            settings = json.loads(json.dumps(stage.fingerprint(), default=str))  # as the manifest stores them
            if self.manifest.is_done(stage.name, sources, settings):
                LOGGER.info("%s: up to date, skipped", stage.name)
                result.skipped.append(stage.name)
            else:
                LOGGER.info("%s: running", stage.name)
                resume = self.manifest.started(stage.name, sources, settings)
                t0 = time.perf_counter()
                measured = stage.run(stage.sources(result.weights), resume)
                outputs = stage.outputs()
                if stage.makes_weights and outputs["weights"].suffix == ".pt":
                    measured.update(model_size(load_model(outputs["weights"]), self.ctx.imgsz))
                self.manifest.finish(stage.name, outputs, seconds=round(time.perf_counter() - t0, 2), **measured)
                result.ran.append(stage.name)
            result.weights.update(stage.models())
            result.rows = self.manifest.stages[stage.name].get("rows", result.rows)  # the report's
        return result

