"""Does quantization-aware distillation recover what post-training INT8 loses? OpenVINO, paired seeds.

For the converged baseline and a pruned + distilled model of one data set (default: the harder clutter set), each
exported to OpenVINO and scored on the data set's 500-image test split (never seen in training, calibration or
epoch selection), at the data's size:

    fp32 | INT8 static (NNCF post-training, ours) | INT8 accuracy-controlled (ours, max drop 0.3 pt on held-out
    train images) | INT8 qat (quantize_mode=qat: static, then fake-quantized training with the fp32 weights as
    teacher, logit KD) | INT8 qat without teacher (the same training with kd_weight=0: plain QAT, what a user of
    NNCF's QAT recipe would do)

The QAT rows run the same seeds (paired); the report gives their mean, std and the paired difference of QAT with
and without the teacher with its 95% CI, and each mode's drop from fp32. Latency of fp32, static INT8 and QAT INT8
(seed 0), interleaved, batch 1, 1 and 2 threads, shows that QAT changes no speed. Resumable: finished runs are kept
in ``<work>/runs.json``. Writes ``results/qat.md`` and ``results/qat.json``. Run it alone on the machine.

    .venv/bin/python benchmarks/qat.py --notes benchmarks/results/qat_notes.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
PRUNED = ROOT / "work" / "accuracy" / "main" / "clutter" / "20ep" / "2x" / "default" / "seed4" / "distill.pt"
QAT_MODES = ("int8 qat", "int8 qat, no teacher")


def ci95(diffs: list[float]) -> tuple[float, float]:
    """95% confidence interval of the mean of paired differences (Student's t)."""
    if len(diffs) < 2:
        return float("nan"), float("nan")
    mean, half = statistics.mean(diffs), T95[len(diffs) - 1] * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean - half, mean + half


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        from accuracy import DATASETS

        from yolo_compress.data import GENERATORS
        from yolo_compress.dataset import resolve_data

        self.a, self.work = a, Path(a.work).resolve()
        spec = DATASETS[a.dataset]
        root = ROOT / "work" / "accuracy" / "data" / a.dataset  # the accuracy benchmark's copy, when there
        if not (root / "data.yaml").is_file():
            GENERATORS[spec["kind"]](root, **spec["make"])
        self.data = resolve_data(root / "data.yaml")
        self.models = {"baseline": Path(a.baseline or spec["baseline"]), "pruned": Path(a.pruned)}
        self.file = self.work / "runs.json"
        self.runs: dict[str, Any] = json.loads(self.file.read_text()) if self.file.is_file() else {}

    def save(self) -> None:
        from yolo_compress.checkpoint import atomic_write_bytes

        atomic_write_bytes(self.file, json.dumps(self.runs, indent=1).encode())

    def folder(self, model: str, run: str) -> Path:
        """A folder holding a copy of the model's weights, one per run (exports are written next to them)."""
        folder = self.work / model / run
        pt = folder / f"{model}.pt"
        if not pt.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.models[model], pt)
        return folder

    def one(self, model: str, mode: str, seed: int | None) -> None:
        from yolo_compress.deploy.export import fresh_export
        from yolo_compress.deploy.openvino import quantize_openvino
        from yolo_compress.deploy.qat import quantize_aware_distill
        from yolo_compress.deploy.settings import QuantizeSettings
        from yolo_compress.distill.settings import DistillSettings
        from yolo_compress.validation import validate

        key = f"{model}/{mode}" + ("" if seed is None else f"/seed{seed}")
        if key in self.runs:
            return
        s = QuantizeSettings(qat_epochs=self.a.epochs, qat_lr=self.a.lr)
        folder = self.folder(model, key.replace("/", "_").replace(" ", "-").replace(",", ""))
        size = self.data.imgsz
        t0 = time.time()
        fp32 = fresh_export(folder / f"{model}.pt", "openvino", size)
        if mode == "fp32":
            path = fp32
        elif mode in ("int8 static", "int8 accuracy"):
            path = quantize_openvino(fp32, self.data, size, mode.split()[1], s.calibration, max_drop=s.max_drop)
        else:
            teacher = DistillSettings() if mode == "int8 qat" else DistillSettings(kd_weight=0.0)
            train = {"batch": 16, "seed": seed, "deterministic": True, "plots": False}
            path = quantize_aware_distill(folder / f"{model}.pt", fp32, self.data, size, s, train,
                                          distill_settings=teacher)
        seconds = time.time() - t0
        m = validate(path, self.data, size, split="test")
        self.runs[key] = {"map": m["mAP50-95"], "map50": m["mAP50"], "seconds": round(seconds),
                          "path": str(path.relative_to(self.work)), "epochs": self.a.epochs if "qat" in mode else 0,
                          "lr": self.a.lr if "qat" in mode else None, "load": round(os.getloadavg()[0], 2)}
        self.save()
        print(f"{key}: mAP50-95 {m['mAP50-95']:.4f} ({seconds:.0f} s)", flush=True)

    def latency(self) -> dict[str, dict[str, float]]:
        import torch

        from yolo_compress.report.measure import openvino_runner, time_interleaved

        keys = [f"{m}/{mode}" for m in self.models for mode in ("fp32", "int8 static", "int8 qat/seed0")]
        out: dict[str, dict[str, float]] = {k: {} for k in keys}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runners = [openvino_runner(self.work / self.runs[k]["path"], self.data.imgsz, threads) for k in keys]
            for k, t in zip(keys, time_interleaved(runners, self.a.rounds, warmup=5)):
                out[k][str(threads)] = t
        return out


