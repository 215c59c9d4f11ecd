"""Every stage setting has one default and one check, shared by the CLI, the config file, the API and the trainers;
the package has no import cycle; the README documents every key."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from yolo_compress import CompressError
from yolo_compress.cli import build_parser
from yolo_compress.config import config_keys, load_config
from yolo_compress.deploy.settings import QuantizeSettings
from yolo_compress.distill import DistillSettings
from yolo_compress.prune import PruneSettings
from yolo_compress.sparse import SparseSettings
from yolo_compress.stage import RunSettings

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"sparse": SparseSettings, "prune": PruneSettings, "distill": DistillSettings,
            "quantize": QuantizeSettings}


def test_cli_config_and_settings_share_defaults():
    run = vars(build_parser().parse_args(["run"]))
    keys = [k for k in config_keys() if k != "train_args"]
    assert [k for k in keys if k not in run] == [], "a config key without a run flag"
    assert {k: run[k] for k in keys if run[k] is not None} == {}, "an unset flag must defer to the one default"
    cfg = load_config()
    assert cfg.run == RunSettings()
    assert all(s == type(s)() for s in cfg.settings.values())
    flags = vars(build_parser().parse_args(["run", "--zero-at", "0.3", "--no-sparse", "--budget", "12",
                                             "--loss", "cwd", "--quantize", "int8"]))
    given = load_config(**{k: flags[k] for k in keys if flags[k] is not None})
    assert (given.settings_of(SparseSettings).zero_at, given.is_on("sparse"), given.run.budget) == (0.3, False, 12)
    assert given.settings_of(DistillSettings).loss == "cwd" and given.settings_of(QuantizeSettings).quantize == "int8"
    required = {"sparse": ["--weights", "w"], "prune": ["--weights", "w"], "quantize": ["--weights", "w"],
                "distill": ["--weights", "w", "--teacher", "t"]}
    for command, cls in COMMANDS.items():
        assert cls.pick(vars(build_parser().parse_args([command, *required[command]]))) == cls(), command


def test_api_passes_the_same_defaults(tiny_yaml, tmp_path):
    """With no setting given, what each ``PruneModel`` stage ran with is ``Settings()`` (read from what it wrote: the
    trainers' saved ``train_args``, the pruned checkpoint's record)."""
    import yaml

    from yolo_compress import PruneModel
    from yolo_compress.checkpoint import save_checkpoint
    from yolo_compress.prune import DEFAULT_SPEED_UP

    pm = PruneModel("yolov8n.yaml", data=tiny_yaml)
    teacher = save_checkpoint(pm.model, tmp_path / "t.pt")

    def ran_with(run_dir, cls):
        args = yaml.safe_load((run_dir / "args.yaml").read_text())  # every setting of the run, ours included
        return cls(**{k: args[k] for k in cls.field_names()})

    pm.sparse_train(save_dir=tmp_path / "s.pt", epochs=1, batch=8, plots=False)
    assert ran_with(pm.run_dir, SparseSettings) == SparseSettings()
    result = pm.prune(save_dir=tmp_path / "p.pt")
    assert (result.importance, result.global_pruning) == ("bn_scale", True)  # auto, after sparse training
    assert result.speed_up >= DEFAULT_SPEED_UP
    pm.distill(teacher, save_dir=tmp_path / "d.pt", epochs=1, batch=8, plots=False)
    assert ran_with(pm.run_dir, DistillSettings) == DistillSettings()


def test_one_check_everywhere(tiny_yaml):
    from yolo_compress import PruneModel

    with pytest.raises(CompressError, match="zero_at=2.0: must be in"):
        load_config(zero_at=2.0)
    with pytest.raises(CompressError, match="zero_at=2.0: must be in"):
        PruneModel("yolov8n.yaml", data=tiny_yaml).sparse_train(zero_at=2.0)
    with pytest.raises(CompressError, match="did you mean 'loss'"):
        PruneModel("yolov8n.yaml", data=tiny_yaml).distill("t.pt", los="kd")


def _readme_defaults() -> dict[str, str]:
    """``key -> default`` as the README's configuration table writes them (one default may serve several keys)."""
    import re

    text = (ROOT / "README.md").read_text()
    table = text[text.index("| key | default | meaning |"):]
    out = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        cells = line.split(" | ")
        keys, values = re.findall(r"`([a-z_0-9]+)`", cells[0]), re.findall(r"`([^`]*)`", cells[1])
        out.update(zip(keys, values if len(values) == len(keys) else values[:1] * len(keys)))
    return out


def _as_written(value) -> str:
    import yaml

    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_as_written(v)}" for k, v in value.items()) + "}"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def test_config_keys_are_unique_and_documented_with_their_defaults():
    keys = config_keys()
    assert len(keys) == len(set(keys)), "a key is declared by two settings classes"
    documented = _readme_defaults()
    assert [k for k in keys if k not in documented] == [], "README's configuration table lacks these keys"
    from yolo_compress.config import config_dict

    declared = config_dict(load_config())
    wrong = {k: (documented[k], _as_written(declared[k])) for k in keys
             if documented[k] != _as_written(declared[k]) and float_or(documented[k]) != declared[k]}
    assert wrong == {}, "README default (left) differs from the declared one (right)"


def float_or(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` a file imports anywhere: at module level, inside functions, under ``TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(package))
    return found


def test_no_import_cycle_between_modules():
    files = {}
    for base, prefix in ((ROOT / "yolo_compress", "yolo_compress"), (ROOT / "patches", "yolo_compress.patches"),
                         (ROOT / "data", "yolo_compress.data")):
        for f in base.rglob("*.py"):
            rel = f.relative_to(base).with_suffix("").parts
            name = ".".join((prefix, *rel[:-1])) if rel[-1] == "__init__" else ".".join((prefix, *rel))
            files[name] = f
    def with_parents(name: str) -> set[str]:  # importing a.b.c runs the packages a.b and a first
        parts = name.split(".")
        return {".".join(parts[:k]) for k in range(2, len(parts) + 1)}

    graph = {m: {p for i in _imports(f, "yolo_compress") for p in with_parents(i) if p in files and p != m
                 and not m.startswith(p + ".")} for m, f in files.items()}

    def cycle_from(start, node, path):
        for nxt in graph[node]:
            if nxt == start:
                return [*path, nxt]
            if nxt not in path and (found := cycle_from(start, nxt, [*path, nxt])):
                return found
        return None

    for module in graph:
        assert cycle_from(module, module, [module]) is None, f"import cycle: {cycle_from(module, module, [module])}"


# the documented exceptions: sparse training asks the pruner which channels its target removes, and with
# sparse_distill learns from distillation's teacher
EARLIER_USES_LATER = {("yolo_compress.sparse", "yolo_compress.prune"),
                      ("yolo_compress.sparse", "yolo_compress.distill")}


def test_no_stage_imports_a_later_stage():
    """Stage packages, in pipeline order, import only earlier ones (the Ultralytics seam ``patches`` aside)."""
    from yolo_compress.stages import STAGES

    order: list[str] = []
    for stage in STAGES:
        package = ".".join(stage.__module__.split(".")[:2])
        if package not in order:
            order.append(package)
    for i, package in enumerate(order):
        folder = ROOT / package.replace(".", "/")
        used = {".".join(m.split(".")[:2]) for f in folder.rglob("*.py") for m in _imports(f, "yolo_compress")}
        later = [p for p in order[i + 1:] if p in used and (package, p) not in EARLIER_USES_LATER]
        assert not later, f"{package} imports the later stage(s) {later}"
