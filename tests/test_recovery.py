"""Never lose the user's weights, always recover from an interruption: each case is reproduced, then rerun."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from yolo_compress import CompressError
from yolo_compress.checkpoint import atomic_write_bytes, load_model, save_checkpoint
from yolo_compress.dataset import resolve_data
from yolo_compress.manifest import Manifest
from yolo_compress.models import build_from_yaml
from yolo_compress.patches.trainers import ModuleKeepingTrainer
from yolo_compress.run_folder import remove_stale_temps
from yolo_compress.training import fit, run_state, train_args

CLI = [sys.executable, "-m", "yolo_compress.cli"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- atomic writes ------------------------------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = atomic_write_bytes(tmp_path / "w.pt", b"old contents")
    with pytest.raises(TypeError):  # the write itself fails half-way (no bytes-like data)
        atomic_write_bytes(target, object())
    assert target.read_bytes() == b"old contents"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left


def test_killed_writer_leaves_the_old_file_and_a_temp_that_is_cleaned(tmp_path):
    target = atomic_write_bytes(tmp_path / "big.pt", b"v1")
    script = f"""
import os, signal
from yolo_compress.checkpoint import atomic_write_bytes
real = os.replace
def killed(*a):
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = killed
atomic_write_bytes({str(target)!r}, os.urandom(20_000_000))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert target.read_bytes() == b"v1"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".")  # hidden, never mistaken for weights
    assert remove_stale_temps(tmp_path) == leftovers and list(tmp_path.iterdir()) == [target]


def test_manifest_save_is_atomic_and_a_damaged_manifest_falls_back_to_its_backup(tmp_path, caplog):
    m = Manifest(tmp_path / "manifest.json")
    m.started("a", {}, {"x": 1})
    m.finish("a", {})
    (tmp_path / "manifest.json").write_text('{"version": 2, "stages": {"a": {"sta')  # cut off
    again = Manifest(tmp_path / "manifest.json")
    assert again.stages["a"]["status"] == "done"  # from the backup copy
    assert (tmp_path / "manifest.json.damaged").is_file()
    assert "damaged" in caplog.text


# ---- training runs ------------------------------------------------------------------------------------------------
class _Crash(Exception):
    pass


def _args(tiny_yaml, out: Path, epochs: int = 2) -> tuple:
    data = resolve_data(tiny_yaml)
    args = train_args({"epochs": epochs, "batch": 8, "plots": False, "mosaic": 0.0}, data, 64, out)
    return data, args


