"""Time one training step (forward, loss, backward, optimizer step) with and without distillation.

Variants, all on deep copies of one student, one teacher and one fixed batch:

* ``student``: student alone (the detection loss);
* ``+teacher``: plus the teacher forward under ``no_grad``, up to layer 21 (what CWD/MGD on the default layers run);
* ``+teacher full``: plus the full teacher forward, head decoding included (what KD or a naive trainer runs);
* ``cwd``, ``mgd``, ``cwd+kd``: full distillation through :class:`yolo_compress.distill.Distiller`;
* ``ultralytics``: Ultralytics' built-in ``DistillationModel`` (``train(distill_model=...)``).

Variants run round-robin (one step each per round) so that load from other processes spreads over all of them;
the median per variant is reported.

Example:
    python benchmarks/distill_overhead.py --imgsz 128 --batch 8 --rounds 6 --out benchmarks/results/distill_overhead.md
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import yolo_compress  # noqa: F401  (offline runtime settings)
from yolo_compress.distill import Distiller, DistillSettings, run_to_layer

LAYERS = (6, 8, 12, 15, 18, 21)  # the layers this benchmark was measured with

NC = 4


def build_models(nc: int = NC) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Random-init YOLOv8n student and YOLOv8s teacher with Ultralytics' default hyper-parameters attached."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=nc, verbose=False)
    teacher = DetectionModel("yolov8s.yaml", nc=nc, verbose=False)
    for m in (student, teacher):
        m.args = get_cfg()
    return student, teacher


def make_batch(batch: int, imgsz: int, device: torch.device, nc: int = NC, boxes: int = 3) -> dict[str, torch.Tensor]:
    """A fixed random batch in the format ``v8DetectionLoss`` reads (normalised xywh boxes)."""
    g = torch.Generator().manual_seed(0)
    n = batch * boxes
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.2 + 0.1
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(boxes).float().to(device),
        "cls": torch.randint(0, nc, (n, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
    }


def variants(student, teacher, batch, device) -> dict[str, Callable[[], None]]:
    """One closure per variant, each with its own copies and optimizer."""
    img, bs = batch["img"], batch["img"].shape[0]
    teacher = copy.deepcopy(teacher).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    steps = {}

    def trainable(model):
        return [p for p in model.parameters() if p.requires_grad]

    def stepper(params, body):
        opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = body()
            loss.backward()
            opt.step()

        return step

    def plain(teacher_fn=None):
        s = copy.deepcopy(student).to(device).train()

        def body():
            if teacher_fn is not None:
                with torch.no_grad():
                    teacher_fn()
            return s.loss(batch)[0].sum()

        return stepper(trainable(s), body)

    steps["student"] = plain()
    steps["+teacher"] = plain(lambda: run_to_layer(teacher, img, 21))
    steps["+teacher full"] = plain(lambda: teacher(img))

    for kind in ("cwd", "mgd", "cwd+kd"):
        s = copy.deepcopy(student).to(device).train()
        distiller = Distiller(s, teacher, DistillSettings(loss=kind, distill_layers=LAYERS)).attach()

        def body(s=s, distiller=distiller):
            preds = s(img)
            loss = s.loss(batch, preds)[0].sum()
            return loss + bs * sum(distiller(img, preds).values())

        steps[kind] = stepper(trainable(s) + list(distiller.parameters()), body)

    from ultralytics.nn.distill_model import DistillationModel

    s = copy.deepcopy(student).to(device).train()
    dm = DistillationModel(teacher_model=copy.deepcopy(teacher), student_model=s).train()
    steps["ultralytics"] = stepper(trainable(dm), lambda: dm.loss(batch)[0].sum())
    return steps


def run(imgsz: int, batch: int, rounds: int, warmup: int, device: str, threads: int | None) -> dict[str, list[float]]:
    """Median-ready step times in ms per variant."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    student, teacher = build_models()
    data = make_batch(batch, imgsz, dev)
    for m in (student, teacher):
        m.args.imgsz = imgsz
    steps = variants(student, teacher, data, dev)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if r >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return times


def report(times: dict[str, list[float]], args: argparse.Namespace) -> str:
    """Markdown section: settings, per-variant medians, and the two ratios."""
    med = {k: statistics.median(v) for k, v in times.items()}
    dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"## {dev}: imgsz {args.imgsz}, batch {args.batch}, {args.rounds} rounds (+{args.warmup} warm-up)",
        "",
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"AMP {'on (fp16 autocast)' if args.device.startswith('cuda') else 'off'}, 1-minute load average at the end "
        f"{load:.1f}. Student YOLOv8n, teacher YOLOv8s, random init, nc={NC}; step = forward + loss + backward + SGD.",
        "",
        "| variant | median ms/step | min | max | x student |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in times.items():
        lines.append(f"| {k} | {med[k]:.1f} | {min(v):.1f} | {max(v):.1f} | {med[k] / med['student']:.2f} |")
    lines += [
        "",
        f"- (c)/(b) = cwd / +teacher = **{med['cwd'] / med['+teacher']:.2f}** "
        "(cost of hooks, adapters and the CWD loss on top of the teacher forward)",
        f"- (c)/(e) = cwd / ultralytics = **{med['cwd'] / med['ultralytics']:.2f}**",
        f"- mgd / +teacher = {med['mgd'] / med['+teacher']:.2f}; cwd+kd / +teacher full = "
        f"{med['cwd+kd'] / med['+teacher full']:.2f}; teacher stopped at layer 21 saves "
        f"{med['+teacher full'] - med['+teacher']:.1f} ms/step",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on CUDA)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to append the results to")
    args = parser.parse_args()
    times = run(args.imgsz, args.batch, args.rounds, args.warmup, args.device,
                None if args.device.startswith("cuda") else args.threads)
    text = report(times, args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
