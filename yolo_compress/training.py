"""Run an Ultralytics trainer class on an in-memory model and write its weights atomically.

Every stage that trains (plain fine-tuning, sparse training, distillation) goes through ``fit``: the model is
written to a temporary checkpoint, ``YOLO(ckpt).train(trainer=...)`` trains that exact module (the trainers of
``yolo_compress.patches`` keep it instead of rebuilding from yaml), and the best weights are re-saved as a
float32 checkpoint at the requested path.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import load_detection_model, save_checkpoint
from yolo_compress.errors import CompressError

LOGGER = logging.getLogger(__name__)
RUNS_DIR = Path("runs")


def writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove a file can be written there.

    Raises:
        CompressError: it cannot be created or written (a file in the way, no permission, read-only disk).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CompressError(f"output folder {folder} is not writable ({e.strerror}); choose another") from e
    return folder


def output_path(save_dir: str | Path, source: Path | None = None) -> Path:
    """Check where a stage may write: a ``.pt`` file that is not the stage's own input.

    Raises:
        CompressError: the path is not a ``.pt`` file, is the input weights, or its folder is not writable.
    """
    out = Path(save_dir).expanduser()
    if out.suffix != ".pt":
        raise CompressError(f"save_dir must name a .pt file (e.g. weights/prune.pt), got {out}")
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise CompressError(f"refusing to overwrite the input weights {out}; choose another save_dir")
    writable_dir(out.parent)
    if out.exists():
        LOGGER.warning("replacing existing %s", out)
    return out


def training_args(user: dict[str, Any], data: Path, imgsz: int, name: str) -> dict[str, Any]:
    """Ultralytics train arguments: the user's, plus small-data defaults where the user set none.

    ``nbs`` (nominal batch) defaults to the batch size: Ultralytics' 64 makes batch 16 accumulate four batches,
    i.e. ~3 optimizer steps per epoch on a 200-image set. A one-epoch warm-up suits short runs.
    """
    args = {"data": str(data), "imgsz": imgsz, "project": RUNS_DIR, "name": name, **user}
    # Ultralytics puts a relative project under its settings' runs_dir, frozen when settings.json was first made
    args["project"] = str(Path(args["project"]).resolve())
    args.setdefault("nbs", args.get("batch", 16) if args.get("batch", 16) > 0 else 64)
    args.setdefault("warmup_epochs", 1)
    return args


def latest_run(project: Path, name: str) -> Path | None:
    """``last.pt`` of the most recent run directory named ``name``, ``name2``, ... under ``project``."""
    candidates = [p / "weights" / "last.pt" for p in project.glob(f"{name}*") if p.is_dir()]
    candidates = [c for c in candidates if c.is_file()]
    return max(candidates, key=lambda c: c.stat().st_mtime) if candidates else None


def fit(model: nn.Module, trainer: type, out: Path, args: dict[str, Any]) -> tuple[nn.Module, dict[str, float], Path]:
    """Train ``model`` with ``trainer``, save the best weights to ``out``.

    Returns:
        The trained model, its final validation metrics and the Ultralytics run folder (logs, plots).

    With ``args["resume"] = True`` the latest interrupted run of the same name continues instead.
    """
    from ultralytics import YOLO

    if args.pop("resume", False):
        last = latest_run(Path(args["project"]), args["name"])
        if last is None:
            raise CompressError(f"nothing to resume: no {args['project']}/{args['name']}*/weights/last.pt")
        yolo = YOLO(last)
        if yolo.ckpt.get("optimizer") is None:
            raise CompressError(f"{last} is from a finished run; start a new one (omit resume)")
        # Resume restores every setting from the checkpoint; only these may change (BaseTrainer.check_resume).
        keep = {k: v for k, v in args.items() if k in {"device", "batch", "workers", "imgsz"}}
        yolo.train(trainer=trainer, resume=str(last), **keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            init = save_checkpoint(model, Path(tmp) / "init.pt")
            yolo = YOLO(init)
            yolo.train(trainer=trainer, **args)
    best = yolo.trainer.best if yolo.trainer.best.exists() else yolo.trainer.last
    trained = load_detection_model(best)
    # "metrics/mAP50-95(B)" -> "mAP50-95", the names PruneModel.val() and the report use
    metrics = {k.removeprefix("metrics/").removesuffix("(B)"): float(v)
               for k, v in (getattr(yolo.trainer, "metrics", None) or {}).items()}
    save_checkpoint(trained, out, train_metrics=metrics, source_run=str(best.parent.parent))
    LOGGER.info("saved %s (from %s)", out, best)
    return trained, metrics, Path(yolo.trainer.save_dir)
