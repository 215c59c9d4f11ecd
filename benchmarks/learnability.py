"""How fast YOLOv8n (from yolov8n.yaml, random init) learns the built-in shapes dataset on this machine.

Writes benchmarks/results/learnability.md: mAP50 / mAP50-95 per epoch with the wall time, and the time at which
mAP50-95 first reaches 0.5 (the foundation issue's bar: within about two minutes on 2 CPU cores).

    .venv/bin/python benchmarks/learnability.py --epochs 15
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from yolo_compress import PruneModel
from yolo_compress.data.synthetic import make_shapes_dataset

RESULTS = Path(__file__).parent / "results" / "learnability.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=50)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        data = make_shapes_dataset(Path(tmp) / "shapes", n_train=a.train, n_val=a.val, imgsz=a.imgsz)
        t0 = time.perf_counter()
        pm = PruneModel("yolov8n.yaml", data=data)
        pm.train(save_dir="weights/baseline.pt", epochs=a.epochs, batch=16, plots=False, device="cpu")
        total = time.perf_counter() - t0
        with open(pm.run_dir / "results.csv") as f:
            rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    lines = [
        "# Learnability of the built-in shapes dataset",
        "",
        f"YOLOv8n from `yolov8n.yaml` (random init), {a.train} train / {a.val} val images at {a.imgsz}px, batch 16,",
        f"`nbs`=16, warmup 1 epoch, CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}. Total {total:.0f} s "
        "including validation after every epoch.",
        "",
        "| epoch | wall s | mAP50 | mAP50-95 |",
        "|---:|---:|---:|---:|",
    ]
    reached = None
    for r in rows:
        m50, m = float(r["metrics/mAP50(B)"]), float(r["metrics/mAP50-95(B)"])
        lines.append(f"| {r['epoch']} | {float(r['time']):.0f} | {m50:.3f} | {m:.3f} |")
        if reached is None and m >= 0.5:
            reached = (r["epoch"], float(r["time"]))
    lines += ["", f"mAP50-95 >= 0.5 first at epoch {reached[0]}, after {reached[1]:.0f} s." if reached
              else "mAP50-95 did not reach 0.5 in this run."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