def paired_seeds(runs: dict[str, Any], model: str) -> list[int]:
    """The seeds on which both QAT modes of ``model`` ran."""
    done = [{int(k.rsplit("seed", 1)[1]) for k in runs if k.startswith(f"{model}/{mode}/seed")} for mode in QAT_MODES]
    return sorted(done[0] & done[1])


def summarise(runs: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """Per model and mode: mAP mean/std over the paired seeds, drop from fp32; QAT with vs without the teacher,
    paired."""
    out: dict[str, Any] = {}
    for model in models:
        seeds = paired_seeds(runs, model)
        fp32 = runs[f"{model}/fp32"]["map"]
        rows: dict[str, Any] = {}
        for mode in ("fp32", "int8 static", "int8 accuracy", *QAT_MODES):
            maps = [runs[f"{model}/{mode}/seed{s}"]["map"] for s in seeds] if mode in QAT_MODES else [
                runs[f"{model}/{mode}"]["map"]]
            mean = statistics.mean(maps)
            rows[mode] = {"map_mean": mean, "map_std": statistics.stdev(maps) if len(maps) > 1 else 0.0,
                          "seeds": len(maps) if mode in QAT_MODES else 0, "maps": maps, "drop": fp32 - mean}
        diffs = [a - b for a, b in zip(rows["int8 qat"]["maps"], rows["int8 qat, no teacher"]["maps"])]
        low, high = ci95(diffs)
        rows["int8 qat"].update({"diff_vs_no_teacher": statistics.mean(diffs), "ci95_low": low, "ci95_high": high})
        static = rows["int8 static"]["map_mean"]
        rows["int8 qat"]["recovered"] = (rows["int8 qat"]["map_mean"] - static) / (fp32 - static) if fp32 > static \
            else float("nan")
        out[model] = rows
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="clutter", choices=("shapes", "clutter"))
    ap.add_argument("--baseline", default=None, help="default: the data set's shipped baseline")
    ap.add_argument("--pruned", default=str(PRUNED), help="a pruned + recovered .pt (default: the accuracy "
                    "benchmark's clutter 2x default recipe, seed 4)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--work", default=str(ROOT / "work" / "qat"))
    ap.add_argument("--notes", default="")
    ap.add_argument("--report-only", action="store_true", help="no new runs: time and report the finished ones")
    return ap.parse_args()


