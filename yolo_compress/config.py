"""Pipeline settings: the run's own keys plus every stage's settings, loadable from YAML, overridable everywhere.

The config file is flat (the keys of every stage side by side); each stage key is routed to the stage
settings class that declares it (:data:`STAGE_SETTINGS`), so its default and check live there once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolo_compress.deploy.settings import QuantizeSettings
from yolo_compress.distill.settings import DistillSettings
from yolo_compress.errors import CompressError
from yolo_compress.prune.settings import PruneSettings
from yolo_compress.settings import Settings, check_known, non_negative, positive, setting
from yolo_compress.sparse.settings import SparseSettings

# config attribute -> the stage settings class whose keys it holds
STAGE_SETTINGS: dict[str, type[Settings]] = {
    "sparse_settings": SparseSettings,
    "prune_settings": PruneSettings,
    "distill_settings": DistillSettings,
    "quantize_settings": QuantizeSettings,
}
FROM = ("prune", "finetune")


def _from(v: str) -> bool:
    return v in FROM


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
    epochs: int | None = setting(None, "if set, the epochs of every training stage", check=positive, must=">= 1")
    baseline_epochs: int = setting(25, "epochs of the baseline trained from model", check=positive, must=">= 1")
    sparse_epochs: int = setting(10, "epochs of sparse training", check=positive, must=">= 1")
    finetune_epochs: int = setting(10, "epochs of fine-tuning", check=positive, must=">= 1")
    distill_epochs: int = setting(10, "epochs of distillation", check=positive, must=">= 1")
    sparse: bool = setting(True, "run sparse training before pruning")
    finetune: bool = setting(True, "fine-tune the pruned model")
    distill: bool = setting(True, "distil the pruned model from the unpruned one")
    distill_from: str = setting("prune", "distillation starts from the pruned (a fair comparison with fine-tuning) "
                                "or the fine-tuned weights", check=_from, must="prune or finetune")
    compare: bool = setting(True, "write the comparison table of every stage")
    export: str | None = setting(None, "export the final weights: onnx or torchscript")
    quantize: str | None = setting(None, "quantize the final weights: int8 (an INT8 ONNX model, ONNX Runtime)",
                                   choices=("int8",))
    latency_rounds: int = setting(30, "interleaved latency rounds per model in the report", check=non_negative,
                                  must=">= 0")


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one ``CompressionPipeline`` run: the run's keys, Ultralytics ``train_args`` and per-stage settings.

    Example:
        >>> cfg = load_config(epochs=2, importance="l2")
        >>> cfg.run.epochs, cfg.prune_settings.importance
        (2, 'l2')
    """

    run: RunSettings = field(default_factory=RunSettings)
    train_args: dict[str, Any] = field(default_factory=lambda: {"plots": False})
    sparse_settings: SparseSettings = field(default_factory=SparseSettings)
    prune_settings: PruneSettings = field(default_factory=PruneSettings)
    distill_settings: DistillSettings = field(default_factory=DistillSettings)
    quantize_settings: QuantizeSettings = field(default_factory=QuantizeSettings)

    def stage_epochs(self, stage: str) -> int:
        return int(self.run.epochs or getattr(self.run, f"{stage}_epochs"))

    def to_dict(self) -> dict[str, Any]:
        """Flat, as the config file is written."""
        out = {**self.run.to_dict(), "train_args": dict(self.train_args)}
        for name in STAGE_SETTINGS:
            out.update(getattr(self, name).to_dict())
        return out


def config_keys() -> list[str]:
    """Every key a config file, ``--set`` or ``load_config`` accepts."""
    stage_keys = [k for cls in STAGE_SETTINGS.values() for k in cls.field_names()]
    return [*RunSettings.field_names(), "train_args", *stage_keys]


def build_config(values: dict[str, Any]) -> PipelineConfig:
    """A config from flat keys; unknown keys and bad values are one clear error each.

    Raises:
        CompressError: an unknown key (with the closest known one) or a value a settings class rejects.
    """
    check_known(values, config_keys(), what="config key")
    train_args = values.get("train_args", {"plots": False})
    if not isinstance(train_args, dict):
        raise CompressError(f"train_args must be a mapping of Ultralytics settings, got {train_args!r}")
    from yolo_compress.training import check_train_args

    check_train_args(train_args)
    parts = {name: cls.from_mapping({k: v for k, v in values.items() if k in cls.field_names()})
             for name, cls in STAGE_SETTINGS.items()}
    run = RunSettings.from_mapping({k: v for k, v in values.items() if k in RunSettings.field_names()})
    return PipelineConfig(run=run, train_args=dict(train_args), **parts)


def load_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """Defaults, then the YAML file's keys, then ``overrides`` (those that are not ``None``).

    Raises:
        CompressError: a missing or unparsable file, unknown keys, bad values.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise CompressError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            raise CompressError(f"{p} is not valid YAML{at}: {getattr(e, 'problem', e)}; fix the file") from e
        if not isinstance(loaded, dict):
            raise CompressError(f"{p} must be a mapping of config keys (key: value lines)")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(values)
