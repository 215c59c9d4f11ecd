"""Run folders and output folders: what yolo-compress wrote there, and who may write there now.

A training stage writing ``weights/t.pt`` keeps Ultralytics' run in ``weights/runs/t`` and replaces that folder when
the stage starts afresh. Only files a run wrote may go with it: every run keeps the names of the files in its
folder in :data:`RECORD_NAME` (updated by the trainers' callbacks as Ultralytics writes them), and a folder holding
any other file is never replaced. Temp files carry a suffix of their own (:data:`TEMP_SUFFIX`), so the clean-up
after an interrupted write never takes a user's ``.notes.tmp``. One lock per run folder and per pipeline output
folder keeps two commands from writing one place at once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from yolo_compress.checkpoint import INIT_SUFFIX, TEMP_SUFFIX, atomic_write_bytes
from yolo_compress.errors import CompressError

RECORD_NAME = ".yolo-compress-files.json"
LOCK_NAME = ".yolo-compress.lock"  # a pipeline's output folder
LOCK_SUFFIX = ".yolo-compress-run.lock"  # a run folder's: `runs/.<stem>.yolo-compress-run.lock`


def run_dir_of(out: Path) -> Path:
    """The Ultralytics run folder that belongs to the weights file ``out``."""
    return out.parent / "runs" / out.stem


def _listing(run_dir: Path) -> set[str]:
    return {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and p.name != RECORD_NAME}


def record_files(run_dir: str | Path, known: set[str] | None = None, expected: tuple[str, ...] = ()) -> set[str]:
    """Add the files now in ``run_dir`` (and ``expected``, names the run is about to write) to its record; returns
    the record.

    ``known`` is the caller's copy of the record: when nothing new appeared, nothing is written.
    """
    run_dir = Path(run_dir)
    names = (_listing(run_dir) if run_dir.is_dir() else set()) | set(expected)
    if known is not None and names <= known:
        return known
    record = recorded(run_dir) | names
    atomic_write_bytes(run_dir / RECORD_NAME, json.dumps(sorted(record), indent=0).encode())
    return record


def recorded(run_dir: Path) -> set[str]:
    """The names a run recorded in ``run_dir`` (empty when it has no record or an unreadable one)."""
    try:
        return set(json.loads((run_dir / RECORD_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def _is_ours(name: str) -> bool:
    return name.endswith((TEMP_SUFFIX, INIT_SUFFIX))


def check_replaceable(run_dir: Path) -> None:
    """Refuse to replace a run folder that holds a file no run recorded (the user's own).

    Raises:
        CompressError: a foreign file, named, with the way out.
    """
    foreign = sorted(n for n in _listing(run_dir) - recorded(run_dir) if not _is_ours(Path(n).name))
    if foreign:
        raise CompressError(f"run folder {run_dir} holds {run_dir / foreign[0]}, which no yolo-compress run wrote; "
                            "move it, or write the stage elsewhere (another --save or --out)")


def check_not_inside(inputs: dict[str, Path | str | None], folders: dict[str, Path]) -> None:
    """Refuse inputs that live in a folder a stage is about to replace (a run folder, before any work).

    Raises:
        CompressError: naming the input, the folder and the stage.
    """
    for flag, path in inputs.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        for stage, folder in folders.items():
            if resolved.is_relative_to(folder.resolve()):
                raise CompressError(f"{flag} {path} lies in {folder}, the run folder the {stage} stage replaces; "
                                    "copy it elsewhere first, or pass another --out / --save")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files an interrupted write of ours left in ``folder`` (our suffixes only)."""
    removed = []
    for tmp in [*Path(folder).glob(f".*{TEMP_SUFFIX}"), *Path(folder).glob(f".*{INIT_SUFFIX}")]:
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextlib.contextmanager
def locked(lock: Path, what: str) -> Iterator[None]:
    """Hold an OS lock on the file ``lock`` (released when the process ends, so a killed run never blocks the next).

    Raises:
        CompressError: another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs are not guarded
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CompressError(f"another yolo-compress command is writing {what} (it holds {lock}); wait for it to "
                                "finish or write elsewhere") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run_lock(run_dir: Path) -> Path:
    """The lock file of a run folder: beside it, so replacing the folder keeps the lock."""
    return run_dir.parent / f".{run_dir.name}{LOCK_SUFFIX}"


def drop_if_unused(runs: Path) -> None:
    """Remove a ``runs`` folder that holds nothing but run locks (a stage that failed before training)."""
    if runs.name != "runs" or not runs.is_dir():
        return
    entries = list(runs.iterdir())
    if all(p.is_file() and p.name.endswith(LOCK_SUFFIX) for p in entries):
        for p in entries:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            runs.rmdir()

