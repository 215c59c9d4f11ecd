"""The interface every pipeline stage implements, and the settings of a run that all stages share.

A stage declares everything about itself once, as class attributes: its settings class (config keys, CLI flags),
whether it has an on/off key (``switch``), whether it trains (then it has a ``<name>_epochs`` key and a share of
the training budget), whether it makes weights, and which stages it can start from (``follows``). The pipeline
(``yolo_compress.pipeline``), the config file and the command line (``yolo_compress.config``) are derived from
the list of stages (``yolo_compress.stages.STAGES``).

Which stages run and how long each trains is planned from the configuration first (``yolo_compress.plan``); the
running stages are then built once, with that plan. At run time a stage names the files it reads (``sources``),
what else shapes its result (``fingerprint``), the files it writes (``outputs``) and how to make them (``run``).
The pipeline records sources and outputs with their hashes in ``manifest.json``: a stage whose record still
matches is skipped, an interrupted one is run again with ``resume=True`` (training stages then continue their
Ultralytics run).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from argparse import ArgumentParser
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import nn

from yolo_compress.dataset import Dataset
from yolo_compress.settings import Settings, non_negative, positive, setting

S = TypeVar("S", bound=Settings)
FROM = ("prune", "finetune")
SCHEDULES = ("budget", "stage")


@dataclass(frozen=True)
class RunSettings(Settings):
    """Keys of the run itself (what to compress, where, how long); see the README's configuration table."""

    weights: str | None = setting(None, "your trained .pt; none: the shipped baseline with the built-in data, "
                                  "else a baseline trained from model")
    model: str = setting("yolov8n.yaml", "model yaml of the baseline when no weights are given")
    data: str | None = setting(None, "dataset (detection yaml or classification folder); none: the built-in one")
    out: str = setting("weights", "folder of stage weights, manifest.json, compare.* and runs/")
    imgsz: int | None = setting(None, "image size of every stage and the report (none: the dataset's)",
                                check=positive, must="> 0")
    device: str | None = setting(None, "Ultralytics device: cpu, 0, 0,1 ... (none: its choice)")
    batch: int = setting(16, "training batch", check=positive, must=">= 1")
    budget: int = setting(20, "training epochs after the baseline, split over the stages that make the final "
                          "weights (a stage switched off hands its epochs to the others)", check=positive, must=">= 1")
    epochs: int | None = setting(None, "if set, the epochs of every training stage (the budget is then ignored)",
                                 check=positive, must=">= 1")
    schedule: str = setting("budget", "budget: one learning-rate schedule over the budget (warm-up once, mosaic "
                            "closed only at the end); stage: each stage its own Ultralytics schedule",
                            choices=SCHEDULES)
    distill_from: str = setting("prune", "distillation starts from the pruned (a fair comparison with fine-tuning) "
                                "or the fine-tuned weights", check=lambda v: v in FROM, must="prune or finetune")
    teacher: str | None = setting(None, "distillation teacher .pt (none: the unpruned baseline), e.g. a larger model "
                                  "trained on the same data")
    reference: bool = setting(False, "also fine-tune the pruned model beside distillation, on the same epochs, as the "
                              "reference it must beat (its own row in the table); off: fine-tuning runs only when "
                              "it makes the final weights (--no-distill, distill_from finetune)")
    latency_rounds: int = setting(30, "interleaved latency rounds per model in the report", check=non_negative,
                                  must=">= 0")
    recovery_lr: float = setting(0.005, "detectors: AdamW lr0 of every training after the baseline where "
                                 "Ultralytics would pick its small-data optimizer itself (no optimizer set); 0: "
                                 "Ultralytics' own 0.002 x 5 / (4 + nc)", check=non_negative, must=">= 0")


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one pipeline run: the run's keys, Ultralytics ``train_args``, and per stage its switch, its
    epochs and its settings (keyed by stage name; built by ``yolo_compress.config.build_config``).

    Example:
        >>> cfg = load_config(epochs=2, importance="l2")
        >>> cfg.run.epochs, cfg.settings_of(PruneSettings).importance
        (2, 'l2')
    """

    run: RunSettings = field(default_factory=RunSettings)
    train_args: dict[str, Any] = field(default_factory=lambda: {"plots": False})
    switches: dict[str, bool] = field(default_factory=dict)
    epochs: dict[str, int | None] = field(default_factory=dict)
    settings: dict[str, Settings] = field(default_factory=dict)

    def settings_of(self, cls: type[S]) -> S:
        """The settings of the stage that declares ``cls``."""
        for value in self.settings.values():
            if type(value) is cls:
                return value  # type: ignore[return-value]
        raise KeyError(f"no stage declares {cls.__name__}")

    def is_on(self, stage: str) -> bool:
        return self.switches.get(stage, True)


@dataclass(frozen=True)
class Command:
    """A stage's own subcommand, ``yolo-compress <name>``, on one checkpoint.

    Attributes:
        name: the subcommand.
        help: its line in ``yolo-compress --help``.
        method: the ``PruneModel`` method it calls with its flags as keywords; ``"apply"``: the generic
            ``PruneModel.apply(stage, ...)``, so a new stage needs no method of its own.
        save: default output file stem under ``weights/`` (a ``--save`` flag); ``None``: it writes beside its input.
    """

    name: str
    help: str
    method: str = "apply"
    save: str | None = None


@dataclass(frozen=True)
class Segment:
    """A training stage's part of the budget: epochs ``[start, start + epochs)`` of ``total``."""

    start: int
    epochs: int
    total: int


