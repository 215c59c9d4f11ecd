"""One declaration per stage: config keys, CLI flags and the manifest follow the stage list; the training budget is
split over the final weights' lineage (a switched-off stage hands its epochs on); importing changes nothing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from yolo_compress import CompressError
from yolo_compress.checkpoint import atomic_write_bytes
from yolo_compress.cli import build_parser, main
from yolo_compress.config import config_keys, load_config
from yolo_compress.finetune.stage import BaselineStage
from yolo_compress.plan import make_plan
from yolo_compress.prune.stage import PruneStage
from yolo_compress.settings import Settings, positive, setting
from yolo_compress.stage import Command, RunContext, Segment, Stage, schedule_segment
from yolo_compress.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PolishSettings(Settings):
    """Settings of a stage that exists only in this test."""

    polish_strength: float = setting(0.5, "how hard to polish", check=positive, must="> 0")


class PolishStage(Stage):
    """Copy the pruned weights, writing down the strength it was given."""

    name = "polish"
    settings_cls = PolishSettings
    switch = True
    makes_weights = True
    follows = ("prune",)
    command = Command("polish", "copy a checkpoint (a stage of this test only)")  # PruneModel.apply runs it

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": done["prune"]}

    def outputs(self) -> dict[str, Path]:
        return {**super().outputs(), "note": self.ctx.out / "polish.txt"}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        strength = self.config.settings_of(PolishSettings).polish_strength
        atomic_write_bytes(self.outputs()["weights"], sources["weights"].read_bytes())
        atomic_write_bytes(self.outputs()["note"], str(strength).encode())
        return {"strength": strength}


LOCAL_STAGES = (BaselineStage, PruneStage, PolishStage)


def test_a_new_stage_is_one_declaration(tiny_yaml, tmp_path, monkeypatch):
    assert {"polish", "polish_strength"} <= set(config_keys(LOCAL_STAGES))
    assert "polish" not in config_keys()  # the real list is untouched
    cfg = load_config(stages=LOCAL_STAGES, polish_strength=0.9)
    assert cfg.settings_of(PolishSettings).polish_strength == 0.9 and cfg.is_on("polish")
    with pytest.raises(CompressError, match="polish_strength=-1.0: must be > 0"):
        load_config(stages=LOCAL_STAGES, polish_strength=-1.0)
    ns = build_parser(LOCAL_STAGES).parse_args(["run", "--polish-strength", "0.7", "--no-polish"])
    assert ns.polish_strength == 0.7 and ns.polish is False

    from yolo_compress.checkpoint import save_checkpoint
    from yolo_compress.dataset import resolve_data
    from yolo_compress.models import build_from_yaml

    data, weights = resolve_data(tiny_yaml), tmp_path / "base.pt"
    save_checkpoint(build_from_yaml("yolov8n.yaml", data), weights)
    out = tmp_path / "out"
    code = main(["run", "--weights", str(weights), "--data", str(tiny_yaml), "--imgsz", "64", "--out", str(out),
                 "--factor", "0.3", "--polish-strength", "0.7"], stages=LOCAL_STAGES)
    assert code == 0
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert list(stages) == ["baseline", "prune", "polish"]
    assert stages["polish"]["settings"]["polish_strength"] == 0.7 and stages["polish"]["strength"] == 0.7
    assert (out / "polish.pt").read_bytes() == (out / "prune.pt").read_bytes()

    import yolo_compress
    from yolo_compress.pipeline import CompressionPipeline

    keys = {"weights": str(weights), "data": str(tiny_yaml), "imgsz": 64, "out": str(out), "factor": 0.3,
            "polish_strength": 0.7}
    assert CompressionPipeline(load_config(stages=LOCAL_STAGES, **keys), LOCAL_STAGES).run().ran == []
    monkeypatch.setattr(yolo_compress, "__version__", "99.0")  # another release may decide unset settings otherwise
    assert CompressionPipeline(load_config(stages=LOCAL_STAGES, **keys), LOCAL_STAGES).run().ran == ["prune", "polish"]


def test_a_new_stage_gets_its_subcommand_and_api_entry(tiny_yaml, tmp_path):
    """The stage's declaration alone gives ``yolo-compress polish`` (its settings as flags) and
    ``PruneModel.apply("polish")``; neither cli.py nor api.py names it."""
    from yolo_compress import PruneModel
    from yolo_compress.checkpoint import save_checkpoint
    from yolo_compress.dataset import resolve_data
    from yolo_compress.models import build_from_yaml

    assert "polish" not in build_parser()._subparsers._group_actions[0].choices  # the real list is untouched
    ns = build_parser(LOCAL_STAGES).parse_args(["polish", "--weights", "w.pt", "--polish-strength", "0.7"])
    assert (ns.command, ns.polish_strength, ns.out) == ("polish", 0.7, "weights")
    weights = tmp_path / "base.pt"
    save_checkpoint(build_from_yaml("yolov8n.yaml", resolve_data(tiny_yaml)), weights)
    code = main(["polish", "--weights", str(weights), "--data", str(tiny_yaml), "--imgsz", "64", "--out",
                 str(tmp_path / "cli"), "--polish-strength", "0.7"], stages=LOCAL_STAGES)
    assert code == 0 and (tmp_path / "cli" / "polish.txt").read_text() == "0.7"
    assert (tmp_path / "cli" / "polish.pt").read_bytes() == weights.read_bytes()
    pm = PruneModel(weights, data=tiny_yaml, imgsz=64)
    outputs = pm.apply("polish", out=tmp_path / "api", stages=LOCAL_STAGES, polish_strength=0.9)
    assert outputs["note"].read_text() == "0.9" and pm.weights == outputs["weights"] == tmp_path / "api" / "polish.pt"
    with pytest.raises(CompressError, match="polish_strength=-1.0: must be > 0"):
        pm.apply("polish", out=tmp_path / "api", stages=LOCAL_STAGES, polish_strength=-1.0)
    with pytest.raises(CompressError, match="refusing to overwrite the input weights"):
        pm.apply("polish", out=tmp_path / "api", stages=LOCAL_STAGES)  # its input is api/polish.pt now


def _plan(**keys: Any) -> tuple[dict[str, Segment], dict[str, int]]:
    plan = make_plan(STAGES, load_config(**keys))  # planning reads the config only
    return plan.segments, plan.budget


def test_recovery_lr_goes_to_detector_stages_after_the_baseline_unless_an_optimizer_is_set():
    from types import SimpleNamespace

    def lrs(task: str = "detect", **keys: Any) -> dict[str, Any]:
        config = load_config(**keys)
        plan = make_plan(STAGES, config)
        ctx = RunContext(config, plan, Path("unused"), SimpleNamespace(task=task), 64)
        stages = [cls(ctx) for cls in STAGES if cls.name in plan.running]
        return {s.name: s.train_settings().get("recovery_lr") for s in stages if hasattr(s, "train_settings")}

    assert lrs(sparse=True, reference=True) == {"baseline": None, "sparse": 0.005, "finetune": 0.005,
                                                "distill": 0.005}
    assert set(lrs(recovery_lr=0.01).values()) == {None, 0.01}
    assert set(lrs(recovery_lr=0).values()) == {None}
    assert set(lrs(train_args={"optimizer": "SGD", "lr0": 0.01}).values()) == {None}  # the user's choice stands
    assert set(lrs("classify").values()) == {None}  # classifiers: not measured, Ultralytics' rate


def test_budget_goes_to_the_stages_that_make_the_final_weights():
    assert _plan()[1] == {"distill": 20}  # the default: prune + distillation
    segments, used = _plan(sparse=True)
    assert used == {"sparse": 10, "distill": 10}
    assert segments["sparse"] == Segment(0, 10, 20) and segments["distill"] == Segment(10, 10, 20)
    assert "finetune" not in segments  # no reference unless asked for: nothing trained that is not kept
    reference = _plan(sparse=True, reference=True)
    assert reference[1] == used and reference[0]["finetune"] == segments["distill"]  # beside distillation
    assert segments["baseline"] == Segment(0, 25, 25)  # outside the budget
    assert _plan(sparse=True, distill=False)[1] == {"sparse": 10, "finetune": 10}  # a stage off hands its epochs on
    assert _plan(sparse=True, distill_from="finetune")[1] == {"sparse": 7, "finetune": 7, "distill": 6}
    assert _plan(sparse=True, sparse_epochs=5, budget=30)[1] == {"sparse": 5, "distill": 25}
    three = _plan(sparse=True, epochs=3)
    assert three[1] == {"sparse": 3, "distill": 3} and three[0]["baseline"].epochs == 3
    with pytest.raises(CompressError, match="budget 12 leaves 0 epochs for 1 stages"):
        _plan(sparse=True, budget=12, sparse_epochs=12)


def test_one_schedule_over_the_budget():
    first, second = schedule_segment(Segment(0, 10, 20), {}), schedule_segment(Segment(10, 10, 20), {})
    assert first == {"schedule_start": 0, "schedule_epochs": 20, "close_mosaic": 0}  # mosaic on, warm-up kept
    assert second == {"schedule_start": 10, "schedule_epochs": 20, "close_mosaic": 10, "warmup_epochs": 0}
    assert schedule_segment(Segment(0, 15, 20), {"close_mosaic": 8})["close_mosaic"] == 3

    from yolo_compress.patches.trainers import ModuleKeepingTrainer

    whole = [max(1 - x / 20, 0) * 0.99 + 0.01 for x in range(20)]  # Ultralytics' linear schedule, lrf 0.01
    rates = []
    for start in (0, 10):
        trainer = ModuleKeepingTrainer.__new__(ModuleKeepingTrainer)
        trainer.args = SimpleNamespace(cos_lr=False, lrf=0.01, schedule_start=start, schedule_epochs=20)
        trainer.epochs = 10
        trainer.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        trainer._setup_scheduler()
        rates += [trainer.lf(x) for x in range(10)]
    assert rates == pytest.approx(whole)  # two segments decay as one run would


def _accuracy_benchmark():
    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("budget", [20, 40])
def test_benchmark_recipes_spend_exactly_the_budget(budget):
    bench = _accuracy_benchmark()
    for recipe, (_, keys) in bench.RECIPES.items():
        config = bench.recipe_config(keys, budget, 2.0, 0, Path("b.pt"), Path("d.yaml"), Path("o"), {})
        spent = _plan(**config)[1]
        bench.check_budget(spent, budget, recipe)  # raises if not
        assert sum(spent.values()) == budget, recipe


def test_benchmark_refuses_a_recipe_off_budget():
    bench = _accuracy_benchmark()
    config = bench.recipe_config({"sparse": True, "sparse_epochs": 15, "distill_epochs": 10}, 20, 2.0, 0, Path("b.pt"),
                                 Path("d.yaml"), Path("o"), {})
    spent = _plan(**config)[1]
    assert spent == {"sparse": 15, "distill": 10}
    with pytest.raises(SystemExit, match="trains .* = 25 epochs, not the budget 20"):
        bench.check_budget(spent, 20, "too_long")
    with pytest.raises(SystemExit, match="= 15 epochs, not the budget 20"):
        bench.check_budget({"finetune": 15}, 20, "too_short")


def test_benchmark_quick_mode_is_one_small_grid():
    bench = _accuracy_benchmark()
    quick = bench.parse_args(["--quick"])
    assert (quick.datasets, quick.budgets, quick.speedups, quick.seeds) == (["shapes"], [20], [2.0], [0, 1, 2])
    assert quick.recipes == ["A", "G", "default"]
    assert bench.parse_args(["--quick", "--datasets", "clutter"]).datasets == ["clutter"]
    full = bench.parse_args([])
    assert (full.budgets, full.speedups, len(full.seeds)) == ([20], [2.0, 3.0], 5)
    assert full.recipes == ["A", "G", "no_distill", "default"]
    assert full.datasets == [d for d, spec in bench.DATASETS.items() if spec["baseline"].is_file()]


def test_benchmark_fingerprint_counts_only_the_stages_that_run(tmp_path):
    from yolo_compress.config import load_config

    bench = _accuracy_benchmark()

    def fingerprint(work=tmp_path / "w1", running=("prune", "finetune"), **keys):
        baseline = work / "b.pt"
        if not baseline.is_file():
            work.mkdir(parents=True, exist_ok=True)
            baseline.write_bytes(b"weights")
        config = load_config(**bench.recipe_config(bench.RECIPES["G"][1], 20, 2.0, 0, baseline, work / "d.yaml",
                                                   work / "o", keys))
        return bench.run_fingerprint(baseline, config, list(running), work)

    ref = fingerprint()
    assert fingerprint(quantize_mode="accuracy", zero_at=0.3, kd_tau=2.0) == ref, "settings of stages that do not run"
    taught = fingerprint(running=("prune", "distill"))
    assert fingerprint(running=("prune", "distill"), kd_tau=2.0) != taught != ref, "a distillation setting"
    larger = fingerprint(teacher=str(tmp_path / "w1" / "t.pt"))
    assert larger != ref and fingerprint(tmp_path / "w2", teacher=str(tmp_path / "w2" / "t.pt")) == larger
    assert fingerprint(importance="l2") != ref and fingerprint(budget=40) != ref, "settings of stages that run"
    assert fingerprint(train_args={"lr0": 0.02}) != ref
    assert fingerprint(tmp_path / "w2") == ref, "the same run in another work folder (G's teacher path included)"
    (tmp_path / "w1" / "b.pt").write_bytes(b"other weights")
    assert fingerprint() != ref, "another baseline"


def test_import_changes_nothing_in_the_process():
    script = ("import os, torch; env = dict(os.environ); n = torch.get_num_threads(); import yolo_compress, sys; "
              "print(env == dict(os.environ), n == torch.get_num_threads(), 'ultralytics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in __import__("os").environ.items() if not k.startswith("YOLO")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True", "False"]


def test_benchmark_exploration_pairs_with_the_tags_own_A_when_it_ran_one():
    bench = _accuracy_benchmark()
    run = {"epochs": {"finetune": 20}}
    runs = {"runs": {
        "main/d/20ep/3x/A/seed0": {**run, "map": 0.50}, "main/d/20ep/3x/A/seed1": {**run, "map": 0.52},
        "xlr/d/20ep/3x/A/seed0": {**run, "map": 0.54}, "xlr/d/20ep/3x/A/seed1": {**run, "map": 0.56},
        "xlr/d/20ep/3x/default/seed0": {**run, "map": 0.55}, "xlr/d/20ep/3x/default/seed1": {**run, "map": 0.58},
        "xkd/d/20ep/3x/default/seed0": {**run, "map": 0.51}, "xkd/d/20ep/3x/default/seed1": {**run, "map": 0.55},
    }}
    rows = {(c[0], c[2]): c[6:] for c in (line.strip("| ").split(" | ") for line in bench.exploration(runs)[4:-1])}
    assert rows[("xlr", "default {}")] == ["+1.5", "xlr"], "its own (A): (0.01 + 0.02) / 2"
    assert rows[("xlr", "A {}")] == ["+0.0", "xlr"]
    assert rows[("xkd", "default {}")] == ["+2.0", "main A"], "no (A) of its own: main's, (0.01 + 0.03) / 2"
    runs["runs"] |= {"main/d/20ep/3x/A_stock/seed0": {**run, "map": 0.40},
                     "xult/d/20ep/3x/default/seed0": {**run, "map": 0.45, "overrides": {"recovery_lr": 0}}}
    rows = {(c[0], c[2]): c[6:] for c in (line.strip("| ").split(" | ") for line in bench.exploration(runs)[4:-1])}
    assert rows[("xult", 'default {"recovery_lr": 0}')] == ["+5.0", "main A_stock"], "at Ultralytics' own rate"


def test_benchmark_summary_pairs_with_A_and_writes_no_nan():
    bench = _accuracy_benchmark()
    run = {"epochs": {"finetune": 20}, "epochs_total": 20}
    runs = {"runs": {
        "main/d/20ep/2x/A/seed0": {**run, "map": 0.50}, "main/d/20ep/2x/A/seed1": {**run, "map": 0.52},
        "main/d/20ep/2x/default/seed0": {**run, "map": 0.53}, "main/d/20ep/2x/default/seed1": {**run, "map": 0.54},
        "main/d/36ep/2x/default/seed0": {**run, "epochs_total": 36, "map": 0.60},
    }}
    summary = bench.summarise(runs, "main")
    entry = summary["d"]["20ep"]["2x"]["default"]
    assert entry["diff_vs_A"] == pytest.approx(0.025) and entry["seeds"] == 2 and entry["paired_seeds"] == 2
    # t(1) = 12.706; the paired differences 0.03 and 0.02 have std 0.00707
    assert entry["ci95_low"] == pytest.approx(0.025 - 12.706 * 0.0070711 / 2 ** 0.5, abs=1e-4)
    lone = bench.no_nan(summary)["d"]["36ep"]["2x"]["default"]
    assert (lone["map_std"], lone["diff_vs_A"], lone["ci95_low"]) == (None, None, None)
    json.dumps(bench.no_nan(summary), allow_nan=False)  # raises on a NaN left anywhere
    runs["runs"]["main/d/20ep/2x/A/seed2"] = {**run, "epochs_total": 25, "map": 0.5}
    with pytest.raises(SystemExit, match="different epoch totals"):
        bench.summarise(runs, "main")


def test_benchmark_targets_count_only_over_five_paired_seeds():
    bench = _accuracy_benchmark()
    run = {"epochs": {"finetune": 36}, "epochs_total": 36}
    runs = {"runs": {f"main/d/36ep/2x/{recipe}/seed{s}": {**run, "map": m + 0.02 * s}
                     for s in range(5) for recipe, m in (("A", 0.50), ("default", 0.52))}}
    bench.BASELINE_EPOCHS["d"] = 120
    rows = {r["target"].split(": ", 1)[1].split(" by")[0].split(",")[0]: r
            for r in bench.targets(bench.summarise(runs, "main"), {"d": 0.55})}
    assert rows["the default beats (A)"]["met"] and rows["the default beats (A)"]["measured"].startswith("+2.00 pt")
    within = rows["the default within 1 pt of the baseline"]
    assert within["met"] and within["measured"].startswith("1.0 pt above (0.560 vs 0.550), budget 30%, 5 seeds")
    del runs["runs"]["main/d/36ep/2x/default/seed4"], runs["runs"]["main/d/36ep/2x/A/seed4"]
    rows = bench.targets(bench.summarise(runs, "main"), {"d": 0.55})
    assert not any(r["met"] for r in rows), "4 seeds: nothing counts as met"
