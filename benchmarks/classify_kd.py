"""Classic knowledge distillation on the built-in classification data: does a teacher beat training alone?

At equal epochs and 3 seeds: a YOLOv8n-cls student trained alone vs. distilled (Hinton: (1 - a) CE + a T^2 KL)
from (i) a YOLOv8s-cls and (ii) a torchvision ResNet-18, both trained on the same data; and the student pruned to
half its GFLOPs (after sparse training), fine-tuned vs. distilled from its unpruned self. Every finished run is
recorded in ``benchmarks/results/classify_kd_runs.json``; a rerun continues. Writes ``classify_kd.md``.

    .venv/bin/python benchmarks/classify_kd.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS_FILE = RESULTS / "classify_kd_runs.json"


def load() -> dict[str, Any]:
    return json.loads(RUNS_FILE.read_text()) if RUNS_FILE.is_file() else {}


def save(runs: dict[str, Any]) -> None:
    from yolo_compress.checkpoint import atomic_write_bytes

    atomic_write_bytes(RUNS_FILE, json.dumps(runs, indent=1, sort_keys=True).encode())


def top1_curve(run_dir: Path) -> list[float]:
    import csv

    return [float(r["metrics/accuracy_top1"]) for r in csv.DictReader((run_dir / "results.csv").open())]


def train_resnet18(data, out: Path, epochs: int, imgsz: int) -> None:
    """A torchvision ResNet-18 (random init: offline) trained on the same images, as a user would bring one, saved
    as a whole module. Inputs as Ultralytics feeds classifiers: RGB in [0, 1] at ``imgsz``."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    torch.manual_seed(0)
    tf = transforms.Compose([transforms.RandomResizedCrop(imgsz, scale=(0.6, 1.0)), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    dataset = torchvision.datasets.ImageFolder(str(data.path / "train"), tf)
    assert dataset.classes == [data.names[i] for i in range(data.nc)]
    loader = DataLoader(dataset, batch_size=32, shuffle=True)
    model = torchvision.models.resnet18(num_classes=data.nc)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    torch.save(model.eval(), out)


def resnet_top1(path: Path, data, imgsz: int) -> float:
    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(imgsz), transforms.CenterCrop(imgsz), transforms.ToTensor()])
    loader = DataLoader(torchvision.datasets.ImageFolder(str(data.path / "val"), tf), batch_size=64)
    model = torch.load(path, weights_only=False).eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return hits / len(loader.dataset)


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        from yolo_compress.dataset import resolve_data

        self.a, self.work, self.runs = a, Path(a.work).resolve(), load()
        self.work.mkdir(parents=True, exist_ok=True)
        self.data = resolve_data(None, "classify")
        self.imgsz = self.data.imgsz

    def step(self, name: str, fn) -> Any:
        if name not in self.runs:
            t0, load0 = time.time(), os.getloadavg()[0]
            self.runs[name] = {**fn(), "seconds": round(time.time() - t0), "load_before": round(load0, 2)}
            save(self.runs)
        return self.runs[name]

    def train(self, name: str, weights: str | Path, epochs: int, seed: int, teacher: Path | None = None,
              **kw: Any) -> dict[str, Any]:
        from yolo_compress import PruneModel

        out = self.work / f"{name.replace('/', '_')}.pt"
        pm = PruneModel(weights, data=self.data.path, seed=seed)
        common = {"epochs": epochs, "batch": 32, "seed": seed, "plots": False, **kw}
        if teacher is None:
            pm.train(save_dir=out, **common)
        else:
            pm.distill(teacher, save_dir=out, **common)
        curve = top1_curve(pm.run_dir)
        return {"top1": curve[-1], "curve": curve, "path": str(out)}

    def run(self) -> None:
        a = self.a
        teacher_s = self.step("teacher_yolov8s", lambda: self.train("teacher_yolov8s", "yolov8s-cls.yaml",
                                                                     a.teacher_epochs, 0))
        resnet = self.work / "resnet18.pt"

        def make_resnet():
            train_resnet18(self.data, resnet, a.teacher_epochs, self.imgsz)
            return {"top1": resnet_top1(resnet, self.data, self.imgsz), "path": str(resnet)}

        self.step("teacher_resnet18", make_resnet)
        teachers = {"yolov8s": Path(teacher_s["path"]), "resnet18": Path(self.runs["teacher_resnet18"]["path"])}
        for seed in a.seeds:
            self.step(f"alone/seed{seed}", lambda s=seed: self.train(f"alone_{s}", "yolov8n-cls.yaml", a.epochs, s))
            for t, path in teachers.items():
                self.step(f"kd_{t}/seed{seed}", lambda s=seed, t=t, p=path: self.train(
                    f"kd_{t}_{s}", "yolov8n-cls.yaml", a.epochs, s, teacher=p))
        # the pruned classifier: a converged YOLOv8n-cls, sparse-trained and pruned to 2x fewer GFLOPs
        base = self.step("pruned/base", lambda: self.train("pruned_base", "yolov8n-cls.yaml", a.teacher_epochs, 0))
        start = self.work / "pruned_start.pt"

        def make_start():
            from yolo_compress import PruneModel

            pm = PruneModel(base["path"], data=self.data.path)
            pm.sparse_train(save_dir=self.work / "pruned_sparse.pt", epochs=a.sparse_epochs, batch=32, plots=False)
            r = pm.prune(save_dir=start, speed_up=2.0)
            return {"top1": pm.val()["top1"], "gflops_ratio": r.speed_up, "path": str(start)}

        self.step("pruned/start", make_start)
        for seed in a.seeds:
            self.step(f"pruned_finetune/seed{seed}", lambda s=seed: self.train(
                f"pruned_ft_{s}", start, a.recover_epochs, s))
            self.step(f"pruned_kd/seed{seed}", lambda s=seed: self.train(
                f"pruned_kd_{s}", start, a.recover_epochs, s, teacher=Path(base["path"])))