@dataclass(frozen=True)
class Plan:
    """What a run does, from its configuration alone (``yolo_compress.plan.make_plan``): the ``running`` stages in
    order, each training stage's ``segments`` of the schedule, the stage of the ``final`` weights and the epochs of
    the stages that make them (``budget``: what the recipe costs)."""

    running: tuple[str, ...]
    segments: dict[str, Segment]
    final: str
    budget: dict[str, int]


@dataclass(frozen=True)
class RunContext:
    """What every stage of one pipeline run shares: the configuration, its plan, the output folder, the data and
    the image size."""

    config: PipelineConfig
    plan: Plan
    out: Path
    data: Dataset
    imgsz: int


class Stage(ABC):
    """One step of the pipeline.

    Attributes:
        name: the stage's name in the manifest, ``--force`` and the report (also its output file stem).
        settings_cls: its settings; their fields are config keys and ``run`` flags.
        switch: the default of its on/off key (``--<name>`` / ``--no-<name>``); ``None``: no such key.
        makes_weights: its ``weights`` output is a model later stages and the report use.
        follows: the stages whose weights it may start from; the first one that runs is taken.
        share: its share of the training budget (training stages in the final weights' lineage).
        command: its subcommand on one checkpoint (``None``: it runs inside the pipeline only).
    """

    name: ClassVar[str]
    settings_cls: ClassVar[type[Settings] | None] = None
    switch: ClassVar[bool | None] = None
    makes_weights: ClassVar[bool] = False
    follows: ClassVar[tuple[str, ...]] = ()
    share: ClassVar[float] = 0.0
    command: ClassVar[Command | None] = None

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @property
    def config(self) -> PipelineConfig:
        return self.ctx.config

    @classmethod
    def add_command_arguments(cls, parser: ArgumentParser) -> None:
        """The flags of its subcommand besides the model's and, for a training stage, the training ones: its
        settings (the same names as ``run``'s flags and the config keys)."""
        if cls.settings_cls is not None:
            cls.settings_cls.add_arguments(parser)

    @classmethod
    def enabled(cls, config: PipelineConfig) -> bool:
        """Whether ``config`` runs this stage (its switch, when it has one); planning asks before any stage is built."""
        return cls.switch is None or config.is_on(cls.name)

    @classmethod
    def starts_from(cls, config: PipelineConfig, running: Collection[str]) -> str | None:
        """The stage whose weights this one starts from, among the ``running`` ones."""
        return next((s for s in cls.follows if s in running), None)

    def start(self, done: dict[str, Path]) -> Path:
        """The weights this stage starts from, among those of the stages ``done``."""
        return done[self.starts_from(self.config, set(done)) or self.follows[-1]]

    @abstractmethod
    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        """Files this stage reads, by role (``weights``, ``teacher``, ...), given earlier stages' weights."""

    def fingerprint(self) -> dict[str, Any]:
        """The stage's fingerprint: everything besides the sources that shapes its result (a change reruns it; the
        manifest records it under ``settings``). The version is in it: a release can decide an unset setting
        otherwise (0.11.0 keeps pose and OBB heads whole), and a stage done by another release is done again."""
        import yolo_compress

        own = self.config.settings[self.name].to_dict() if self.name in self.config.settings else {}
        return {"imgsz": self.ctx.imgsz, "version": yolo_compress.__version__, **own}

    def outputs(self) -> dict[str, Path]:
        """Files this stage writes, by role; ``weights`` is passed on to later stages."""
        return {"weights": self.ctx.out / f"{self.name}.pt"}

    def models(self) -> dict[str, Path]:
        """Its outputs that later stages and the report take as models, by row name (its weights, by its name)."""
        return {self.name: self.outputs()["weights"]} if self.makes_weights else {}

    @abstractmethod
    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        """Make the outputs; return measured values for the manifest (params, GFLOPs, metrics, ...)."""

    def check(self, model: nn.Module) -> None:
        """Reject what would make this stage fail, before any stage runs; ``model`` is the baseline network.

        Raises:
            CompressError: what is wrong and how to fix it (the default checks nothing more than the settings).
        """
        return None


