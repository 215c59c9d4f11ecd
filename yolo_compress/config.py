"""Pipeline configuration: the run's keys plus every stage's keys, loadable from YAML, overridable everywhere.

The config file is flat. Its keys are derived from the list of stages (``yolo_compress.stages.STAGES``): the
run's own keys (``RunSettings``), ``train_args``, each stage's on/off key (``sparse: false``) and epochs key
(``sparse_epochs``), and the fields of each stage's settings class, where their defaults and checks live once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import yaml

from yolo_compress.errors import CompressError
from yolo_compress.settings import Settings, check_known, positive, setting
from yolo_compress.stage import PipelineConfig, RunSettings, Stage, TrainingStage
from yolo_compress.stages import STAGES

Stages = Sequence[type[Stage]]


@functools.cache
def stage_keys(stages: tuple[type[Stage], ...] = STAGES) -> type[Settings]:
    """A settings class of the stages' own pipeline keys: ``<name>`` (on/off) and ``<name>_epochs``."""
    fields: list[tuple[str, Any, Any]] = []
    for s in stages:
        what = (s.__doc__ or s.name).strip().splitlines()[0].rstrip(".")
        if s.switch is not None:
            fields.append((s.name, bool, setting(s.switch, f"run the {s.name} stage ({what})")))
        if issubclass(s, TrainingStage):
            default = s.default_epochs
            help_text = f"epochs of the {s.name} stage" + ("" if default else " (none: its share of the budget)")
            fields.append((f"{s.name}_epochs", Optional[int], setting(default, help_text, check=positive,
                                                                       must=">= 1")))
    return dataclasses.make_dataclass("StageKeys", fields, bases=(Settings,), frozen=True)


def settings_classes(stages: Stages = STAGES) -> list[type[Settings]]:
    return [s.settings_cls for s in stages if s.settings_cls is not None]


def config_keys(stages: Stages = STAGES) -> list[str]:
    """Every key a config file, ``--set`` or ``load_config`` accepts."""
    stage_fields = [k for cls in settings_classes(stages) for k in cls.field_names()]
    return [*RunSettings.field_names(), "train_args", *stage_keys(tuple(stages)).field_names(), *stage_fields]


def build_config(values: dict[str, Any], stages: Stages = STAGES) -> PipelineConfig:
    """A config from flat keys; unknown keys and bad values are one clear error each.

    Raises:
        CompressError: an unknown key (with the closest known one) or a value a settings class rejects.
    """
    check_known(values, config_keys(stages), what="config key")
    train_args = values.get("train_args", {"plots": False})
    if not isinstance(train_args, dict):
        raise CompressError(f"train_args must be a mapping of Ultralytics settings, got {train_args!r}")
    from ultralytics.utils import DEFAULT_CFG_DICT

    ours = [k for k in train_args if k in config_keys(stages) and k not in (*DEFAULT_CFG_DICT, "train_args")]
    if ours:
        raise CompressError(f"{ours[0]!r} is a yolo-compress setting, not an Ultralytics one: write it at the top "
                            f"level of the config ({ours[0]}: {train_args[ours[0]]!r}), not under train_args")
    from yolo_compress.training import check_train_args

    check_train_args(train_args)

    def pick(cls: type[Settings]) -> Settings:
        return cls.from_mapping({k: v for k, v in values.items() if k in cls.field_names()})

    keys = pick(stage_keys(tuple(stages)))
    return PipelineConfig(
        run=pick(RunSettings), train_args=dict(train_args),
        switches={s.name: getattr(keys, s.name) for s in stages if s.switch is not None},
        epochs={s.name: getattr(keys, f"{s.name}_epochs") for s in stages if issubclass(s, TrainingStage)},
        settings={s.name: pick(s.settings_cls) for s in stages if s.settings_cls is not None})


def config_dict(config: PipelineConfig) -> dict[str, Any]:
    """``config`` flat, as the config file is written."""
    out = {**config.run.to_dict(), "train_args": dict(config.train_args), **config.switches}
    out.update({f"{name}_epochs": v for name, v in config.epochs.items()})
    for settings in config.settings.values():
        out.update(settings.to_dict())
    return out


def load_config(path: str | Path | None = None, stages: Stages = STAGES, **overrides: Any) -> PipelineConfig:
    """Defaults, then the YAML file's keys, then ``overrides`` (those that are not ``None``).

    Raises:
        CompressError: a missing or unparsable file, unknown keys, bad values.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise CompressError(f"config file not found: {p}; pass the path of a YAML file of config keys")
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
    return build_config(values, stages)
