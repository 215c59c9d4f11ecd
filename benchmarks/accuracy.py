"""Does every stage earn its place? Compression recipes at an equal training budget, paired over seeds.

Every recipe starts from the same converged baseline and gets the same number of training epochs after it (sparse
training, fine-tuning and distillation all count: its plan's ``budget`` is checked against the budget
and a recipe that spends more or less is refused). Each recipe is a set of pipeline config keys:

    A        prune with torch-pruning's default criterion (group magnitude) and the Detect head kept whole, as its
             YOLOv8 example does, + the stock fine-tune for the whole budget (at the recovery learning rate every
             recipe gets)
    A_stock  (A) at Ultralytics' own learning rate: what a user does without this project
    G        (A) with Ultralytics' built-in distillation (``distill_model``, the unpruned model as teacher)
    default  ``yolo-compress run`` as it is (prune, the head's inner convs like any other layer, + logit KD from
             the baseline over the whole budget)
    no_distill   the default without distillation (its pruning + fine-tuning): does distillation earn its place?
    with_sparse, sparse_finetune   sparse training added (its epochs taken from the budget), with KD or fine-tuning
    larger_teacher   the default distilled from a YOLOv8s trained like the baseline (data sets that ship one)

Accuracy is mAP50-95 (of the masks for segment, OKS for pose) of the final weights on a ``test`` split that no
recipe sees while training (500 images, generated next to the data's own 50-image ``val`` split that picks best
epochs). Seeds are paired: seed ``s`` seeds every stage of every recipe, and each recipe is compared with (A) seed
by seed (mean, std, 95% t-interval of the paired difference). Every finished run is recorded in
``results/accuracy_runs.json`` with a fingerprint of its baseline and config, so a rerun continues where it stopped,
across sessions. Writes ``accuracy.md`` and ``accuracy.json`` under ``results/``. Run it alone on the machine.

    .venv/bin/python benchmarks/accuracy.py --quick              # shapes, budget 20, 2x, 3 seeds, A G default
    .venv/bin/python benchmarks/accuracy.py                      # budget 20, 2x and 3x, 5 seeds, A G no_distill default
    .venv/bin/python benchmarks/accuracy.py --budgets 36 --speedups 2 --recipes default   # 30% of the baseline's epochs
    .venv/bin/python benchmarks/accuracy.py --tag x1 --recipes default --seeds 0 --set zero_at=0.3  # exploration
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS_FILE = RESULTS / "accuracy_runs.json"
WEIGHTS = ROOT.parent / "weights"
# data set -> its generator keywords (train/val as the shipped baseline saw them, plus the test split) and baseline
DATASETS = {
    "shapes": {"make": {"n_train": 200, "n_val": 50, "n_test": 500, "imgsz": 160, "seed": 0},
               "baseline": WEIGHTS / "shapes-yolov8n.pt", "kind": "shapes"},
    "clutter": {"make": {"n_train": 600, "n_val": 100, "n_test": 500, "imgsz": 192, "seed": 0},
                "baseline": WEIGHTS / "clutter-yolov8n.pt", "kind": "clutter",
                "teacher": WEIGHTS / "clutter-yolov8s.pt"},  # a YOLOv8s trained like the baseline
}
# the other families on the same clutter images (``data``: the generated set they share), each from its own baseline
for _family in ("yolo11n", "yolo26n"):
    DATASETS[f"clutter-{_family}"] = {**DATASETS["clutter"], "data": "clutter",
                                      "baseline": WEIGHTS / f"clutter-{_family}.pt", "teacher": None}
# the other tasks on their built-in sets, scored by the task's own main metric as its Ultralytics validator computes it
for _task, _metric in (("segment", "mask mAP50-95"), ("pose", "pose mAP50-95"), ("obb", "mAP50-95")):
    DATASETS[_task] = {"make": {**DATASETS["shapes"]["make"]}, "baseline": WEIGHTS / f"{_task}-yolov8n.pt",
                       "kind": _task, "metric": _metric, "min_seeds": 5 if _task == "segment" else 3}
# (A): torch-pruning as its YOLOv8 example uses it, then the stock trainer; A_stock and G vary it by one key
_A = {"sparse": False, "distill": False, "importance": "group_norm", "head_ratio": 0, "schedule": "stage"}
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "A": ("prune (torch-pruning's group magnitude, Detect head kept whole as in its YOLOv8 example) + stock fine-tune",
          _A),
    "A_stock": ("(A) at Ultralytics' own learning rate (recovery_lr 0): what a user does without this project",
                {**_A, "recovery_lr": 0}),
    "G": ("(A) + Ultralytics' distill_model (teacher: the baseline)",
          {**_A, "train_args": {"distill_model": "{baseline}"}}),
    "default": ("yolo-compress run (defaults: prune, head's inner convs too but pose and OBB heads, and YOLO26 "
                "detection heads up to 2x, kept whole, + logit KD from the baseline)",
                {"finetune": False}),
    "no_distill": ("the default without distillation: its pruning + fine-tuning for the whole budget",
                   {"distill": False}),
    "with_sparse": ("the default with sparse training first (its epochs taken from the budget)",
                    {"finetune": False, "sparse": True}),
    "sparse_finetune": ("sparse training + pruning + fine-tuning (no distillation)",
                        {"sparse": True, "distill": False}),
    "larger_teacher": ("the default with a larger teacher (YOLOv8s, trained like the baseline)",
                       {"finetune": False, "teacher": "{teacher}"}),  # data sets that ship one
}
FULL = ("A", "G", "no_distill", "default")  # what the README's table needs; the others on request
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def metric(dataset: str) -> str:
    """The metric a data set's runs are compared on: box mAP50-95 unless its task has its own (masks, keypoints)."""
    return DATASETS[dataset].get("metric", "mAP50-95")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_runs() -> dict[str, Any]:
    return json.loads(RUNS_FILE.read_text()) if RUNS_FILE.is_file() else {"runs": {}}


