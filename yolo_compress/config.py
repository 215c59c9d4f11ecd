"""Pipeline settings: one frozen dataclass, loadable from YAML, every key overridable from CLI and Python."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from yolo_compress.errors import CompressError

STAGES = ("baseline", "sparse", "prune", "finetune", "distill", "compare")


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of ``CompressionPipeline``; the defaults run the built-in demo in a few CPU minutes.

    Attributes:
        weights: your trained ``.pt``; ``None`` trains a baseline from ``model`` first.
        model: model yaml for the baseline when ``weights`` is ``None``.
        data: dataset yaml; ``None`` uses the built-in shapes dataset.
        out: folder for stage weights, ``manifest.json``, the report and Ultralytics runs.
        imgsz: image size of every stage and of the report (``None``: the dataset's, else 640).
        device: Ultralytics device string (``None``: its default; GPU when present).
        batch: training batch size.
        epochs: if set, the epoch count of every training stage (overrides the per-stage ones).
        baseline_epochs / sparse_epochs / finetune_epochs / distill_epochs: per-stage epochs.
        sparse: run sparse training (L1 on BatchNorm scales) before pruning.
        sr / sr_final: L1 coefficient and optional linear decay target.
        factor: share of prunable channels to remove; ignored when ``speed_up`` is set.
        speed_up: GFLOPs ratio to reach by iterative pruning (default 2.0: at most half the GFLOPs).
        importance: ``bn_scale``, ``l2`` or ``group_norm``.
        global_pruning: rank channels across layers.
        round_to: channel counts rounded to multiples of this.
        finetune: fine-tune the pruned model without a teacher.
        distill: fine-tune the pruned model with the unpruned (sparse, else baseline) model as teacher.
        loss: distillation loss: ``cwd``, ``mgd``, ``kd``, ``cwd+kd``, ``mgd+kd``.
        distill_from: ``prune`` (distil the pruned weights: same epochs as ``finetune``, a fair comparison)
            or ``finetune`` (distil the fine-tuned weights further).
        compare: write the comparison table of every stage's weights.
        export: export the final weights (e.g. ``onnx``); ``None`` skips it.
        train_args: more Ultralytics train settings for every training stage (e.g. ``{lr0: 0.005}``).
    """

    weights: str | None = None
    model: str = "yolov8n.yaml"
    data: str | None = None
    out: str = "weights"
    imgsz: int | None = None
    device: str | None = None
    batch: int = 16
    epochs: int | None = None
    baseline_epochs: int = 25
    sparse: bool = True
    sparse_epochs: int = 5
    sr: float = 5e-3
    sr_final: float | None = None
    factor: float | None = None
    speed_up: float | None = 2.0
    importance: str = "bn_scale"
    global_pruning: bool = False
    round_to: int = 8
    finetune: bool = True
    finetune_epochs: int = 8
    distill: bool = True
    distill_epochs: int = 8
    loss: str = "cwd"
    distill_from: str = "prune"
    compare: bool = True
    export: str | None = None
    train_args: dict[str, Any] = field(default_factory=lambda: {"plots": False})

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        if self.factor is not None and self.speed_up is not None:
            object.__setattr__(self, "speed_up", None)  # an explicit factor wins over the default target
        if self.distill_from not in ("prune", "finetune"):
            raise CompressError(f"distill_from must be 'prune' or 'finetune', got {self.distill_from!r}")
        for name in ("batch", "baseline_epochs", "sparse_epochs", "finetune_epochs", "distill_epochs"):
            if int(getattr(self, name)) < 1:
                raise CompressError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise CompressError(f"epochs must be >= 1, got {self.epochs}")
        if not isinstance(self.train_args, dict):
            raise CompressError(f"train_args must be a mapping of Ultralytics settings, got {self.train_args!r}")

    def stage_epochs(self, stage: str) -> int:
        return int(self.epochs or getattr(self, f"{stage}_epochs"))

    def updated(self, **changes: Any) -> PipelineConfig:
        """A copy with ``changes`` applied; unknown keys raise an error that suggests the closest one."""
        check_keys(changes)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_type(name: str, annotation: str, value: Any) -> None:
    """Reject values whose type does not fit the field (annotations are strings under postponed evaluation)."""
    if value is None and "None" in annotation:
        return
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          "dict": lambda v: isinstance(v, dict)}
    kind = annotation.split("|")[0].split("[")[0].strip()
    if kind in ok and not ok[kind](value):
        raise CompressError(f"config key {name!r} must be {annotation}, got {value!r}")


def check_keys(values: dict[str, Any]) -> None:
    known = [f.name for f in fields(PipelineConfig)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise CompressError(f"unknown config key {key!r}{hint}")


def load_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """Defaults, then the YAML file's keys, then ``overrides`` (those that are not ``None``)."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise CompressError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise CompressError(f"{p} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise CompressError(f"{p} must be a mapping of config keys")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    check_keys(values)
    try:
        return PipelineConfig(**values)
    except TypeError as e:
        raise CompressError(f"invalid config: {e}") from e