class TrainingStage(Stage):
    """A stage that trains: its Ultralytics settings come from the pipeline's ``batch``, ``device``, its epochs
    (``<name>_epochs``, else ``epochs``, else its part of the budget) and ``train_args``; its run folder is
    ``<out>/runs/<name>``.

    Attributes:
        default_epochs: epochs when nothing else sets them; ``None``: a share of the budget.
        recovers: it starts from trained weights, so the run's ``recovery_lr`` applies (not to a model from a yaml).
    """

    makes_weights = True
    share = 1.0
    default_epochs: ClassVar[int | None] = None
    recovers: ClassVar[bool] = True  # it trains a model that was trained before (``recovery_lr`` applies)

    def train_settings(self) -> dict[str, Any]:
        from yolo_compress.training import recovery_args

        c, seg = self.config, self.ctx.plan.segments[self.name]
        settings = {**c.train_args, "epochs": seg.epochs, "batch": c.run.batch,
                    **recovery_args(c.run.recovery_lr, self.ctx.data.task, c.train_args, self.recovers)}
        if c.run.device is not None:
            settings["device"] = c.run.device
        if c.run.schedule == "budget" and seg.total > seg.epochs:
            settings.update(schedule_segment(seg, c.train_args))
        return settings

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), **self.train_settings()}

    def ultralytics_args(self) -> dict[str, Any]:
        """The Ultralytics train arguments of this stage, its run folder next to its output."""
        from yolo_compress.training import train_args

        return train_args(self.train_settings(), self.ctx.data, self.ctx.imgsz, self.outputs()["weights"])


def schedule_segment(seg: Segment, train_args: dict[str, Any]) -> dict[str, Any]:
    """Ultralytics and trainer settings that make a stage the ``seg`` part of one run over ``seg.total`` epochs.

    The learning rate follows the whole run's decay (``schedule_start`` / ``schedule_epochs``, read by
    ``patches.trainers.KeepModule``); only the first segment warms up; mosaic closes in the run's last
    ``close_mosaic`` epochs (Ultralytics default 10), i.e. only in the segments that overlap them.
    """
    close = int(train_args.get("close_mosaic", 10))
    end = seg.start + seg.epochs
    out: dict[str, Any] = {"schedule_start": seg.start, "schedule_epochs": seg.total,
                           "close_mosaic": max(0, end - max(seg.start, seg.total - close))}
    if seg.start > 0:
        out["warmup_epochs"] = 0
    return out