def report(a: argparse.Namespace) -> None:
    from yolo_compress.checkpoint import atomic_write_bytes
    from yolo_compress.distill import DistillSettings

    runs = load()

    def stats(prefix: str) -> tuple[float, float, int]:
        vals = [v["top1"] for k, v in runs.items() if k.startswith(prefix + "/seed")]
        return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)

    d = DistillSettings().for_task("classify")
    lines = ["# Knowledge distillation of classifiers", "",
             f"Built-in classification data (6 classes, 600 train / 180 val images at 64 px), CPU, batch 32, KD "
             f"with the defaults kd_alpha={d.kd_alpha}, kd_tau={d.kd_tau:g}; top-1 on the val split after the last "
             f"epoch, seeds {a.seeds}. Produced by `benchmarks/classify_kd.py`; every run is in "
             "`classify_kd_runs.json`.", "",
             f"Teachers ({a.teacher_epochs} epochs): YOLOv8s-cls top-1 {runs['teacher_yolov8s']['top1']:.3f}, "
             f"torchvision ResNet-18 {runs['teacher_resnet18']['top1']:.3f}.", "",
             f"## YOLOv8n-cls from scratch, {a.epochs} epochs", "",
             "| recipe | top-1 mean | std | seeds |", "|---|---:|---:|---:|"]
    for name, label in (("alone", "trained alone"), ("kd_yolov8s", "KD from YOLOv8s-cls"),
                        ("kd_resnet18", "KD from ResNet-18 (whole torchvision module)")):
        m, s, n = stats(name)
        lines.append(f"| {label} | {m:.3f} | {s:.3f} | {n} |")
    st = runs["pruned/start"]
    lines += ["", f"## Pruned YOLOv8n-cls ({st['gflops_ratio']:.2f}x fewer GFLOPs), {a.recover_epochs} epochs", "",
              f"Unpruned: top-1 {runs['pruned/base']['top1']:.3f}; after sparse training ({a.sparse_epochs} epochs) "
              f"and pruning: {st['top1']:.3f}.", "",
              "| recipe | top-1 mean | std | seeds |", "|---|---:|---:|---:|"]
    for name, label in (("pruned_finetune", "fine-tuned"), ("pruned_kd", "KD from its unpruned self")):
        m, s, n = stats(name)
        lines.append(f"| {label} | {m:.3f} | {s:.3f} | {n} |")
    atomic_write_bytes(RESULTS / "classify_kd.md", ("\n".join(lines) + "\n" + a.notes).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "work" / "classify_kd"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20, help="student epochs, alone and distilled")
    ap.add_argument("--teacher-epochs", type=int, default=60)
    ap.add_argument("--sparse-epochs", type=int, default=10)
    ap.add_argument("--recover-epochs", type=int, default=10)
    ap.add_argument("--notes", default="", help="text or file appended to the results")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    if a.notes and Path(a.notes).is_file():
        a.notes = Path(a.notes).read_text()
    if not a.report_only:
        Bench(a).run()
    report(a)


if __name__ == "__main__":
    main()
