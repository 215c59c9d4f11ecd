"""``CompressionPipeline``: baseline -> sparse -> prune -> fine-tune -> distill -> compare (-> export).

Each stage reads the previous stage's checkpoint and writes its own under ``config.out``; ``manifest.json``
records inputs and outputs (with SHA-256), the stage's settings, params, GFLOPs, metrics and wall time. A rerun
skips every stage whose record still matches the files on disk, resumes an interrupted training stage from its
Ultralytics ``last.pt``, and ``force=STAGE`` redoes that stage and all after it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from yolo_compress.api import PruneModel
from yolo_compress.checkpoint import load_detection_model
from yolo_compress.config import STAGES, PipelineConfig, load_config
from yolo_compress.dataset import default_imgsz, resolve_data
from yolo_compress.errors import CompressError
from yolo_compress.manifest import Manifest, file_record
from yolo_compress.measure import model_size
from yolo_compress.training import writable_dir

LOGGER = logging.getLogger(__name__)
ALL_STAGES = (*STAGES, "export")


@dataclass
class PipelineResult:
    """Which stages ran or were skipped, the final weights and the comparison rows."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    weights: dict[str, Path] = field(default_factory=dict)
    rows: list[Any] = field(default_factory=list)


class CompressionPipeline:
    """Run the compression stages of ``config``; see the module docstring for resume and force.

    Example:
        >>> result = CompressionPipeline(load_config(epochs=2, imgsz=64)).run()
        >>> result.weights["distill"]
    """

    def __init__(self, config: PipelineConfig) -> None:
        self.cfg = config
        self.out = writable_dir(config.out)
        self.data = resolve_data(config.data)
        self.imgsz = config.imgsz or default_imgsz(self.data)
        if config.weights is not None:
            load_detection_model(config.weights)  # fails now, with a clear message, not after other stages
        self.manifest = Manifest(self.out / "manifest.json")

    def enabled(self) -> list[str]:
        c = self.cfg
        on = {"baseline": True, "sparse": c.sparse, "prune": True, "finetune": c.finetune, "distill": c.distill,
              "compare": c.compare, "export": c.export is not None}
        return [s for s in ALL_STAGES if on[s]]

    def run(self, force: str | None = None) -> PipelineResult:
        """Run every enabled stage in order; ``force`` names a stage to redo together with all later ones."""
        stages = self.enabled()
        if force is not None:
            if force not in ALL_STAGES:
                raise CompressError(f"--force takes one of {', '.join(ALL_STAGES)}, got {force!r}")
            self.manifest.forget_from(list(ALL_STAGES[ALL_STAGES.index(force):]))
        result = PipelineResult()
        bar = tqdm(stages, desc="yolo-compress", unit="stage", position=0)
        for stage in bar:
            bar.set_postfix_str(stage)
            inputs, config = self._inputs(stage, result.weights), self._stage_config(stage)
            out = self._output(stage)
            if self.manifest.is_done(stage, inputs, config):
                LOGGER.info("%s: up to date (%s), skipped", stage, out)
                result.skipped.append(stage)
            else:
                resume = self.manifest.started(stage, inputs, config)
                t0 = time.perf_counter()
                measured = getattr(self, f"_{stage}")(result.weights, out, resume) or {}
                self.manifest.finish(stage, {"weights": out} if out.suffix == ".pt" else self._files(stage),
                                     seconds=round(time.perf_counter() - t0, 2), **measured)
                result.ran.append(stage)
            if out.suffix == ".pt":
                result.weights[stage] = out
            if stage == "compare":
                result.rows = self.manifest.stages["compare"]["rows"]
        bar.close()
        return result

    # ---- stage wiring -------------------------------------------------------------------------------------------

    def _output(self, stage: str) -> Path:
        if stage == "baseline" and self.cfg.weights is not None:
            return Path(self.cfg.weights)
        if stage == "compare":
            return self.out / "compare.md"
        if stage == "export":
            return self.out / f"{self._final_stage()}.{self.cfg.export}"
        return self.out / f"{stage}.pt"

    def _files(self, stage: str) -> dict[str, Path]:
        if stage == "compare":
            return {ext: self.out / f"compare.{ext}" for ext in ("md", "csv", "png")}
        return {"file": self._output(stage)}

    def _final_stage(self) -> str:
        return next(s for s in ("distill", "finetune", "prune") if s in self.enabled())

    def _teacher(self, weights: dict[str, Path]) -> Path:
        return weights.get("sparse", weights["baseline"])

    def _source(self, stage: str, weights: dict[str, Path]) -> Path:
        """The checkpoint a stage starts from."""
        if stage == "sparse":
            return weights["baseline"]
        if stage == "prune":
            return self._teacher(weights)
        if stage == "distill" and self.cfg.distill_from == "finetune" and "finetune" in weights:
            return weights["finetune"]
        if stage == "export":
            return weights[self._final_stage()]
        return weights["prune"]

    def _inputs(self, stage: str, weights: dict[str, Path]) -> dict[str, dict[str, str]]:
        files: dict[str, Path] = {"data": self.data}
        if stage == "baseline":
            if self.cfg.weights is not None:
                files["weights"] = Path(self.cfg.weights)
        elif stage == "compare":
            files.update(weights)
        else:
            files["weights"] = self._source(stage, weights)
            if stage == "distill":
                files["teacher"] = self._teacher(weights)
        return {k: file_record(v) for k, v in files.items()}

    def _stage_config(self, stage: str) -> dict[str, Any]:
        c = self.cfg
        common = {"imgsz": self.imgsz}
        train = {**common, "batch": c.batch, "device": c.device, "train_args": c.train_args}
        per = {
            "baseline": {**train, "model": c.model, "epochs": c.stage_epochs("baseline"), "weights": c.weights},
            "sparse": {**train, "epochs": c.stage_epochs("sparse"), "sr": c.sr, "sr_final": c.sr_final},
            "prune": {**common, "factor": c.factor, "speed_up": c.speed_up, "importance": c.importance,
                      "global_pruning": c.global_pruning, "round_to": c.round_to},
            "finetune": {**train, "epochs": c.stage_epochs("finetune")},
            "distill": {**train, "epochs": c.stage_epochs("distill"), "loss": c.loss, "from": c.distill_from},
            "compare": common,
            "export": {**common, "format": c.export},
        }
        return per[stage]

    def _train_kwargs(self, stage: str, resume: bool) -> dict[str, Any]:
        """Ultralytics settings of a training stage; its run folder is ``<out>/runs/<stage>``."""
        c, run_dir = self.cfg, self.out / "runs" / stage
        resumable = resume and (run_dir / "weights" / "last.pt").is_file()
        if not resumable and run_dir.exists():
            shutil.rmtree(run_dir)  # a stale run of other inputs: ours to replace, never resumed by mistake
        kw = {**c.train_args, "epochs": c.stage_epochs(stage), "batch": c.batch, "project": str(run_dir.parent),
              "name": stage, "exist_ok": True}
        if c.device is not None:
            kw["device"] = c.device
        if resumable:
            LOGGER.info("%s: resuming the interrupted run in %s", stage, run_dir)
            kw["resume"] = True
        return kw

    def _measured(self, pm: PruneModel) -> dict[str, Any]:
        return {**model_size(pm.model, self.imgsz), "metrics": pm.metrics}

    def _baseline(self, weights: dict[str, Path], out: Path, resume: bool) -> dict[str, Any]:
        if self.cfg.weights is not None:
            pm = PruneModel(self.cfg.weights, data=self.data, imgsz=self.imgsz)
            pm.metrics = pm.val()
        else:
            pm = PruneModel(self.cfg.model, data=self.data, imgsz=self.imgsz)
            pm.train(save_dir=out, **self._train_kwargs("baseline", resume))
        return self._measured(pm)

    def _sparse(self, weights: dict[str, Path], out: Path, resume: bool) -> dict[str, Any]:
        pm = PruneModel(self._source("sparse", weights), data=self.data, imgsz=self.imgsz)
        pm.sparse_train(save_dir=out, sr=self.cfg.sr, sr_final=self.cfg.sr_final,
                        **self._train_kwargs("sparse", resume))
        return self._measured(pm)

    def _prune(self, weights: dict[str, Path], out: Path, resume: bool) -> dict[str, Any]:
        c = self.cfg
        pm = PruneModel(self._source("prune", weights), data=self.data, imgsz=self.imgsz)
        r = pm.prune(c.factor, save_dir=out, speed_up=c.speed_up, importance=c.importance,
                     global_pruning=c.global_pruning, round_to=c.round_to)
        return {**self._measured(pm), "prune": r.to_dict()}

    def _finetune(self, weights: dict[str, Path], out: Path, resume: bool) -> dict[str, Any]:
        pm = PruneModel(self._source("finetune", weights), data=self.data, imgsz=self.imgsz)
        pm.train(save_dir=out, **self._train_kwargs("finetune", resume))
        return self._measured(pm)

    def _distill(self, weights: dict[str, Path], out: Path, resume: bool) -> dict[str, Any]:
        pm = PruneModel(self._source("distill", weights), data=self.data, imgsz=self.imgsz)
        pm.distill(self._teacher(weights), loss_type=self.cfg.loss, save_dir=out,
                   **self._train_kwargs("distill", resume))
        return self._measured(pm)

    def _compare(self, weights: dict[str, Path], out: Path, resume: bool) -> dict[str, Any]:
        from dataclasses import asdict

        pm = PruneModel(weights["baseline"], data=self.data, imgsz=self.imgsz)
        rows = pm.compare(list(weights.values()), out_dir=self.out, names=list(weights))
        return {"rows": [asdict(r) for r in rows]}

    def _export(self, weights: dict[str, Path], out: Path, resume: bool) -> dict[str, Any]:
        pm = PruneModel(self._source("export", weights), data=self.data, imgsz=self.imgsz)
        exported = pm.export(format=self.cfg.export)
        if exported.resolve() != out.resolve():
            shutil.move(str(exported), out)
        return {}


