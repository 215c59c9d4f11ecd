"""Run an Ultralytics trainer on an in-memory model; one run-folder and resume rule for every training stage.

Every stage that trains (baseline, sparse training, fine-tuning, distillation) goes through :func:`fit`: the model
is written to a temporary checkpoint, ``YOLO(ckpt).train(trainer=...)`` trains that exact module (the trainers in
``yolo_compress.patches`` keep it instead of rebuilding it from yaml), and the chosen weights are saved as a
float32 checkpoint at ``out``.

The run folder of ``out`` is ``<out's folder>/runs/<out's stem>`` (``weights/sparse.pt`` ->
``weights/runs/sparse``): logs, plots and Ultralytics' ``last.pt``/``best.pt`` go there, never to the current
folder. With ``resume`` the state of that folder decides (:func:`run_state`): an unfinished ``last.pt``
continues, a finished run is only finalised, a damaged ``last.pt`` is moved aside.
"""

from __future__ import annotations

import csv
import difflib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import checkpoint_is_complete, load_model, save_checkpoint
from yolo_compress.dataset import Dataset
from yolo_compress.errors import CompressError
from yolo_compress.models import check_class_count
from yolo_compress.run_folder import (
    INIT_SUFFIX,
    check_not_inside,
    check_replaceable,
    drop_if_unused,
    locked,
    record_files,
    remove_stale_temps,
    run_dir_of,
    run_lock,
)
from yolo_compress.validation import metric_name

LOGGER = logging.getLogger(__name__)
# set by yolo-compress from the dataset and the output path; a user value would be ignored or break the run folder
RESERVED = ("data", "imgsz", "project", "name", "exist_ok", "model", "task", "mode", "resume")


@dataclass
class Fit:
    """What a training stage produced: the trained network, its validation metrics and its run folder."""

    model: nn.Module
    metrics: dict[str, float]
    run_dir: Path


