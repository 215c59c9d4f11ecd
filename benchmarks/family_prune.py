"""Pruning time and landed speed-up of every model family at one image size, side by side.

For each family's smallest model (built from its yaml, 80 classes, random weights: pruning time and widths do not
depend on the weights) and each GFLOPs target, :func:`yolo_compress.prune.prune_model` runs ``--repeats`` times; the
repeats are interleaved (every model once per round, rotated), so a change of machine speed spreads over all of them.
Reported: the median seconds, its ratio to YOLOv8n's at the same target, the speed-up landed and its distance from
the target, peak memory of the process, and the load average before and after. The targets checked (the families and
tasks issues): every model within 1% of the GFLOPs target; YOLO11n and YOLO26n in at most 2x YOLOv8n's time; a
segmentation model in at most 2x its family's detector's time.

Example:
    python benchmarks/family_prune.py --imgsz 640 --targets 2 3 --repeats 3 --out benchmarks/results/family_prune
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import yolo_compress  # noqa: F401  (offline runtime settings)
from yolo_compress.dataset import Dataset
from yolo_compress.errors import CompressError
from yolo_compress.models import build_from_yaml, yaml_task
from yolo_compress.patches import runtime
from yolo_compress.prune import PruneSettings, prune_model

MODELS = ("yolov8n", "yolo11n", "yolo26n", "yolov10n", "yolov5nu", "yolo11n-cls", "yolov8n-seg", "yolo11n-seg",
          "yolo26n-seg", "yolov8n-pose", "yolov8n-obb")
TIME_LIMIT = 2.0  # YOLO11n / YOLO26n at most this many times YOLOv8n's pruning time
LAND_WITHIN = 0.01  # every family within 1% of the GFLOPs target


def prune_once(name: str, imgsz: int, target: float) -> dict:
    task = yaml_task(f"{name}.yaml")
    nc = {"classify": 1000, "pose": 1}.get(task, 80)  # as Ultralytics' yamls build them
    data = Dataset(Path("-"), task, {i: str(i) for i in range(nc)}, imgsz, Path("-"),
                   kpt_shape=(17, 3) if task == "pose" else None)
    model = build_from_yaml(f"{name}.yaml", data)
    t0 = time.perf_counter()
    try:
        _, result = prune_model(model, imgsz, PruneSettings(speed_up=target))
    except CompressError as e:  # a target the model cannot reach is a result too
        return {"seconds": time.perf_counter() - t0, "speed_up": None, "steps": None, "error": str(e)}
    return {"seconds": time.perf_counter() - t0, "speed_up": result.speed_up, "steps": result.steps}


def measure(models: tuple[str, ...], imgsz: int, targets: list[float], repeats: int) -> list[dict]:
    runs: dict[tuple[str, float], list[dict]] = {(m, t): [] for m in models for t in targets}
    for r in range(repeats):
        for t in targets:
            order = models[r % len(models):] + models[:r % len(models)]
            for m in order:
                runs[(m, t)].append(prune_once(m, imgsz, t))
                print(f"round {r} target {t}: {m} {runs[(m, t)][-1]}", flush=True)
    rows = []
    for (m, t), done in runs.items():
        seconds = statistics.median(d["seconds"] for d in done)
        base = statistics.median(d["seconds"] for d in runs[("yolov8n", t)]) if ("yolov8n", t) in runs else None
        stem, _, task = m.rpartition("-")
        detector = stem if task in ("seg", "pose", "obb") else m  # a classifier has no detector to compare with
        own = statistics.median(d["seconds"] for d in runs[(detector, t)]) if (
            detector != m and (detector, t) in runs) else None
        landed = done[0]["speed_up"]  # deterministic: every repeat lands on the same widths (None: unreachable)
        rows.append({"model": m, "target": t, "seconds": round(seconds, 2), "seconds_all": [round(d["seconds"], 2)
                     for d in done], "time_vs_yolov8n": round(seconds / base, 2) if base else None,
                     "time_vs_detector": round(seconds / own, 2) if own else None,
                     "speed_up": landed and round(landed, 4), "off_target": landed and round(landed / t - 1, 4),
                     "steps": done[0]["steps"],
                     **({"error": done[0]["error"]} if "error" in done[0] else {})})
    return rows


def targets_met(rows: list[dict]) -> dict[str, bool]:
    return {
        "every model within 1% of the GFLOPs target": all(
            r["off_target"] is not None and abs(r["off_target"]) <= LAND_WITHIN for r in rows),
        "YOLO11n and YOLO26n prune in <= 2x YOLOv8n's time": all(
            r["time_vs_yolov8n"] <= TIME_LIMIT for r in rows if r["model"] in ("yolo11n", "yolo26n")),
        "a segmentation model prunes in <= 2x its detector's time": all(
            r["time_vs_detector"] <= TIME_LIMIT for r in rows if r["model"].endswith("-seg") and r["time_vs_detector"]),
    }


def render(rows: list[dict], meta: dict, met: dict[str, bool]) -> str:
    lines = [f"# Pruning time per family at {meta['imgsz']} px", "",
             f"{meta['machine']}; torch threads {meta['threads']}; load average {meta['load_before']} before, "
             f"{meta['load_after']} after; peak RSS {meta['peak_rss_mb']} MB; {meta['date']}.", "",
             "| model | target | seconds (median) | vs YOLOv8n | vs its detector | speed-up landed | off target "
             "| steps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        vs, own = (("" if r[k] is None else f"{r[k]:.2f}x") for k in ("time_vs_yolov8n", "time_vs_detector"))
        landed, off = ("unreachable", "") if r["speed_up"] is None else (
            f"{r['speed_up']:.3f}", f"{100 * r['off_target']:+.2f}%")
        lines.append(f"| {r['model']} | {r['target']:g}x | {r['seconds']:.2f} | {vs} | {own} | {landed} | {off} | "
                     f"{r['steps']} |")
    lines += ["", *(f"- {r['model']} {r['target']:g}x: {r['error']}" for r in rows if "error" in r)]
    lines += ["", *(f"- {name}: **{'met' if ok else 'missed'}**" for name, ok in met.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--targets", type=float, nargs="+", default=[2.0, 3.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/family_prune"))
    a = parser.parse_args()
    runtime.apply()
    import torch

    load_before = os.getloadavg()
    rows = measure(tuple(a.models), a.imgsz, a.targets, a.repeats)
    meta = {"imgsz": a.imgsz, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": torch.get_num_threads(), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "date": datetime.now(timezone.utc).isoformat(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    met = targets_met(rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "met": met}, indent=1))
    a.out.with_suffix(".md").write_text(render(rows, meta, met))
    print(render(rows, meta, met))


if __name__ == "__main__":
    main()
