"""``yolo-compress``: the command line over ``PruneModel`` and ``CompressionPipeline``.

The stage subcommands (``sparse``, ``prune``, ``train``, ``distill``, ``export``, ``quantize``) and ``run``'s flags
are derived from the list of stages (``yolo_compress.stages.STAGES``): a stage's ``command`` names its subcommand
and the ``PruneModel`` method it calls, its settings class gives the flags, with the defaults and checks of the
Python API and the config file. Trailing ``key=value`` words go to Ultralytics (``lr0=0.005 workers=2``) and are
checked before anything trains. Bad input ends in one ``yolo-compress: error: ...`` line and exit status 2. SIGTERM
stops a command as Ctrl-C does (exit 143), so its temporary folders are removed on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from yolo_compress.errors import CompressError

if TYPE_CHECKING:
    from yolo_compress.stage import Stage

LOGGER = logging.getLogger("yolo_compress")
DATA_KINDS = ("shapes", "clutter", "diagram", "classify", "segment", "pose", "obb")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so ``with`` blocks and ``finally`` clean up as after Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated` (its default ends the process where it stands, leaving
    temporary folders behind); the previous handler is restored after it. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so every bad input is the same one-line error."""

    def error(self, message: str):
        raise CompressError(f"{message} (see {self.prog} --help)")