def save_runs(runs: dict[str, Any]) -> None:
    from yolo_compress.checkpoint import atomic_write_bytes

    atomic_write_bytes(RUNS_FILE, json.dumps(runs, indent=1, sort_keys=True).encode())


def recipe_config(recipe: dict[str, Any], budget: int, speed_up: float, seed: int, baseline: Path, data: Path,
                  out: Path, extra: dict[str, Any], teacher: Path | None = None) -> dict[str, Any]:
    """The pipeline config keys of one run: the recipe's (``{baseline}``, ``{teacher}`` filled in), the budget,
    the target and the seed."""
    def fill(value: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(value).replace("{baseline}", str(baseline)).replace("{teacher}", str(teacher)))

    keys = fill({**recipe, **extra})
    train_args = fill({"plots": False, "seed": seed, "deterministic": True, **recipe.get("train_args", {}),
                       **extra.get("train_args", {})})
    return {"weights": str(baseline), "data": str(data), "out": str(out), "compare": False, "budget": budget,
            "speed_up": speed_up, **keys, "train_args": train_args}


def run_fingerprint(baseline: Path, config: Any, running: list[str], work: Path) -> str:
    """The baseline's hash and every resolved key that can change the run (defaults included: a changed default
    reruns the recipe): the run's keys, ``train_args``, switches, epochs, and the settings of the stages in
    ``running`` only, so that a setting added to a stage the recipe does not run (a new INT8 mode) keeps its
    records. Paths under ``work`` and the repository are written relative to them: a record holds in any checkout."""
    from yolo_compress.config import config_dict

    idle = {k for name, settings in config.settings.items() if name not in running for k in settings.to_dict()}
    keys = {k: v for k, v in config_dict(config).items() if k != "out" and k not in idle}
    text = json.dumps([sha(baseline), keys], sort_keys=True, default=str)
    for root, name in ((work, "<work>"), (ROOT.parent, "<repo>")):
        text = text.replace(str(Path(root).resolve()), name)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_version() -> str:
    """The yolo-compress version and commit that ran a record (the fingerprint holds the config, not the code), with
    "+dirty" when the checkout had uncommitted changes."""
    import subprocess

    import yolo_compress

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{yolo_compress.__version__} {commit}{dirty}"


