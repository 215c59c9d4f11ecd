"""Size, GFLOPs, pruning time and batch-1 CPU latency of YOLOv8n pruned at several factors, against the baseline.

For each factor, :func:`yolo_compress.prune.prune_model` prunes a copy of one baseline. All models are then
timed side by side in one process: in each round every model runs once (PyTorch, BatchNorm fused as Ultralytics
deploys it, and the ONNX file ``YOLO.export`` writes, in ONNX Runtime), in an order rotated per round, so that load
from other processes spreads over all of them; the median per model is reported. The check is that the latency
speed-up reaches at least ``--target`` (0.8) times the GFLOPs reduction.

Example:
    python benchmarks/prune_speed.py --imgsz 320 --runs 40 --out benchmarks/results/prune_speed
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

import yolo_compress  # noqa: F401  (offline runtime settings)
from yolo_compress.checkpoint import save_checkpoint
from yolo_compress.models import gflops, param_count
from yolo_compress.prune import PruneSettings, prune_model


def build_baseline(cfg: str, nc: int) -> torch.nn.Module:
    """The baseline: a yaml (random init; latency does not depend on the weights) or a detection checkpoint."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_compress.checkpoint import load_model

    torch.manual_seed(0)
    if cfg.endswith(".yaml"):
        return DetectionModel(cfg, nc=nc, verbose=False).eval()
    return load_model(cfg).eval()


def torch_runner(model: torch.nn.Module, imgsz: int) -> Callable[[], None]:
    """Batch-1 inference of a fused copy, as ``YOLO.predict`` runs it."""
    fused = copy.deepcopy(model).eval()
    fused.fuse(verbose=False)
    x = torch.rand(1, 3, imgsz, imgsz)

    def run() -> None:
        with torch.inference_mode():
            fused(x)

    return run


def onnx_runner(model: torch.nn.Module, imgsz: int, folder: Path, name: str, threads: int) -> Callable[[], None]:
    """Export through Ultralytics (the deployment path) and return a batch-1 ONNX Runtime call."""
    import numpy as np
    import onnxruntime as ort
    from ultralytics import YOLO

    ckpt = save_checkpoint(model, folder / f"{name}.pt")
    onnx = YOLO(str(ckpt)).export(format="onnx", imgsz=imgsz, simplify=False, device="cpu", verbose=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)}
    return lambda: session.run(None, feed)


def interleaved_medians(runners: dict[str, Callable[[], None]], runs: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per runner over ``runs`` rounds; each round calls every runner once, order rotated."""
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            runners[name]()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n.yaml", help="yaml (random init) or detection checkpoint")
    parser.add_argument("--nc", type=int, default=80, help="classes when building from a yaml (COCO head)")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--importance", default="l2")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and ONNX Runtime")
    parser.add_argument("--target", type=float, default=0.8, help="required latency speed-up / GFLOPs reduction")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/prune_speed", help="path stem for .md/.csv/.json")
    parser.add_argument("--note", default="", help="free text for the results file (e.g. the machine's load)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    base = build_baseline(args.model, args.nc)
    rows = [{"model": "baseline", "factor": 0.0, "params": param_count(base),
             "gflops": gflops(base, args.imgsz), "prune_s": 0.0, "channels_removed": 0.0}]
    models = {"baseline": base}
    for f in args.factors:
        pruned, result = prune_model(base, args.imgsz, PruneSettings(factor=f, importance=args.importance))
        name = f"pruned {f:g}"
        models[name] = pruned
        rows.append({"model": name, "factor": f, "params": result.params_after, "gflops": result.gflops_after,
                     "prune_s": result.seconds, "channels_removed": result.channels_removed})

    runners = {f"torch/{n}": torch_runner(m, args.imgsz) for n, m in models.items()}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_onnx:
            runners.update({f"onnx/{n}": onnx_runner(m, args.imgsz, Path(tmp), f"m{i}", args.threads)
                            for i, (n, m) in enumerate(models.items())})
        # Ultralytics' exporter calls select_device(), which resets torch's thread count to all cores: on a busy
        # 2-core machine 2 OpenMP threads made batch-1 inference 20x slower (threads wait for each other)
        torch.set_num_threads(args.threads)
        medians = interleaved_medians(runners, args.runs, args.warmup)

    base_row = rows[0]
    for row in rows:
        row["gflops_reduction"] = base_row["gflops"] / row["gflops"]
        for backend in ("torch", "onnx"):
            key = f"{backend}/{row['model']}"
            if key in medians:
                row[f"{backend}_ms"] = medians[key]
                row[f"{backend}_speed_up"] = medians[f"{backend}/baseline"] / medians[key]
                row[f"{backend}_ok"] = row[f"{backend}_speed_up"] >= args.target * row["gflops_reduction"]
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": _cpu_name(),
        "cores": os.cpu_count(), "threads": args.threads, "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(), "torch": torch.__version__, "imgsz": args.imgsz, "runs": args.runs,
        "model": args.model, "nc": args.nc, "importance": args.importance, "target": args.target, "note": args.note,
    }
    write_results(Path(args.out), rows, env)


def write_results(stem: Path, rows: list[dict], env: dict) -> None:
    """Write ``<stem>.json`` (rows + environment), ``<stem>.csv`` and a Markdown table ``<stem>.md``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    onnx = "onnx_ms" in rows[0]
    head = "| model | channels removed | params | GFLOPs | GFLOPs red. | prune s | torch ms | torch speed-up |"
    head += " ONNX RT ms | ONNX RT speed-up |" if onnx else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['model']} | {r['channels_removed']:.1%} | {r['params'] / 1e6:.3f}M | {r['gflops']:.2f} | "
                f"{r['gflops_reduction']:.2f}x | "
                f"{r['prune_s']:.1f} | {r['torch_ms']:.1f} | {r['torch_speed_up']:.2f}x {_mark(r, 'torch')} |")
        if onnx:
            line += f" {r['onnx_ms']:.1f} | {r['onnx_speed_up']:.2f}x {_mark(r, 'onnx')} |"
        lines.append(line)
    text = "\n".join(lines)
    how = (f"Median of {env['runs']} interleaved runs per model, {env['threads']} thread(s), BatchNorm fused; speed-up "
           f"= baseline ms / pruned ms; target: speed-up >= {env['target']} x GFLOPs reduction. Load average (1, 5, "
           f"15 min) before {_fmt(env['load_avg_before'])}, after {_fmt(env['load_avg_after'])} on {env['cores']} "
           "cores.")
    stem.with_suffix(".md").write_text(
        f"# Pruning speed ({env['model']}, nc {env['nc']}, imgsz {env['imgsz']}, batch 1, CPU)\n\n{text}\n\n{how}\n\n"
        + (f"{env['note']}\n\n" if env["note"] else "")
        + f"Environment: `{json.dumps({k: v for k, v in env.items() if k != 'note'})}`\n"
    )
    print(text)


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _fmt(load: tuple[float, ...]) -> str:
    return "/".join(f"{v:.1f}" for v in load)


def _mark(row: dict, backend: str) -> str:
    if row["factor"] == 0:
        return ""
    return "(ok)" if row[f"{backend}_ok"] else "(below target)"


if __name__ == "__main__":
    main()