def parse_key_values(pairs: list[str]) -> dict[str, Any]:
    """``["lr0=0.005", "plots=false"]`` -> ``{"lr0": 0.005, "plots": False}`` (values read as YAML).

    Raises:
        CompressError: a word that is not ``key=value``, or a value that is not valid YAML.
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CompressError(f"unexpected argument {pair!r}; settings are written key=value")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise CompressError(f"{pair!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from e
    return out


def _model_args(p: argparse.ArgumentParser, weights_required: bool = True) -> None:
    p.add_argument("--weights", required=weights_required,
                   help="input .pt checkpoint or a model yaml (loading a .pt runs code stored in it: only pass files "
                        "you trust)")
    p.add_argument("--data", help="dataset yaml (detect) or folder (classify); default: the built-in one")
    p.add_argument("--imgsz", type=int, help="image size (default: the dataset's)")


def _stage_command(sub: Any, cls: type[Stage]) -> None:
    """The subcommand a stage declares (``Stage.command``): the model's flags, ``--save`` where it makes weights,
    the training flags where it trains, then its own (``Stage.add_command_arguments``)."""
    from yolo_compress.stage import TrainingStage

    command = cls.command
    p = sub.add_parser(command.name, help=command.help)
    _model_args(p)
    if command.save is not None:
        save = f"weights/{command.save}.pt"
        runs = "; its Ultralytics run folder is <folder>/runs/<stem>" if issubclass(cls, TrainingStage) else ""
        p.add_argument("--save", default=save, help=f"output .pt (default {save}){runs}")
    if issubclass(cls, TrainingStage):
        p.add_argument("--epochs", type=int)
        p.add_argument("--batch", type=int)
        p.add_argument("--device", help="cpu, 0, 0,1 ... (default: Ultralytics' choice)")
        p.add_argument("--resume", action="store_true", help="continue the interrupted run of this --save")
    if command.method == "apply":
        p.add_argument("--out", default="weights", help="folder of its outputs, named as the pipeline names them "
                       "(default weights)")
    cls.add_command_arguments(p)
    if issubclass(cls, TrainingStage):
        p.add_argument("extra", nargs="*", metavar="key=value", help="more Ultralytics train settings")


def build_parser(stages: Sequence[type[Stage]] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``run``'s flags come from ``stages`` (default: the pipeline's)."""
    from yolo_compress.stages import STAGES

    parser = _Parser(prog="yolo-compress", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    stages = tuple(stages or STAGES)
    _add_data(sub)
    for cls in stages:
        if cls.command is not None:
            _stage_command(sub, cls)
    _add_compare(sub)
    _add_relations(sub)
    _add_run(sub, stages)
    return parser


def _add_data(sub: Any) -> None:
    p = sub.add_parser("data", help="write a built-in synthetic dataset")
    p.add_argument("--kind", choices=DATA_KINDS, default="shapes")
    p.add_argument("--root", help="output folder (default data/<kind>)")
    p.add_argument("--train", type=int, help="train images (default: the generator's)")
    p.add_argument("--val", type=int, help="val images (default: the generator's)")
    p.add_argument("--imgsz", type=int, help="image size (default: the generator's)")
    p.add_argument("--seed", type=int, default=0)


def _add_compare(sub: Any) -> None:
    p = sub.add_parser("compare", help="params, GFLOPs, accuracy and latency of several checkpoints")
    p.add_argument("weights", nargs="+", help=".pt / .onnx files or OpenVINO folders, reference first")
    p.add_argument("--data")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--out", default="weights", help="folder for compare.md/.csv/.png (default weights)")
    p.add_argument("--threads", type=int, help="threads of every runtime while timing (default: torch's, all cores "
                   "unless OMP_NUM_THREADS is set)")


def _add_relations(sub: Any) -> None:
    p = sub.add_parser("predict", help="detect, infer parent boxes, draw them")
    _model_args(p)
    p.add_argument("--source", required=True, help="image file or folder")
    p.add_argument("--save-dir", default="runs/predict", help="where the drawings go (default runs/predict)")
    p.add_argument("--conf", type=float, default=0.25)
    p = sub.add_parser("evaluate", help="relation precision/recall/F1 against parent labels")
    _model_args(p)
    p.add_argument("--iou", type=float, default=0.5)


def _add_run(sub: Any, stages: tuple[type[Stage], ...]) -> None:
    from yolo_compress.config import settings_classes, stage_keys
    from yolo_compress.stage import RunSettings

    p = sub.add_parser("run", help="the whole pipeline; with no arguments, the built-in demo")
    p.add_argument("--config", help="YAML file of pipeline settings (see README: configuration)")
    RunSettings.add_arguments(p)
    stage_keys(stages).add_arguments(p)
    for cls in settings_classes(stages):
        cls.add_arguments(p)
    p.add_argument("--force", choices=[s.name for s in stages], help="redo this stage and all after it")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set zero_at=0.3 --set 'train_args={lr0: 0.005}'")


def _run_pipeline(a: argparse.Namespace, stages: tuple[type[Stage], ...]) -> None:
    from yolo_compress.config import config_keys, load_config
    from yolo_compress.pipeline import CompressionPipeline
    from yolo_compress.report import format_table

    flags = {k: getattr(a, k) for k in config_keys(stages) if getattr(a, k, None) is not None}
    cfg = load_config(a.config, stages, **{**flags, **parse_key_values(a.sets)})
    result = CompressionPipeline(cfg, stages).run(force=a.force)
    if result.rows:
        print(format_table(result.rows))
        out = Path(cfg.run.out)
        print(f"report: {out / 'compare.md'} (.csv, .png); manifest: {out / 'manifest.json'}")


def _data(a: argparse.Namespace) -> None:
    from yolo_compress.data import GENERATORS

    root = Path(a.root or Path("data") / a.kind)
    if root.exists():
        raise CompressError(f"{root} already exists; pass another --root or delete it to regenerate")
    sizes = {k: v for k, v in (("n_train", a.train), ("n_val", a.val), ("imgsz", a.imgsz)) if v is not None}
    print(GENERATORS[a.kind](root, seed=a.seed, **sizes))


def _compare(a: argparse.Namespace) -> None:
    from yolo_compress.report import format_table
    from yolo_compress.report.compare import compare_files

    if a.threads is not None and a.threads < 1:
        raise CompressError(f"--threads {a.threads} must be at least 1 (e.g. 1 or the number of cores)")
    rows = compare_files(a.weights, a.data, a.imgsz, a.out, threads=a.threads)
    print(format_table([r.flat() for r in rows]))
    print(f"written: {Path(a.out) / 'compare.md'}, .csv, .png (latency timed with {rows[0].threads} thread(s) in every "
          "runtime)")


MODEL_FLAGS = ("command", "weights", "data", "imgsz", "extra", "save")


def _run_stage(a: argparse.Namespace, cls: type[Stage], stages: tuple[type[Stage], ...]) -> None:
    """A stage's subcommand: its flags, as keywords, to the ``PruneModel`` method it names."""
    from yolo_compress.api import PruneModel
    from yolo_compress.preflight import check_beside_weights

    if cls.command.save is None and cls.command.method != "apply":  # it writes beside its input: found writable now
        check_beside_weights(a.weights, a.command)
    pm = PruneModel(a.weights, data=a.data, imgsz=a.imgsz)
    kwargs = {k: v for k, v in vars(a).items() if k not in MODEL_FLAGS and v is not None}
    extra = parse_key_values(getattr(a, "extra", []))
    if cls.command.method == "apply":  # pipeline keys; the Ultralytics ones are its train_args
        outputs = pm.apply(cls.name, stages=stages, **kwargs, **({"train_args": extra} if extra else {}))
        print(", ".join(f"{role} {path}" for role, path in outputs.items()))
        return
    if cls.command.save is not None:
        kwargs["save_dir"] = a.save
    result = getattr(pm, cls.command.method)(**kwargs, **extra)
    print(result if isinstance(result, Path) or cls.command.save is None else f"{result}; saved {a.save}")


def _predict(a: argparse.Namespace) -> None:
    from yolo_compress.api import PruneModel
    from yolo_compress.preflight import check_save_dir

    check_save_dir(a.save_dir)  # before the model loads
    results = PruneModel(a.weights, data=a.data, imgsz=a.imgsz).predict(a.source, save_dir=a.save_dir, conf=a.conf)
    for r in results:
        print(f"{r['path']}: {len(r['boxes'])} boxes, parents {list(r['parent_ids'])}")
    print(f"drawings in {a.save_dir}")


def _evaluate(a: argparse.Namespace) -> None:
    from yolo_compress.api import PruneModel

    m = PruneModel(a.weights, data=a.data, imgsz=a.imgsz).evaluate(iou=a.iou)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))