def add_run_parser(sub: Any) -> None:
    """The ``yolo-compress run`` sub-command."""
    p = sub.add_parser("run", help="the whole pipeline; with no arguments, the built-in demo")
    p.add_argument("--config", help="YAML file of pipeline settings (see README: configuration)")
    p.add_argument("--weights", help="your trained .pt (default: train a YOLOv8n baseline from yaml)")
    p.add_argument("--data", help="dataset yaml (default: the built-in shapes dataset)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--factor", type=float, help="share of prunable channels to remove")
    how.add_argument("--speed-up", type=float, help="GFLOPs ratio to reach (default 2.0)")
    p.add_argument("--loss", help="distillation loss: cwd, mgd, kd, cwd+kd, mgd+kd")
    p.add_argument("--epochs", type=int, help="epochs of every training stage")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--device")
    p.add_argument("--out", help="output folder (default weights)")
    p.add_argument("--export", help="export the final model, e.g. onnx")
    p.add_argument("--no-sparse", dest="sparse", action="store_false", default=None)
    p.add_argument("--no-finetune", dest="finetune", action="store_false", default=None)
    p.add_argument("--no-distill", dest="distill", action="store_false", default=None)
    p.add_argument("--force", help=f"redo this stage and all after it ({', '.join(ALL_STAGES)})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set sr=0.01 --set 'train_args={lr0: 0.005}'")


def run_from_args(a: argparse.Namespace) -> PipelineResult:
    """Build the config from ``--config``, the flags and ``--set``; run; print the table."""
    from yolo_compress.cli import parse_key_values
    from yolo_compress.report import Row, format_table

    flags = {k: getattr(a, k) for k in ("weights", "data", "factor", "speed_up", "loss", "epochs", "imgsz",
                                        "device", "out", "export", "sparse", "finetune", "distill")}
    cfg = load_config(a.config, **{**flags, **parse_key_values(a.sets)})
    result = CompressionPipeline(cfg).run(force=a.force)
    if result.rows:
        print(format_table([Row(**r) for r in result.rows]))
        print(f"report: {Path(cfg.out) / 'compare.md'} (.csv, .png); manifest: {Path(cfg.out) / 'manifest.json'}")
    return result