def writable_dir(folder: str | Path) -> Path:
    """Prove ``folder`` can be created (if missing) and written, without creating it: a run that fails its later
    checks leaves nothing behind. Writers create it when they write.

    Raises:
        CompressError: a file in the way, no permission, a read-only disk.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CompressError(f"output folder {folder} cannot be made: {existing} is a file; choose another")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise CompressError(f"output folder {folder} is not writable ({e.strerror}); choose another") from e
    return folder


def output_path(save: str | Path, inputs: tuple[Path | None, ...] = (), flag: str = "save_dir") -> Path:
    """Check where a stage may write: a ``.pt`` file that is none of the stage's inputs, in a writable folder, whose
    run folder (replaced when the stage starts afresh) holds none of the inputs.

    Raises:
        CompressError: not a ``.pt`` path, a folder, one of ``inputs``, an input in its run folder, or an unwritable
            folder.
    """
    out = Path(save).expanduser()
    if out.suffix != ".pt" or out.is_dir():
        raise CompressError(f"{flag} must name a .pt file (e.g. weights/prune.pt), got {out}")
    for source in inputs:
        if source is not None and out.exists() and out.resolve() == Path(source).resolve():
            raise CompressError(f"refusing to overwrite the input weights {out}; choose another {flag}")
    for source in inputs:
        check_not_inside({"the input": source}, {"training": run_dir_of(out)})
    writable_dir(out.parent)
    return out


def check_train_args(args: dict[str, Any], hints: tuple[str, ...] = ()) -> None:
    """Reject Ultralytics training settings that are unknown or of the wrong type before anything runs.

    Raises:
        CompressError: an unknown key (with the closest Ultralytics key), a key yolo-compress sets itself, or a
            value Ultralytics' own config check refuses.
    """
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG_DICT

    known = [*DEFAULT_CFG_DICT, "augmentations"]
    for key in args:
        if key in RESERVED:
            raise CompressError(f"{key!r} is set by yolo-compress (from the dataset, --imgsz and the output path); "
                                "drop it")
        if key in hints:
            raise CompressError(f"{key!r} is a setting of another stage, not of this one; drop it")
        if key not in known:
            close = difflib.get_close_matches(key, [*known, *hints], n=2)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise CompressError(f"{key!r} is not an Ultralytics training setting{hint}")
    try:
        get_cfg(overrides={k: v for k, v in args.items() if k in DEFAULT_CFG_DICT})
    except (SyntaxError, TypeError, ValueError) as e:
        raise CompressError(f"invalid Ultralytics setting: {str(e).strip().splitlines()[-1]}") from e


def train_args(user: dict[str, Any], data: Dataset, imgsz: int, out: Path) -> dict[str, Any]:
    """Ultralytics train arguments: the user's, plus small-data defaults where the user set none.

    ``nbs`` (nominal batch) defaults to the batch size: Ultralytics' 64 makes batch 16 accumulate four batches,
    i.e. ~3 optimizer steps per epoch on a 200-image set. A one-epoch warm-up suits short runs.
    """
    run_dir = run_dir_of(out).resolve()
    args = {**user, "data": str(data.data_arg), "imgsz": imgsz, "project": str(run_dir.parent), "name": run_dir.name,
            "exist_ok": True}
    batch = args.get("batch", 16)
    args.setdefault("nbs", batch if isinstance(batch, int) and batch > 0 else 64)
    args.setdefault("warmup_epochs", 1)
    return args


def recovery_args(lr: float, task: str, user: dict[str, Any], trained: bool) -> dict[str, Any]:
    """The trainer key that raises Ultralytics' small-data learning rate (``recovery_lr``, read by
    ``patches.trainers.KeepModule.build_optimizer``), when it applies: a detector that was trained before (fine-tuning,
    sparse training, distillation after pruning), an optimizer the user left to Ultralytics, and a rate (not 0).

    Ultralytics' choice for small data (AdamW, lr0 = 0.002 x 5 / (4 + nc): 0.000714 for 10 classes) is about 7x too
    low to recover a pruned detector in a 20-epoch budget: on the built-in sets 0.005 lifts every recipe by up to 8
    points of mAP50-95 (``benchmarks/results/accuracy_notes.md``). Segment, pose and obb models, detectors with a
    task head, get it too; classifiers keep Ultralytics' rate (not measured).
    """
    if not lr or not trained or task == "classify" or "optimizer" in user:
        return {}
    return {"recovery_lr": lr}


def run_state(run_dir: Path) -> str:
    """``"none"``, ``"unfinished"`` (resumable), ``"finished"`` (trained, not yet saved) or ``"damaged"``."""
    last = run_dir / "weights" / "last.pt"
    return checkpoint_state(last) if last.is_file() else "none"


def checkpoint_state(path: Path) -> str:
    """``"unfinished"`` (holds optimizer state), ``"finished"`` (stripped) or ``"damaged"`` (cut off, unreadable)."""
    import torch

    if not checkpoint_is_complete(path):
        return "damaged"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a whole zip that is still no checkpoint: as good as a truncated one
        return "damaged"
    return "unfinished" if ckpt.get("optimizer") is not None else "finished"


def check_classes(model: nn.Module, data: Dataset, what: str = "model") -> None:
    """Raises: CompressError when the model predicts another number of classes than the dataset has."""
    check_class_count(model, data.nc, what, f"pass the dataset the model was trained on ({data.path} is not), or "
                      "train a new baseline from a yaml")


def fit(model: nn.Module, trainer: type, out: Path, data: Dataset, args: dict[str, Any], resume: bool = False,
        take: str = "best", require_resume: bool = False) -> Fit:
    """Train ``model`` with ``trainer`` and save the ``take`` (``"best"`` or ``"last"``) weights to ``out``.

    Args:
        model: the network to train (its exact architecture is kept).
        trainer: a ``ModuleKeepingTrainer`` subclass.
        out: the ``.pt`` file to write; its run folder is :func:`run_dir_of`.
        data: the checked dataset.
        args: Ultralytics settings (see :func:`train_args`) plus the trainer's extra settings.
        resume: continue the run folder's interrupted run when there is one (else start afresh).
        take: ``"best"`` (highest validation fitness) or ``"last"`` (final epoch) weights.
        require_resume: with ``resume``, a missing run is an error instead of a fresh start.

    Raises:
        CompressError: class mismatch, ``require_resume`` with nothing to resume, another command training into
            the same run folder, or a run folder holding files of the user's.
    """
    check_classes(model, data)
    run_dir = Path(args["project"]) / args["name"]
    try:
        with locked(run_lock(run_dir), f"the run folder {run_dir}"):
            yolo = _train(model, trainer, out, run_dir, args, resume, require_resume)
            chosen = _pick(run_dir / "weights", take)
            trained = load_model(chosen)
            metrics = _metrics(run_dir, take, getattr(getattr(yolo, "trainer", None), "metrics", None))
            save_checkpoint(trained, out, train_metrics=metrics, source_run=str(run_dir))
            record_files(run_dir)
    finally:
        drop_if_unused(run_dir.parent)
    LOGGER.info("saved %s (from %s)", out, chosen)
    return Fit(trained, metrics, run_dir)


def _train(model: nn.Module, trainer: type, out: Path, run_dir: Path, args: dict[str, Any], resume: bool,
           require_resume: bool) -> Any:
    """Resume, finish or start the run in ``run_dir`` (see :func:`fit`); returns the ``YOLO`` that trained, if any.

    Raises:
        CompressError: ``require_resume`` with nothing to resume, or a run folder holding files of the user's.
    """
    from ultralytics import YOLO

    state = run_state(run_dir) if resume else "none"
    if resume and state == "damaged":
        state = _set_damaged_aside(run_dir)
    if require_resume and state == "none":
        raise CompressError(f"nothing to resume: no interrupted run in {run_dir}; start without --resume")
    yolo = None
    if state == "unfinished":
        LOGGER.info("resuming the interrupted run in %s", run_dir)
        remove_stale_temps(run_dir / "weights")  # a kill during a checkpoint write leaves its temp file
        yolo = YOLO(run_dir / "weights" / "last.pt")
        # resume restores every setting from the checkpoint; only these may change (BaseTrainer.check_resume)
        keep = {k: v for k, v in args.items() if k in {"device", "batch", "workers"}}
        yolo.train(trainer=trainer, resume=str(run_dir / "weights" / "last.pt"), **keep)
    elif state == "finished":
        LOGGER.info("%s holds a finished run that was not saved yet; saving it", run_dir)
    else:
        if run_dir.exists():
            check_replaceable(run_dir)
            shutil.rmtree(run_dir)  # a previous run of this output: replaced, never resumed by mistake
        init = out.parent / f".{out.stem}{INIT_SUFFIX}"  # next to the output: a kill leaves it where reruns clean
        try:
            yolo = YOLO(save_checkpoint(model, init))
            yolo.train(trainer=trainer, **args)
        except BaseException:
            _drop_if_empty(run_dir)
            raise
        finally:
            init.unlink(missing_ok=True)
    return yolo


def _set_damaged_aside(run_dir: Path) -> str:
    """Move a truncated ``last.pt`` aside; continue from a complete, unfinished ``best.pt`` when there is one.

    The damaged copy goes next to the run folder (``runs/<stem>-last.pt.damaged``): a fresh start replaces the run
    folder, and the copy must survive that.
    """
    weights = run_dir / "weights"
    last, best = weights / "last.pt", weights / "best.pt"
    aside = run_dir.parent / f"{run_dir.name}-last.pt.damaged"
    last.replace(aside)
    if best.is_file() and checkpoint_state(best) == "unfinished":
        shutil.copyfile(best, last)
        LOGGER.warning("%s was truncated or damaged (moved to %s); resuming from best.pt", last, aside)
        return "unfinished"
    LOGGER.warning("%s was truncated or damaged (moved to %s); the stage starts again from epoch 1", last, aside)
    return "none"


def _pick(weights: Path, take: str) -> Path:
    best, last = weights / "best.pt", weights / "last.pt"
    if take == "best" and best.is_file() and checkpoint_is_complete(best):
        return best
    return last


def _drop_if_empty(run_dir: Path) -> None:
    """A run that failed before its first checkpoint leaves only ``args.yaml``: remove that clutter."""
    if run_dir.is_dir() and not any((run_dir / "weights").glob("*.pt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def _metrics(run_dir: Path, take: str, final: dict | None) -> dict[str, float]:
    """Validation metrics of the saved weights: Ultralytics' final validation (of best.pt), or the last epoch's.

    Names as :func:`~yolo_compress.validation.metric_name` writes them.
    """
    if take == "best" and final:
        values = final
    else:
        rows = list(csv.DictReader((run_dir / "results.csv").open())) if (run_dir / "results.csv").is_file() else []
        values = {k.strip(): float(v) for k, v in rows[-1].items() if k.strip().startswith("metrics/")} if rows else {}
    return {metric_name(k): float(v) for k, v in values.items() if k.startswith("metrics/")}
