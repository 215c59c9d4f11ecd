"""At YOLOv8n's cost, is a compressed YOLOv8s better than the stock YOLOv8n? Paired over seeds, on clutter.

The user's cheaper option is the small stock model (Liu et al., "Rethinking the Value of Network Pruning", ICLR
2019). Both converged baselines ship (``weights/clutter-yolov8s.pt``, ``weights/clutter-yolov8n.pt``, 120 epochs
each); every recipe gets the same epochs after them:

    large    clutter-yolov8s.pt pruned to clutter-yolov8n.pt's GFLOPs (the pruner lands within 1%) + the default
             recipe over the budget (logit KD from the unpruned YOLOv8s): ``yolo-compress run`` as it is
    small    clutter-yolov8n.pt trained the same number of epochs more, at the recovery learning rate every recipe
             gets (``PruneModel.train``, what a user would do instead)
    shipped  clutter-yolov8n.pt as shipped (no training: one number)
    scratch  the pruned YOLOv8s architecture from a random init, trained 120 epochs like the baselines (the
             control of Liu et al.: is it the architecture or the inherited weights?)

Accuracy is mAP50-95 on the clutter ``test`` split no recipe trains or selects on (the accuracy benchmark's data);
``large`` is compared with ``small`` seed by seed (mean, std, 95% t-interval of the paired difference). Latency
(``--latency``): the ``large`` and ``small`` weights of the first seed, exported to ONNX Runtime and OpenVINO, timed
interleaved at 1 and 2 threads (``yolo-compress compare``). Finished runs are recorded in
``results/large_vs_small_runs.json`` (a rerun continues); writes ``results/large_vs_small.md`` and ``.json`` with
the issue's targets checked. Run it alone on the machine.

    .venv/bin/python benchmarks/large_vs_small.py                       # budget 20, seeds 0-4, large small shipped
    .venv/bin/python benchmarks/large_vs_small.py --recipes scratch --seeds 0 1
    .venv/bin/python benchmarks/large_vs_small.py --budgets 40 80 --seeds 0 1 2   # the budget curve
    .venv/bin/python benchmarks/large_vs_small.py --latency                 # alone: latency of seed 0's weights
    .venv/bin/python benchmarks/large_vs_small.py --recipes large --tag cwd --set loss=cwd+kd --seeds 0 1  # a lever

A ``--tag`` run is ``large`` with the ``--set`` keys (one change, an exploration): recorded as ``large+TAG``,
reported beside ``large`` and paired with ``small`` on the same seeds; the targets read ``large`` only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS_FILE = RESULTS / "large_vs_small_runs.json"
WEIGHTS = ROOT.parent / "weights"
LARGE, SMALL = WEIGHTS / "clutter-yolov8s.pt", WEIGHTS / "clutter-yolov8n.pt"
SCRATCH_EPOCHS = 120  # the baselines' own schedule (weights/README.md)
RECIPES = ("large", "small", "shipped", "scratch")
TARGET_GAIN, TARGET_SLOWER = 1.5, 0.05  # points of mAP50-95 over ``small``; OpenVINO 2-thread latency over ``small``


def _accuracy_module() -> Any:
    """The accuracy benchmark, for its data, fingerprints and paired statistics (one definition of each)."""
    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ACC = _accuracy_module()


def load_runs() -> dict[str, Any]:
    return json.loads(RUNS_FILE.read_text()) if RUNS_FILE.is_file() else {"runs": {}}


def save_runs(runs: dict[str, Any]) -> None:
    from yolo_compress.checkpoint import atomic_write_bytes

    atomic_write_bytes(RUNS_FILE, json.dumps(runs, indent=1, sort_keys=True).encode())


def target_speed_up(imgsz: int) -> float:
    """GFLOPs of the large baseline over the small one's: the target that lands the large model at the small cost."""
    from yolo_compress.checkpoint import load_model
    from yolo_compress.models import model_size

    return model_size(load_model(LARGE), imgsz)["gflops"] / model_size(load_model(SMALL), imgsz)["gflops"]


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        from yolo_compress.dataset import resolve_data

        self.a, self.work = a, Path(a.work).resolve()
        self.data_yaml = ACC.data_yaml("clutter", self.work)
        self.data = resolve_data(self.data_yaml)
        self.runs = load_runs()

    def _done(self, run_id: str, fingerprint: str) -> bool:
        return self.runs["runs"].get(run_id, {}).get("fingerprint") == fingerprint

    def _record(self, run_id: str, fingerprint: str, weights: Path, seed: int, epochs: int, t0: float,
                load0: float, **extra: Any) -> None:
        from yolo_compress.checkpoint import load_model
        from yolo_compress.models import model_size
        from yolo_compress.validation import validate

        test = validate(weights, self.data, self.data.imgsz, split="test")
        root = self.work if weights.is_relative_to(self.work) else ROOT.parent  # the shipped one: the repository's
        self.runs["runs"][run_id] = {
            "fingerprint": fingerprint, "map": test["mAP50-95"], "map50": test["mAP50"], "seed": seed,
            "epochs": epochs, "weights": str(weights.relative_to(root)), "seconds": round(time.time() - t0),
            **model_size(load_model(weights), self.data.imgsz), "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2), **extra}
        save_runs(self.runs)
        print(f"{run_id}: mAP50-95 {test['mAP50-95']:.4f} ({round(time.time() - t0)} s)", flush=True)

    def large(self, budget: int, seed: int) -> None:
        from yolo_compress.config import load_config
        from yolo_compress.pipeline import CompressionPipeline

        name = f"large+{self.a.tag}" if self.a.tag else "large"
        run_id, out = f"{name}/{budget}ep/seed{seed}", self.work / "large_vs_small" / f"{name}-{budget}ep-{seed}"
        keys = ACC.recipe_config(ACC.RECIPES["default"][1], budget, target_speed_up(self.data.imgsz), seed, LARGE,
                                 self.data_yaml, out, self.a.overrides)
        config = load_config(**keys)
        pipeline = CompressionPipeline(config)
        fingerprint = ACC.run_fingerprint(LARGE, config, [s.name for s in pipeline.stages], self.work)
        if self._done(run_id, fingerprint):
            return
        ACC.check_budget(pipeline.ctx.plan.budget, budget, run_id)
        load0, t0 = os.getloadavg()[0], time.time()
        result = pipeline.run()
        self._record(run_id, fingerprint, result.weights[pipeline.ctx.plan.final], seed, budget, t0, load0,
                     overrides=self.a.overrides)

    def _train(self, run_id: str, source: Path, seed: int, epochs: int, **keys: Any) -> None:
        """``source`` trained ``epochs`` more with ``PruneModel.train`` (``keys``: its other keywords)."""
        from yolo_compress import PruneModel

        args = {"epochs": epochs, "batch": 16, "seed": seed, "deterministic": True, "plots": False, **keys}
        fingerprint = ACC.sha(source) + json.dumps(args, sort_keys=True)
        if self._done(run_id, fingerprint):
            return
        out = self.work / "large_vs_small" / f"{run_id.replace('/', '-')}.pt"
        load0, t0 = os.getloadavg()[0], time.time()
        pm = PruneModel(source, data=self.data_yaml)
        pm.train(save_dir=out, resume=(out.parent / "runs" / out.stem).is_dir() and not out.is_file(), **args)
        self._record(run_id, fingerprint, out, seed, epochs, t0, load0)

    def scratch(self, seed: int) -> None:
        """The pruned architecture of ``large`` (budget 20) from a random init, 120 epochs as a yaml baseline trains
        (Ultralytics' own optimizer choice: ``recovery_lr`` 0). The default prunes before any seeded stage, so every
        seed's ``prune.pt`` is the same architecture: the first one found serves."""
        found = sorted((self.work / "large_vs_small").glob("large-20ep-*/prune.pt"))
        if not found:
            raise SystemExit(f"scratch needs a pruned model under {self.work / 'large_vs_small'}: run the large "
                             "recipe at budget 20 first")
        pruned = found[0]
        init = pruned.with_name(f"scratch-init-{seed}.pt")
        if not init.is_file():
            random_init(pruned, init, seed)
        self._train(f"scratch/{SCRATCH_EPOCHS}ep/seed{seed}", init, seed, SCRATCH_EPOCHS, recovery_lr=0,
                    patience=25)

    def run(self) -> None:
        a = self.a
        for budget in a.budgets:
            for seed in a.seeds:
                if "large" in a.recipes:
                    self.large(budget, seed)
                if "small" in a.recipes:
                    self._train(f"small/{budget}ep/seed{seed}", SMALL, seed, budget)
        if "shipped" in a.recipes:
            self._shipped()
        if "scratch" in a.recipes:
            for seed in a.seeds:
                self.scratch(seed)

    def _shipped(self) -> None:
        fingerprint = ACC.sha(SMALL)
        if not self._done("shipped", fingerprint):
            load0, t0 = os.getloadavg()[0], time.time()
            self._record("shipped", fingerprint, SMALL, 0, 0, t0, load0)


def random_init(pruned: Path, out: Path, seed: int) -> None:
    """``pruned``'s architecture with fresh weights: every layer's own initialiser, then Ultralytics' (BatchNorm
    settings, the Detect biases), as a model built from a yaml gets them. The DFL's integral conv is a fixed
    ``arange`` that is never trained (only inference decodes boxes with it): it is kept."""
    import torch
    from ultralytics.nn.modules.block import DFL
    from ultralytics.utils.torch_utils import initialize_weights

    from yolo_compress.checkpoint import load_model, save_checkpoint

    torch.manual_seed(seed)
    model = load_model(pruned)
    fixed = {id(c) for m in model.modules() if isinstance(m, DFL) for c in m.modules()}
    for m in model.modules():
        if hasattr(m, "reset_parameters") and id(m) not in fixed:
            m.reset_parameters()
    initialize_weights(model)
    model.model[-1].bias_init()
    save_checkpoint(model, out)


def measure_latency(runs: dict[str, Any], data: Any, rounds: int, work: Path) -> dict[str, Any]:
    """ONNX Runtime and OpenVINO latency of seed 0's ``large`` and ``small`` weights (budget 20, recorded relative to
    ``work``), interleaved, at 1 and 2 threads; exports are made next to the weights first."""
    from yolo_compress import PruneModel
    from yolo_compress.report.compare import compare_files

    models = {name: work / runs["runs"][f"{name}/20ep/seed0"]["weights"] for name in ("small", "large")}
    files, names = [], []
    for fmt in ("onnx", "openvino"):
        for name, weights in models.items():
            files.append(PruneModel(weights, data=data.path).export(format=fmt))
            names.append(f"{name} {fmt}")
    out: dict[str, Any] = {"load_before": round(os.getloadavg()[0], 2)}
    for threads in (1, 2):
        rows = compare_files(files, data, data.imgsz, RESULTS / "large_vs_small_latency", names, rounds, threads)
        out[f"{threads}"] = {r.name: {"latency_ms": r.latency_ms, "gflops": r.gflops, "params": r.params}
                             for r in rows}
    out["load_after"] = round(os.getloadavg()[0], 2)
    return out


def summarise(runs: dict[str, Any]) -> dict[str, Any]:
    """Per budget: each recipe's seeds, mean and std, and paired by seed with its 95% CI: ``large`` (and each tagged
    ``large+TAG``) - ``small``, and each ``large+TAG`` - ``large`` (what the one change earns)."""
    by: dict[str, dict[str, dict[int, float]]] = {}
    for run_id, r in runs["runs"].items():
        if run_id == "shipped":
            continue
        recipe, budget, _ = run_id.split("/")
        by.setdefault(budget, {}).setdefault(recipe, {})[r["seed"]] = r["map"]
    out: dict[str, Any] = {}
    for budget, recipes in sorted(by.items(), key=lambda kv: int(kv[0].rstrip("ep"))):
        entry: dict[str, Any] = {recipe: {"maps": seeds, "mean": statistics.mean(seeds.values()),
                                          "std": statistics.stdev(seeds.values()) if len(seeds) > 1 else float("nan")}
                                 for recipe, seeds in recipes.items()}
        pairs = [(r, "small") for r in recipes if r.startswith("large")]
        pairs += [(r, "large") for r in recipes if r.startswith("large+")]
        for a, b in pairs:
            common = sorted(set(recipes[a]) & set(recipes.get(b, {})))
            if common:
                diff, low, high = ACC.paired([recipes[a][s] - recipes[b][s] for s in common])
                entry[f"{a}_minus_{b}"] = {"seeds": common, "diff": diff, "ci95": [low, high]}
        out[budget] = entry
    return out


def targets(summary: dict[str, Any], latency: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The issue's targets at budget 20: the gain over ``small`` and the OpenVINO 2-thread latency."""
    checks = []
    gap = summary.get("20ep", {}).get("large_minus_small")
    if gap:
        met = len(gap["seeds"]) >= 5 and gap["diff"] * 100 >= TARGET_GAIN and gap["ci95"][0] > 0
        checks.append({"target": f"large beats small (+20 epochs) by >= {TARGET_GAIN} points, 5 paired seeds, CI > 0",
                       "value": round(gap["diff"] * 100, 2), "seeds": len(gap["seeds"]), "met": met})
    if latency:
        two = latency["2"]
        slower = two["large openvino"]["latency_ms"] / two["small openvino"]["latency_ms"] - 1
        checks.append({"target": f"large at most {TARGET_SLOWER:.0%} slower than small, OpenVINO, 2 threads",
                       "value": round(slower * 100, 1), "met": slower <= TARGET_SLOWER})
    return checks


def budget_rows(budget: str, entry: dict[str, Any], runs: dict[str, Any]) -> list[str]:
    """One budget's table rows: each recipe (``large`` and its tagged explorations, with their ``--set`` keys), and
    the paired differences: ``large`` - ``small``, each tagged variant - ``small`` and - ``large``."""
    lines = []
    tagged = sorted(r for r in entry if r.startswith("large+") and "_minus_" not in r)
    for recipe in (*RECIPES, *tagged):
        if recipe not in entry:
            continue
        e, first = entry[recipe], runs["runs"][f"{recipe}/{budget}/seed{min(entry[recipe]['maps'])}"]
        per = ", ".join(f"{e['maps'][s]:.4f}" for s in sorted(e["maps"]))
        name = f"{recipe} {json.dumps(first['overrides'])}" if first.get("overrides") else recipe
        lines.append(f"| {budget} | {name} | {len(e['maps'])} | {e['mean']:.4f} | {e['std']:.4f} | {per} | "
                     f"{first['gflops']:.3f} | {first['params']:,} |")
    for a, b in [("large", "small")] + [(t, ref) for t in tagged for ref in ("small", "large")]:
        gap = entry.get(f"{a}_minus_{b}")
        if gap:
            lines.append(f"| {budget} | {a} - {b} | {len(gap['seeds'])} | {gap['diff'] * 100:+.2f} points | | "
                         f"CI [{gap['ci95'][0] * 100:+.2f}, {gap['ci95'][1] * 100:+.2f}] | | |")
    return lines


def write_report(runs: dict[str, Any], latency: dict[str, Any] | None) -> None:
    """``results/large_vs_small.md`` and ``.json``: accuracy per budget, sizes, latency, the targets checked."""
    from yolo_compress.checkpoint import atomic_write_bytes

    summary = summarise(runs)
    shipped = runs["runs"].get("shipped")
    checks = targets(summary, latency)
    lines = ["# A compressed YOLOv8s at YOLOv8n's cost vs the stock YOLOv8n (clutter)", "",
             "Generated by `benchmarks/large_vs_small.py` (its docstring says what each recipe is). mAP50-95 on the "
             "clutter test split; seeds paired; CI: 95% t-interval of the paired difference.", "",
             "| budget | recipe | seeds | mean | std | per seed | GFLOPs | params |", "|---" * 8 + "|"]
    for budget, entry in summary.items():
        lines += budget_rows(budget, entry, runs)
    if shipped:
        lines.append(f"| 0 | shipped | 1 | {shipped['map']:.4f} | | | {shipped['gflops']:.3f} | "
                     f"{shipped['params']:,} |")
    if latency:
        lines += ["", f"Latency (median ms, batch 1, interleaved; load {latency['load_before']} -> "
                  f"{latency['load_after']}):", "", "| model | 1 thread | 2 threads |", "|---|---|---|"]
        lines += [f"| {name} | {latency['1'][name]['latency_ms']:.2f} | {latency['2'][name]['latency_ms']:.2f} |"
                  for name in latency["1"]]
    lines += ["", "Targets:", ""] + [f"- {c['target']}: {c['value']} -> {'met' if c['met'] else 'NOT met'}"
                                     for c in checks]
    atomic_write_bytes(RESULTS / "large_vs_small.md", ("\n".join(lines) + "\n").encode())
    body = {"summary": summary, "shipped": shipped, "latency": latency, "targets": checks}
    atomic_write_bytes(RESULTS / "large_vs_small.json", json.dumps(body, indent=1, default=str).encode())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "work" / "accuracy"), help="data and runs (the accuracy "
                    "benchmark's folder: the same clutter data)")
    ap.add_argument("--recipes", nargs="+", choices=RECIPES, default=["large", "small", "shipped"])
    ap.add_argument("--budgets", nargs="+", type=int, default=[20])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--latency", action="store_true", help="time seed 0's large and small weights (run alone)")
    ap.add_argument("--rounds", type=int, default=100, help="interleaved latency rounds")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--tag", default="", help="an exploration of ``large``: recorded as large+TAG (with --set)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="pipeline config key for the tagged large runs")
    a = ap.parse_args(argv)
    if bool(a.tag) != bool(a.sets):
        ap.error("--tag and --set go together: a tagged run is large with one change")
    from yolo_compress.cli import parse_key_values

    a.overrides = parse_key_values(a.sets)
    return a


def main() -> None:
    a = parse_args()
    from yolo_compress.patches import runtime

    runtime.apply()
    bench = Bench(a)
    if not a.report_only and not a.latency:
        bench.run()
    latency_file = RESULTS / "large_vs_small_latency.json"
    if a.latency:
        latency_file.write_text(json.dumps(measure_latency(bench.runs, bench.data, a.rounds, bench.work), indent=1))
    latency = json.loads(latency_file.read_text()) if latency_file.is_file() else None
    write_report(load_runs(), latency)
    print((RESULTS / "large_vs_small.md").read_text())


if __name__ == "__main__":
    main()
