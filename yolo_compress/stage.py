"""The interface every pipeline stage implements; the pipeline is a list of these (``yolo_compress.pipeline``).

A stage names the files it reads (``sources``), the settings that shape its result (``settings``), the files it
writes (``outputs``) and how to make them (``run``). The pipeline records sources and outputs with their
hashes in ``manifest.json``: a stage whose record still matches is skipped, an interrupted one is run again with
``resume=True`` (training stages then continue their Ultralytics run).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from yolo_compress.dataset import Dataset

if TYPE_CHECKING:
    from yolo_compress.config import PipelineConfig


@dataclass(frozen=True)
class RunContext:
    """What every stage of one pipeline run shares."""

    config: PipelineConfig
    out: Path
    data: Dataset
    imgsz: int


class Stage(ABC):
    """One step of the pipeline.

    Attributes:
        name: the stage's name in the manifest, ``--force`` and the report (also its output file stem).
    """

    name: ClassVar[str]

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def enabled(self) -> bool:
        """Whether the configuration runs this stage."""
        return True

    @abstractmethod
    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        """Files this stage reads, by role (``weights``, ``teacher``, ...), given earlier stages' weights."""

    def settings(self) -> dict[str, Any]:
        """Everything besides the sources that shapes this stage's result (a change reruns it)."""
        return {"imgsz": self.ctx.imgsz}

    def outputs(self) -> dict[str, Path]:
        """Files this stage writes, by role; ``weights`` is passed on to later stages."""
        return {"weights": self.ctx.out / f"{self.name}.pt"}

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
    """A stage that trains: its Ultralytics settings come from the pipeline's ``batch``, ``device``, epochs and
    ``train_args``, and its run folder is ``<out>/runs/<name>``."""

    def epochs(self) -> int:
        return self.ctx.config.stage_epochs(self.name)

    def train_settings(self) -> dict[str, Any]:
        c = self.ctx.config
        settings = {**c.train_args, "epochs": self.epochs(), "batch": c.run.batch}
        if c.run.device is not None:
            settings["device"] = c.run.device
        return settings

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **self.train_settings()}

    def ultralytics_args(self) -> dict[str, Any]:
        """The Ultralytics train arguments of this stage, its run folder next to its output."""
        from yolo_compress.training import train_args

        return train_args(self.train_settings(), self.ctx.data, self.ctx.imgsz, self.outputs()["weights"])
