"""Plain fine-tuning vs CWD vs MGD distillation of the same pruned model, at equal epochs, on the same data.

Takes the pruned and the sparse (teacher) checkpoints of a pipeline run (default: the `weights/` folder that
`yolo-compress run` writes) and writes benchmarks/results/distill_compare.md.

    .venv/bin/python benchmarks/distill_compare.py --run weights --epochs 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from yolo_compress import PruneModel

RESULTS = Path(__file__).parent / "results" / "distill_compare.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="weights", help="folder with prune.pt and sparse.pt (or baseline.pt)")
    ap.add_argument("--data", help="dataset yaml (default: the built-in shapes dataset)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--losses", nargs="+", default=["cwd", "mgd"])
    a = ap.parse_args()
    run = Path(a.run).resolve()
    pruned = run / "prune.pt"
    teacher = run / "sparse.pt" if (run / "sparse.pt").is_file() else run / "baseline.pt"
    data = Path(a.data).resolve() if a.data else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        for name in ["finetune", *a.losses]:
            os.chdir(cwd)  # the built-in dataset lives under the caller's data/
            pm = PruneModel(pruned, data=data)
            os.chdir(tmp)
            t0 = time.perf_counter()
            if name == "finetune":
                pm.train(save_dir=f"{name}.pt", epochs=a.epochs, batch=16, plots=False, name=name)
            else:
                pm.distill(teacher, loss_type=name, save_dir=f"{name}.pt", epochs=a.epochs, batch=16, plots=False,
                           name=name)
            seconds = time.perf_counter() - t0
            m = pm.val()
            rows.append((name, m["mAP50"], m["mAP50-95"], seconds))
        os.chdir(cwd)
        teacher_map = PruneModel(teacher, data=data).val()
    lines = [
        "# Fine-tuning vs distillation of the pruned model",
        "",
        f"Student: `{pruned.name}` of `{run}`; teacher: `{teacher.name}` (mAP50-95 {teacher_map['mAP50-95']:.3f}). "
        f"{a.epochs} epochs each, batch 16, same data and seed, CPU.",
        "",
        "| recipe | mAP50 | mAP50-95 | train s |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {m50:.3f} | {m:.3f} | {s:.0f} |" for n, m50, m, s in rows],
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