def check_budget(spent: dict[str, int], budget: int, run_id: str) -> None:
    """Refuse a recipe whose training stages spend more or less than the budget.

    Raises:
        SystemExit: the stages' epochs do not add up to ``budget``.
    """
    if sum(spent.values()) != budget:
        raise SystemExit(f"{run_id}: the recipe trains {spent} = {sum(spent.values())} epochs, not the budget "
                         f"{budget}; fix its epochs keys")


def data_yaml(name: str, work: Path) -> Path:
    """The benchmark's copy of a data set (generated on first use): the baseline's train/val plus the test split."""
    from yolo_compress.data import GENERATORS

    root = work / "data" / DATASETS[name].get("data", name)
    if not (root / "data.yaml").is_file():
        GENERATORS[DATASETS[name]["kind"]](root, **DATASETS[name]["make"])
    return root / "data.yaml"


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a, self.work = a, Path(a.work).resolve()
        self.runs = load_runs()

    def run_one(self, dataset: str, budget: int, speed_up: float, recipe: str, seed: int) -> None:
        from yolo_compress.config import load_config
        from yolo_compress.dataset import resolve_data
        from yolo_compress.pipeline import CompressionPipeline
        from yolo_compress.validation import validate

        run_id = f"{self.a.tag}/{dataset}/{budget}ep/{speed_up:g}x/{recipe}/seed{seed}"
        baseline, data = DATASETS[dataset]["baseline"], data_yaml(dataset, self.work)
        if not baseline.is_file():
            raise SystemExit(f"{dataset}: no converged baseline at {baseline}; train it first (weights/README.md)")
        teacher = DATASETS[dataset].get("teacher")
        if "{teacher}" in json.dumps(RECIPES[recipe][1]) and not (teacher and teacher.is_file()):
            print(f"{run_id}: skipped, {dataset} ships no larger teacher (weights/README.md)", flush=True)
            return
        out = self.work / run_id
        keys = recipe_config(RECIPES[recipe][1], budget, speed_up, seed, baseline, data, out, self.a.overrides,
                             teacher)
        config = load_config(**keys)
        pipeline = CompressionPipeline(config)
        fingerprint = run_fingerprint(baseline, config, [s.name for s in pipeline.stages], self.work)
        if self.runs["runs"].get(run_id, {}).get("fingerprint") == fingerprint:
            return
        spent = pipeline.ctx.plan.budget
        check_budget(spent, budget, run_id)
        load0, t0, cpu0 = os.getloadavg()[0], time.time(), time.process_time()
        result = pipeline.run()
        seconds, cpu = round(time.time() - t0), round(time.process_time() - cpu0)
        final = result.weights[pipeline.ctx.plan.final]
        test = validate(final, resolve_data(data), pipeline.ctx.imgsz, split="test")
        self.runs["runs"][run_id] = {
            "fingerprint": fingerprint, "map": test[metric(dataset)], "map50": test[metric(dataset).replace("-95", "")],
            "metric": metric(dataset), "metrics": test, "seed": seed,
            "epochs": spent, "epochs_total": sum(spent.values()), "overrides": self.a.overrides,
            "seconds": seconds, "cpu_seconds": cpu, "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2), "code": code_version()}
        save_runs(self.runs)
        print(f"{run_id}: {metric(dataset)} {test[metric(dataset)]:.4f} ({spent}, {seconds} s)", flush=True)

    def run(self) -> None:
        a = self.a
        for dataset in a.datasets:
            for budget in a.budgets:
                for speed_up in a.speedups:
                    for seed in a.seeds:  # seed-major: every recipe of a seed before the next seed
                        for recipe in a.recipes:
                            self.run_one(dataset, budget, speed_up, recipe, seed)


# ---- report ------------------------------------------------------------------------------------------------------
def paired(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval."""
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, float("nan"), float("nan")
    half = T975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def summarise(runs: dict[str, Any], tag: str) -> dict[str, Any]:
    """``{data set: {"<N>ep": {"2x": {recipe: entry}}}}`` over the runs of ``tag``.

    Raises:
        SystemExit: runs of one section with different epoch totals (they are not comparable).
    """
    out: dict[str, Any] = {}
    for run_id, r in runs["runs"].items():
        t, dataset, budget, ratio, recipe, seed = run_id.split("/")
        if t != tag:
            continue
        entry = out.setdefault(dataset, {}).setdefault(budget, {}).setdefault(ratio, {}).setdefault(recipe, {})
        entry[seed] = r
    for dataset, budgets in out.items():
        for budget, ratios in budgets.items():
            for ratio, recipes in ratios.items():
                totals = {r["epochs_total"] for seeds in recipes.values() for r in seeds.values()}
                if len(totals) != 1:
                    raise SystemExit(f"{dataset}/{budget}/{ratio}: runs with different epoch totals {totals}")
                total, ref = totals.pop(), dict(recipes.get("A", {}))
                for recipe, seeds in list(recipes.items()):
                    order = sorted(seeds)
                    maps = [seeds[s]["map"] for s in order]
                    common = sorted(set(seeds) & set(ref))
                    nan = float("nan")
                    diff, low, high = paired([seeds[s]["map"] - ref[s]["map"] for s in common]) if common else (
                        nan, nan, nan)
                    recipes[recipe] = {
                        "map_mean": statistics.mean(maps), "map_std": statistics.stdev(maps) if len(maps) > 1 else nan,
                        "seeds": len(maps), "epochs_total": total, "epochs": seeds[order[0]]["epochs"],
                        "diff_vs_A": diff, "ci95_low": low, "ci95_high": high, "paired_seeds": len(common),
                        "maps": dict(zip(order, maps))}
    return out


def baseline_maps(names: list[str], work: str) -> dict[str, float]:
    """Each data set's shipped baseline on its test split (every data set of the report, not only this run's)."""
    from yolo_compress.dataset import resolve_data
    from yolo_compress.validation import validate

    out = {}
    for name in names:
        if DATASETS[name]["baseline"].is_file():
            ds = resolve_data(data_yaml(name, Path(work).resolve()))
            out[name] = validate(DATASETS[name]["baseline"], ds, ds.imgsz, split="test")[metric(name)]
    return out


# how long each shipped baseline trained (weights/README.md)
BASELINE_EPOCHS = {"shapes": 120, "clutter": 120, "clutter-yolo11n": 120, "clutter-yolo26n": 120, "segment": 120,
                   "pose": 120, "obb": 120}
GAIN = {"2x": 0.015, "3x": 0.03}  # the targets: the default over (A)
MIN_SEEDS = 5  # a target counts as met over at least this many paired seeds (a data set may say fewer: pose, obb)


def paired_vs(recipes: dict[str, Any], a: str, b: str) -> tuple[float, float, float, int]:
    """Mean paired difference ``a - b`` over their common seeds and its 95% interval."""
    common = sorted(set(recipes[a]["maps"]) & set(recipes[b]["maps"]))
    if not common:
        return float("nan"), float("nan"), float("nan"), 0
    return (*paired([recipes[a]["maps"][s] - recipes[b]["maps"][s] for s in common]), len(common))


def targets(summary: dict[str, Any], base: dict[str, float]) -> list[dict[str, Any]]:
    """The issue's targets, checked on the measured runs: what was aimed at, what came out, met or not."""
    rows = []
    for dataset, budgets in summary.items():
        for budget, ratios in budgets.items():
            for ratio, rec in ratios.items():
                where, min_seeds = f"{dataset} {budget} {ratio}", DATASETS.get(dataset, {}).get("min_seeds", MIN_SEEDS)
                if "default" not in rec:
                    continue
                gain = GAIN.get(ratio, 0.0)
                for other, need, what in (
                        ("A", gain, "the default beats (A)"), ("G", gain, "the default beats (G)"),
                        ("no_distill", 0.0, "distillation earns its place (the default over no_distill)"),
                        ("with_sparse", 0.0, "leaving sparse training out pays (the default over with_sparse)")):
                    if other not in rec:
                        continue
                    diff, low, high, n = paired_vs(rec, "default", other)
                    rows.append({"target": f"{where}: {what} by >= {100 * need:g} pt, CI above 0, "
                                           f">= {min_seeds} seeds",
                                 "measured": f"{100 * diff:+.2f} pt [{100 * low:+.2f}, {100 * high:+.2f}], {n} seeds",
                                 "met": bool(diff >= need and low > 0 and n >= min_seeds)})
                if ratio == "2x" and dataset in base:
                    epochs = int(budget.rstrip("ep"))
                    gap, n = base[dataset] - rec["default"]["map_mean"], rec["default"]["seeds"]
                    share = epochs / BASELINE_EPOCHS.get(dataset, float("inf"))
                    side = f"{100 * gap:.1f} pt below" if gap > 0 else f"{-100 * gap:.1f} pt above"
                    rows.append({"target": f"{where}: the default within 1 pt of the baseline, budget <= 30% of its "
                                           f"epochs, >= {min_seeds} seeds",
                                 "measured": f"{side} ({rec['default']['map_mean']:.3f} vs {base[dataset]:.3f}), "
                                             f"budget {100 * share:.0f}%, {n} seeds",
                                 "met": bool(gap <= 0.01 and share <= 0.3 and n >= min_seeds)})
    return rows


def no_nan(value: Any) -> Any:
    """``value`` with every NaN (no spread from one seed, no (A) to pair with) as None: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


def write_report(summary: dict[str, Any], base: dict[str, float], a: argparse.Namespace) -> None:
    from yolo_compress.checkpoint import atomic_write_bytes

    checked = targets(summary, base)
    record = no_nan({**summary, "baselines": base, "targets": checked})
    atomic_write_bytes(RESULTS / "accuracy.json", json.dumps(record, indent=1, allow_nan=False).encode())
    lines = ["# Accuracy of the compression recipes at an equal training budget", "",
             "Produced by `benchmarks/accuracy.py` (every run in `accuracy_runs.json`: epochs per stage, seconds, "
             "load average). mAP50-95 (of the masks for segment, OKS for pose) of the final weights on the 500-image "
             "test split; the paired difference to (A) and its 95% t-interval over the same seeds. Every recipe of a "
             "section trains the same total epochs after the baseline. How to read it and what was tried: "
             "`accuracy_notes.md`.", ""]
    for dataset, budgets in summary.items():
        name = metric(dataset)
        lines += [f"## {dataset} (baseline {name} on test: {base.get(dataset, float('nan')):.3f})", ""]
        for budget, ratios in sorted(budgets.items(), key=lambda kv: int(kv[0].rstrip("ep"))):
            for ratio, recipes in sorted(ratios.items()):
                lines += [f"### {budget}, {ratio} fewer GFLOPs", "",
                          f"| recipe | what | epochs | {name} mean | std | seeds | vs A | 95% CI |",
                          "|---|---|---|---:|---:|---:|---:|---|"]
                for recipe, e in recipes.items():
                    what = RECIPES[recipe][0] if recipe in RECIPES else recipe
                    split = epoch_split(e["epochs"])
                    ci = "" if math.isnan(e["ci95_low"]) else (
                        f"[{100 * e['ci95_low']:+.1f}, {100 * e['ci95_high']:+.1f}]")
                    std = "n/a" if math.isnan(e["map_std"]) else f"{e['map_std']:.3f}"  # one seed has no spread
                    vs_a = "n/a" if math.isnan(e["diff_vs_A"]) else f"{100 * e['diff_vs_A']:+.1f}"  # no (A) here
                    lines.append(f"| {recipe} | {what} | {split} | {e['map_mean']:.3f} | {std} | "
                                 f"{e['seeds']} | {vs_a} | {ci} |")
                lines.append("")
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in checked]
    lines += [""]
    lines += exploration(load_runs())
    atomic_write_bytes(RESULTS / "accuracy.md", ("\n".join(lines) + "\n" + a.notes).encode())


def epoch_split(epochs: dict[str, int]) -> str:
    """``sparse 10 + distill 10``, in pipeline order."""
    order = ("sparse", "finetune", "distill")
    return " + ".join(f"{k} {epochs[k]}" for k in sorted(epochs, key=lambda k: order.index(k) if k in order else 9))


def a_maps(runs: dict[str, Any], tag: str, cell: str, recipe: str = "A") -> dict[str, float]:
    """seed -> mAP of the ``recipe`` runs (default (A)) of ``tag`` in ``cell`` (``data set/budget/ratio``)."""
    prefix = f"{tag}/{cell}/{recipe}/"
    return {k.rsplit("/", 1)[1]: r["map"] for k, r in runs["runs"].items() if k.startswith(prefix)}


def exploration(runs: dict[str, Any]) -> list[str]:
    """Every other tag's runs (``--tag x... --set ...``), each paired seed by seed with an (A): the tag's own when it
    ran one in that cell (a change that applies to every recipe, such as the learning rate, is then compared at the
    same change), else ``main``'s at the same learning rate (``A_stock`` for a tag run at ``recovery_lr`` 0)."""
    groups: dict[tuple, dict[str, float]] = {}
    for run_id, r in runs["runs"].items():
        tag, dataset, budget, ratio, recipe, seed = run_id.split("/")
        if tag != "main":
            key = (tag, dataset, budget, ratio, recipe, json.dumps(r.get("overrides", {}), sort_keys=True),
                   epoch_split(r["epochs"]))
            groups.setdefault(key, {})[seed] = r["map"]
    if not groups:
        return []
    lines = ["## Exploration (other tags: one change each, paired on the same seeds with the tag's own (A) where it "
             "ran one, else with main's at the same learning rate)", "",
             "| tag | data / budget / ratio | recipe + change | epochs | mAP50-95 mean | seeds | vs A | A of |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for (tag, dataset, budget, ratio, recipe, overrides, split), maps in sorted(groups.items()):
        cell = f"{dataset}/{budget}/{ratio}"
        own = a_maps(runs, tag, cell)
        main = "A_stock" if json.loads(overrides).get("recovery_lr") == 0 else "A"
        ref_tag, ref = (tag, own) if own else (f"main {main}", a_maps(runs, "main", cell, main))
        common = sorted(set(maps) & set(ref))
        diff = statistics.mean(maps[s] - ref[s] for s in common) if common else float("nan")
        lines.append(f"| {tag} | {dataset} / {budget} / {ratio} | {recipe} {overrides} | {split} | "
                     f"{statistics.mean(maps.values()):.3f} | {len(maps)} | {100 * diff:+.1f} | {ref_tag} |")
    return [*lines, ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``--quick`` and the data-set default applied."""
    from yolo_compress.cli import parse_key_values

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "work" / "accuracy"), help="data, weights and runs (cache)")
    ap.add_argument("--tag", default="main", help="run-id prefix; only 'main' is reported")
    ap.add_argument("--quick", action="store_true",
                    help="budget 20, 2x, seeds 0-2, recipes A G default, on shapes unless --datasets says otherwise")
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS),
                    help="default: every data set whose baseline is there (--quick: shapes)")
    ap.add_argument("--recipes", nargs="+", default=list(FULL), choices=list(RECIPES),
                    help=f"default: {' '.join(FULL)} (about 3.5 hours on 2 cores with both data sets)")
    ap.add_argument("--budgets", nargs="+", type=int, default=[20])
    ap.add_argument("--speedups", nargs="+", type=float, default=[2.0, 3.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="pipeline config key for every run of this tag (exploration)")
    ap.add_argument("--notes", default="", help="file whose text is appended to accuracy.md")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:  # shapes: ~10 min on 2 cores; one clutter run alone takes ~6
        a.budgets, a.speedups, a.seeds, a.recipes = [20], [2.0], [0, 1, 2], ["A", "G", "default"]
        a.datasets = a.datasets or ["shapes"]
    a.datasets = a.datasets or [d for d in DATASETS if DATASETS[d]["baseline"].is_file()]
    a.overrides = parse_key_values(a.sets)
    a.notes = Path(a.notes).read_text() if a.notes else ""
    return a


def main() -> None:
    a = parse_args()
    if not a.report_only:
        Bench(a).run()
    if a.tag == "main":
        summary = summarise(load_runs(), a.tag)
        write_report(summary, baseline_maps(list(summary), a.work), a)


if __name__ == "__main__":
    main()