def report(meta: dict[str, Any], summary: dict[str, Any], ms: dict[str, Any]) -> list[str]:
    """The markdown tables of ``results/qat.md`` (notes are appended by the caller)."""
    lines = ["# Quantization-aware distillation vs post-training INT8 (OpenVINO)", "",
             f"Produced by `benchmarks/qat.py` ({meta['seconds_this_run']} s this run; load average "
             f"{meta['load_before']} before, {meta['load_before_timing']} before timing, {meta['load_after']} "
             f"after; {meta['cores']} cores). Data set `{meta['dataset']}` at {meta['imgsz']} px; mAP50-95 of the "
             f"OpenVINO model on its 500-image test split (Ultralytics' validator). QAT: {meta['qat_epochs']} epochs, "
             f"AdamW lr {meta['qat_lr']:g}, no warm-up, no mosaic, last epoch kept; paired seeds "
             f"{'; '.join(f'{m} {s}' for m, s in meta['seeds'].items())}.",
             "", "| model | mode | mAP50-95 | std | drop vs fp32 | per seed |", "|---|---|---:|---:|---:|---|"]
    for model, rows in summary.items():
        for mode, r in rows.items():
            seeds = ", ".join(f"{m:.4f}" for m in r["maps"]) if r["seeds"] else ""
            drop = f"{100 * r['drop']:+.2f} pt" if mode != "fp32" else ""
            lines.append(f"| {model} | {mode} | {r['map_mean']:.4f} | {r['map_std']:.4f} | {drop} | {seeds} |")
    lines += ["", "| model | QAT with the teacher minus without (paired) | 95% CI | share of the static INT8 drop "
              "recovered by QAT |", "|---|---:|---|---:|"]
    for model, rows in summary.items():
        q = rows["int8 qat"]
        lines.append(f"| {model} | {100 * q['diff_vs_no_teacher']:+.2f} pt | [{100 * q['ci95_low']:+.2f}, "
                     f"{100 * q['ci95_high']:+.2f}] | {100 * q['recovered']:.0f}% |")
    lines += ["", f"Latency (ms, batch 1, median of {meta['rounds']} interleaved rounds, OpenVINO LATENCY hint):", "",
              "| model | mode | 1 thread | 2 threads |", "|---|---|---:|---:|"]
    return lines + [f"| {k.split('/')[0]} | {'/'.join(k.split('/')[1:])} | {v['1']:.2f} | {v['2']:.2f} |"
                    for k, v in ms.items()]


def main() -> None:
    from yolo_compress.checkpoint import atomic_write_bytes
    from yolo_compress.patches import runtime

    runtime.apply()
    a = parse_args()
    bench = Bench(a)
    load0, t_start = os.getloadavg(), time.time()
    for model in bench.models if not a.report_only else ():
        for mode in ("fp32", "int8 static", "int8 accuracy"):
            bench.one(model, mode, None)
        for seed in a.seeds:
            for mode in QAT_MODES:
                bench.one(model, mode, seed)
    load_timing = os.getloadavg()
    ms = bench.latency()
    summary = summarise(bench.runs, list(bench.models))
    meta = {"dataset": a.dataset, "imgsz": bench.data.imgsz, "test_images": 500,
            "seeds": {m: paired_seeds(bench.runs, m) for m in bench.models},
            "qat_epochs": a.epochs, "qat_lr": a.lr, "load_before": round(load0[0], 2),
            "load_before_timing": round(load_timing[0], 2), "load_after": round(os.getloadavg()[0], 2),
            "seconds_this_run": round(time.time() - t_start), "rounds": a.rounds,
            "models": {k: str(v) for k, v in bench.models.items()}, "cores": os.cpu_count()}
    atomic_write_bytes(ROOT / "results" / "qat.json", json.dumps(
        {"meta": meta, "summary": summary, "latency_ms": ms, "runs": bench.runs}, indent=1).encode())
    notes = Path(a.notes).read_text() if a.notes and Path(a.notes).is_file() else a.notes
    text = "\n".join(report(meta, summary, ms)) + "\n\n" + notes
    atomic_write_bytes(ROOT / "results" / "qat.md", text.encode())
    print(text)


if __name__ == "__main__":
    main()
