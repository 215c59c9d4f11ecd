"""``yolo-compress``: the command line over ``PruneModel`` and ``CompressionPipeline``.

Trailing ``key=value`` words go to Ultralytics unchanged (``lr0=0.005 workers=2``). Bad input ends in one
``yolo-compress: error: ...`` line and exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from yolo_compress.errors import CompressError

LOGGER = logging.getLogger("yolo_compress")


def parse_key_values(pairs: list[str]) -> dict[str, Any]:
    """``["lr0=0.005", "plots=false"]`` -> ``{"lr0": 0.005, "plots": False}`` (values read as YAML)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CompressError(f"unexpected argument {pair!r}; Ultralytics settings are written key=value")
        out[key] = yaml.safe_load(value)
    return out


def _common(p: argparse.ArgumentParser, weights_required: bool = True) -> None:
    p.add_argument("--weights", required=weights_required, help="input .pt checkpoint (or a model yaml to train)")
    p.add_argument("--data", help="dataset yaml (default: the built-in shapes dataset)")
    p.add_argument("--imgsz", type=int, help="image size (default: the dataset's, else 640)")


def _training(p: argparse.ArgumentParser, save: str) -> None:
    _common(p)
    p.add_argument("--save", default=save, help=f"output .pt (default {save})")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--device", help="cpu, 0, 0,1 ... (default: Ultralytics' choice)")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted run of this output")
    p.add_argument("extra", nargs="*", metavar="key=value", help="more Ultralytics train settings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-compress", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="write a built-in synthetic dataset")
    p.add_argument("--kind", choices=("shapes", "diagram"), default="shapes")
    p.add_argument("--root", help="output folder (default data/<kind>)")
    p.add_argument("--train", type=int, default=200, help="train images")
    p.add_argument("--val", type=int, default=50, help="val images")
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)

    _training(sub.add_parser("train", help="train or fine-tune, keeping the model's exact architecture"),
              "weights/retrain.pt")
    p = sub.add_parser("sparse", help="sparse training: L1 on BatchNorm scales (network slimming)")
    _training(p, "weights/sparse.pt")
    p.add_argument("--sr", type=float, default=5e-3, help="L1 coefficient (default 5e-3)")
    p.add_argument("--sr-final", type=float, help="decay sr linearly to this value over the epochs")

    p = sub.add_parser("prune", help="DepGraph channel pruning, Detect head kept")
    _common(p)
    p.add_argument("--save", default="weights/prune.pt")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--factor", type=float, help="share of prunable channels to remove, in (0, 1) (default 0.5)")
    how.add_argument("--speed-up", type=float, help="GFLOPs ratio to reach, > 1")
    p.add_argument("--importance", choices=("bn_scale", "l2", "group_norm"), default="bn_scale")
    p.add_argument("--global", dest="global_pruning", action="store_true", help="rank channels across layers")
    p.add_argument("--round-to", type=int, default=8)

    p = sub.add_parser("distill", help="fine-tune the student with a teacher (CWD, MGD, logit KD)")
    _training(p, "weights/distill.pt")
    p.add_argument("--teacher", required=True, help="teacher .pt (the unpruned model)")
    p.add_argument("--loss", default="cwd", help="cwd, mgd, kd, cwd+kd or mgd+kd")

    p = sub.add_parser("compare", help="params, GFLOPs, mAP and latency of several checkpoints")
    p.add_argument("weights", nargs="+", help=".pt files, reference first")
    p.add_argument("--data")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--out", default="weights", help="folder for compare.md/.csv/.png")

    p = sub.add_parser("export", help="export a checkpoint (ONNX by default)")
    _common(p)
    p.add_argument("--format", default="onnx")

    p = sub.add_parser("predict", help="detect, infer parent boxes, draw them")
    _common(p)
    p.add_argument("--source", required=True, help="image file or folder")
    p.add_argument("--save-dir", default="runs/predict")
    p.add_argument("--conf", type=float, default=0.25)

    p = sub.add_parser("evaluate", help="relation precision/recall/F1 against parent labels")
    _common(p)
    p.add_argument("--iou", type=float, default=0.5)

    from yolo_compress.pipeline import add_run_parser

    add_run_parser(sub)
    return parser


def _train_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kw = {k: getattr(a, k) for k in ("epochs", "batch", "device", "imgsz") if getattr(a, k) is not None}
    if a.resume:
        kw["resume"] = True
    return {**kw, **parse_key_values(a.extra)}


def run(a: argparse.Namespace) -> None:
    """Dispatch one parsed command."""
    from yolo_compress import PruneModel

    if a.command == "data":
        from yolo_compress.data.diagram import make_diagram_dataset
        from yolo_compress.data.synthetic import make_shapes_dataset

        make = make_shapes_dataset if a.kind == "shapes" else make_diagram_dataset
        root = Path(a.root or Path("data") / a.kind)
        if root.exists():
            raise CompressError(f"{root} already exists; pass another --root or delete it to regenerate")
        print(make(root, n_train=a.train, n_val=a.val, imgsz=a.imgsz, seed=a.seed))
        return
    if a.command == "run":
        from yolo_compress.pipeline import run_from_args

        run_from_args(a)
        return
    if a.command == "compare":
        from yolo_compress.report import format_table

        pm = PruneModel(a.weights[0], data=a.data, imgsz=a.imgsz)
        print(format_table(pm.compare(a.weights, out_dir=a.out)))
        print(f"written: {Path(a.out) / 'compare.md'}, .csv, .png")
        return
    pm = PruneModel(a.weights, data=a.data, imgsz=a.imgsz)
    if a.command == "train":
        print(pm.train(save_dir=a.save, **_train_kwargs(a)))
    elif a.command == "sparse":
        print(pm.sparse_train(save_dir=a.save, sr=a.sr, sr_final=a.sr_final, **_train_kwargs(a)))
    elif a.command == "distill":
        print(pm.distill(a.teacher, loss_type=a.loss, save_dir=a.save, **_train_kwargs(a)))
    elif a.command == "prune":
        r = pm.prune(a.factor, save_dir=a.save, speed_up=a.speed_up, importance=a.importance,
                     global_pruning=a.global_pruning, round_to=a.round_to)
        print(f"params {r.params_before:,} -> {r.params_after:,} ({r.params_after / r.params_before:.1%}), "
              f"GFLOPs@{r.imgsz[0]} {r.gflops_before:.3f} -> {r.gflops_after:.3f} ({r.speed_up:.2f}x) "
              f"in {r.seconds:.1f}s; saved {a.save}")
    elif a.command == "export":
        print(pm.export(format=a.format))
    elif a.command == "predict":
        results = pm.predict(a.source, save_dir=a.save_dir, conf=a.conf)
        for r in results:
            print(f"{r['path']}: {len(r['boxes'])} boxes, parents {list(r['parent_ids'])}")
        print(f"drawings in {a.save_dir}")
    elif a.command == "evaluate":
        m = pm.evaluate(iou=a.iou)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``yolo-compress`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CompressError as e:
        print(f"yolo-compress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yolo-compress: interrupted; rerun the same command (with --resume for training) to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