TOOLS = {"data": _data, "compare": _compare, "predict": _predict, "evaluate": _evaluate}  # commands beside the stages


def run(a: argparse.Namespace, stages: Sequence[type[Stage]] | None = None) -> None:
    """Dispatch one parsed command (stage subcommands and ``run`` over ``stages``, default the pipeline's)."""
    from yolo_compress.stages import STAGES

    stages = tuple(stages or STAGES)
    by_command = {cls.command.name: cls for cls in stages if cls.command is not None}
    if a.command in by_command:
        return _run_stage(a, by_command[a.command], stages)
    if a.command == "run":
        return _run_pipeline(a, stages)
    return TOOLS[a.command](a)


def _training_commands(stages: Sequence[type[Stage]] | None) -> set[str]:
    from yolo_compress.stage import TrainingStage
    from yolo_compress.stages import STAGES

    return {cls.command.name for cls in stages or STAGES if cls.command is not None and issubclass(cls, TrainingStage)}


def main(argv: list[str] | None = None, stages: Sequence[type[Stage]] | None = None) -> int:
    """Entry point of the ``yolo-compress`` console script (``stages``: the pipeline's, unless a test gives others)."""
    from yolo_compress.patches import runtime

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # stderr: the one error line
    runtime.apply()
    trains = False  # an interrupted training command continues with --resume
    try:
        args = build_parser(stages).parse_args(argv)
        trains = args.command in _training_commands(stages)
        with sigterm_raises():
            run(args, stages)
    except CompressError as e:
        print(f"yolo-compress: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"yolo-compress: error: the disk is full writing {e.filename or 'the outputs'}; free space (nothing "
              "partial was kept: writes are atomic) and rerun", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        again = "rerun it with --resume" if trains else "rerun the same command"
        print(f"yolo-compress: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; {again} to continue",
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