def test_truncated_last_pt_is_moved_aside_and_the_run_resumes_from_best(tiny_yaml, tmp_path, monkeypatch):
    data, args = _args(tiny_yaml, tmp_path / "w.pt", epochs=3)
    model = build_from_yaml("yolov8n.yaml", data)
    original = ModuleKeepingTrainer.save_model
    calls = []

    def save_twice_then_crash(self):
        original(self)
        calls.append(self.epoch)
        if len(calls) == 2:
            raise _Crash

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", save_twice_then_crash)
    with pytest.raises(_Crash):
        fit(model, ModuleKeepingTrainer, tmp_path / "w.pt", data, dict(args))
    monkeypatch.undo()
    run = tmp_path / "runs" / "w"
    last = run / "weights" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # as a kill during Ultralytics' write leaves it
    assert run_state(run) == "damaged"

    trained = []

    def record(self):
        trained.append(self.epoch)
        return original(self)

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", record)
    result = fit(model, ModuleKeepingTrainer, tmp_path / "w.pt", data, dict(args), resume=True)
    assert (run.parent / "w-last.pt.damaged").is_file()
    assert trained and 0 not in trained and trained[-1] == 2  # continued from a saved epoch, not from scratch
    epochs = [r.split(",")[0] for r in (run / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]  # every epoch once
    assert sum(p.numel() for p in load_model(tmp_path / "w.pt").parameters()) == sum(
        p.numel() for p in model.parameters()) and result.metrics["mAP50-95"] >= 0


def test_damaged_last_pt_without_a_usable_best_keeps_the_copy_and_starts_again(tiny_yaml, tmp_path, monkeypatch,
                                                                                caplog):
    import logging

    data, args = _args(tiny_yaml, tmp_path / "w.pt", epochs=2)
    model = build_from_yaml("yolov8n.yaml", data)
    original = ModuleKeepingTrainer.save_model

    def save_then_crash(self):
        original(self)
        raise _Crash

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", save_then_crash)
    with pytest.raises(_Crash):
        fit(model, ModuleKeepingTrainer, tmp_path / "w.pt", data, dict(args))
    run = tmp_path / "runs" / "w"
    last = run / "weights" / "last.pt"
    cut = last.read_bytes()[: last.stat().st_size // 3]
    last.write_bytes(cut)
    (run / "weights" / "best.pt").write_bytes(cut)  # no usable best.pt either
    trained = []

    def record(self):
        trained.append(self.epoch)
        return original(self)

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", record)
    with caplog.at_level(logging.WARNING, logger="yolo_compress.training"):
        fit(model, ModuleKeepingTrainer, tmp_path / "w.pt", data, dict(args), resume=True)
    notices = [r.getMessage() for r in caplog.records
               if r.name == "yolo_compress.training" and "damaged" in r.getMessage()]
    assert len(notices) == 1 and "starts again from epoch 1" in notices[0]
    assert (run.parent / "w-last.pt.damaged").read_bytes() == cut  # the damaged copy is kept
    assert trained == [0, 1]


@pytest.mark.slow
def test_finished_but_unsaved_run_is_finalised_without_training(tiny_yaml, tmp_path):
    """A real kill -9 after Ultralytics finished, while the stage writes its own weights: the rerun trains nothing
    and saves exactly the run's weights."""
    run = tmp_path / "runs" / "w"
    args = ["train", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--imgsz", "64", "--epochs", "1",
            "--batch", "8", "--save", str(tmp_path / "w.pt"), "plots=False"]
    _kill_while_writing(tmp_path, str(tmp_path / "w.pt"), args)
    assert run_state(run) == "finished" and not (tmp_path / "w.pt").exists()
    rows_before = (run / "results.csv").read_text()
    done = subprocess.run([*CLI, *args, "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "holds a finished run that was not saved yet" in done.stdout
    assert (run / "results.csv").read_text() == rows_before  # nothing trained again
    saved, ran = load_model(tmp_path / "w.pt").state_dict(), load_model(run / "weights" / "best.pt").state_dict()
    assert all(torch.equal(saved[k], ran[k]) for k in ran)  # exactly the run's weights, saved


# ---- the pipeline -------------------------------------------------------------------------------------------------
def test_pipeline_refuses_to_overwrite_its_input_before_any_work(tiny_yaml, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    data = resolve_data(tiny_yaml)
    weights = save_checkpoint(build_from_yaml("yolov8n.yaml", data), out / "distill.pt")
    before = digest(weights)
    proc = subprocess.run([*CLI, "run", "--weights", str(weights), "--data", str(tiny_yaml), "--out", str(out),
                           "--epochs", "1", "--imgsz", "64"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "--weights" in err[0] and "--out" in err[0] and "distill" in err[0]
    assert digest(weights) == before and sorted(p.name for p in out.iterdir()) == ["distill.pt"]


def test_failed_commands_leave_nothing_in_the_current_folder(tiny_yaml, tmp_path):
    cases = [
        ["train", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--epochs", "1", "lr00=0.01"],
        ["sparse", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--zero-at", "2"],
        ["distill", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--teacher", "missing.pt"],
        ["compare", "missing.pt", "--data", str(tiny_yaml)],
        ["run", "--data", str(tiny_yaml), "--loss", "foo"],
    ]
    for args in cases:
        proc = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert list(tmp_path.iterdir()) == [], (args, list(tmp_path.iterdir()))


def test_stale_temp_files_are_removed_and_damaged_manifest_rerun_skips_verified_stages(tiny_yaml, tmp_path):
    from yolo_compress.config import load_config
    from yolo_compress.pipeline import CompressionPipeline

    cfg = load_config(data=str(tiny_yaml), out=str(tmp_path / "o"), epochs=1, imgsz=64, batch=8, sparse=False,
                      distill=False, compare=False)
    CompressionPipeline(cfg).run()
    manifest = tmp_path / "o" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    killed = subprocess.run([sys.executable, "-c", (  # a writer killed before its rename, as in the test above
        "import os, signal\nfrom yolo_compress.checkpoint import atomic_write_bytes\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"atomic_write_bytes({str(tmp_path / 'o' / 'finetune.pt')!r}, b'partial')")], timeout=120)
    assert killed.returncode == -9
    leftover = [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".finetune.pt")]
    assert len(leftover) == 1
    result = CompressionPipeline(cfg).run()
    assert result.skipped == ["baseline", "prune", "finetune"] and result.ran == []
    assert not leftover[0].exists()
    assert json.loads(manifest.read_text())["stages"]["finetune"]["status"] == "done"
    assert sum(p.numel() for p in load_model(tmp_path / "o" / "finetune.pt").parameters()) == sum(
        p.numel() for p in load_model(tmp_path / "o" / "prune.pt").parameters())  # the pruned shape, fine-tuned


def test_compress_error_is_one_line_for_every_command(tiny_yaml, tmp_path):
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "file").write_text("")
    cases = {  # one real subprocess per command (the README error table runs in-process in test_errors.py)
        "run": (["run", "--config", "bad.yaml"], "bad.yaml is not valid YAML at line 2"),
        "prune": (["prune", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--save", "folder.pt"],
                  "must name a .pt file"),
        "distill": (["distill", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--teacher", "nope.pt"],
                    "teacher checkpoint not found: nope.pt"),
        "compare": (["compare", "yolov8n.yaml", "--data", str(tiny_yaml), "--out", "file"], "weights not found"),
        "predict": (["predict", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--source", "missing.png"],
                    "source not found: missing.png"),
        "evaluate": (["evaluate", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml)], "parent"),
        "export": (["export", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--format", "foo"],
                   "invalid choice: 'foo'"),
        "data": (["data", "--train", "0", "--root", "d"], "need --train >= 1"),
        "set": (["run", "--set", "train_args={lr00: 0.01}", "--data", str(tiny_yaml)], "did you mean 'lr0'"),
        "speed": (["run", "--speed-up", "0.5", "--data", str(tiny_yaml)], "speed_up=0.5: must be > 1"),
    }
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    # side by side, both cores busy: each command spends most of its time importing torch and Ultralytics
    procs = {name: subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=tmp_path) for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        err = stderr.strip().splitlines()
        assert proc.returncode == 2, (name, stderr)
        assert len(err) == 1 and err[0].startswith("yolo-compress: error:") and cases[name][1] in err[0], (name, stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "file", "folder.pt"]


def test_class_count_mismatch_is_caught_before_training(tiny_yaml, tmp_path):
    from yolo_compress import PruneModel

    data = resolve_data(tiny_yaml)
    other = save_checkpoint(build_from_yaml("yolov8n.yaml", replace(data, names={0: "a", 1: "b"})), tmp_path / "nc2.pt")
    with pytest.raises(CompressError, match="predicts 2 classes but the dataset has 4; pass the dataset the model"):
        PruneModel(other, data=data.path)


KILLABLE = """
import os, sys, time
from pathlib import Path
real_replace = os.replace
marker, target = Path(sys.argv[1]), sys.argv[2]

def replace(src, dst):  # hold the rename onto ``target`` (when it already exists, for last.pt) until killed
    if str(dst) == target and (Path(dst).is_file() or not target.endswith("last.pt")):
        marker.write_text("saving")
        time.sleep(120)
    return real_replace(src, dst)

os.replace = replace
from yolo_compress.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _kill_while_writing(tmp_path: Path, target: str, args: list[str]) -> None:
    """Run the CLI with ``args`` and SIGKILL it while it renames a finished temp file onto ``target``."""
    import signal
    import time

    marker, script = tmp_path / "saving", tmp_path / "killable.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), str(marker), target, *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), f"the run never reached the write of {target}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_while_ultralytics_saves_a_checkpoint(tiny_yaml, tmp_path):
    """A real kill -9 in the middle of writing ``last.pt``; the rerun finishes, every epoch is listed once, and no
    temp file is left."""
    args = ["train", "--weights", "yolov8n.yaml", "--data", str(tiny_yaml), "--imgsz", "64", "--epochs", "3",
            "--batch", "8", "--save", str(tmp_path / "w.pt"), "plots=False"]
    weights = tmp_path / "runs" / "w" / "weights"
    _kill_while_writing(tmp_path, str(weights / "last.pt"), args)
    assert list(weights.glob(".*.yolo-compress-tmp")), "the kill came mid-write: a temp file exists"
    done = subprocess.run([*CLI, *args, "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(weights.glob(".*.yolo-compress-tmp")) == [] and (tmp_path / "w.pt").is_file()
    assert torch.load(weights / "last.pt", weights_only=False)["epoch"] == -1  # whole, and finished (stripped)
    epochs = [r.split(",")[0] for r in (tmp_path / "runs" / "w" / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]
