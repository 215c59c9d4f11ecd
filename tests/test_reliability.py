"""No file touched that the user did not name, no stale result, no late traceback: each promise broken once here."""

from __future__ import annotations

import builtins
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yolo_compress import CompressError, PruneModel
from yolo_compress.checkpoint import save_checkpoint
from yolo_compress.config import load_config
from yolo_compress.dataset import resolve_data
from yolo_compress.finetune.stage import BaselineStage
from yolo_compress.models import build_from_yaml
from yolo_compress.pipeline import CompressionPipeline
from yolo_compress.prune.stage import PruneStage
from yolo_compress.run_folder import LOCK_NAME

CLI = [sys.executable, "-m", "yolo_compress.cli"]


@pytest.fixture(scope="module")
def base_pt(tiny_yaml, tmp_path_factory) -> Path:
    data = resolve_data(tiny_yaml)
    return save_checkpoint(build_from_yaml("yolov8n.yaml", data),
                           tmp_path_factory.mktemp("base") / "base.pt")


class _Planted:
    """Unpickling this creates ``marker``: proof that a file was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def test_compare_of_an_onnx_file_loads_no_unnamed_checkpoint(base_pt, tiny_yaml, tmp_path):
    from ultralytics import YOLO

    folder = tmp_path / "some" / "dir"
    folder.mkdir(parents=True)
    exported = Path(YOLO(str(base_pt)).export(format="onnx", imgsz=64))
    onnx = folder / "m.onnx"
    onnx.write_bytes(exported.read_bytes())
    marker = tmp_path / "payload-ran"
    with open(folder / "m.pt", "wb") as f:  # a planted sibling: loading it would run its payload
        pickle.dump(_Planted(marker), f)
    rows = PruneModel(base_pt, data=tiny_yaml, imgsz=64).compare([base_pt, onnx], out_dir=tmp_path / "report",
                                                                 rounds=1)
    assert not marker.exists()
    pt_row, onnx_row = rows
    assert onnx_row.runtime == "onnxruntime"
    assert abs(onnx_row.params - pt_row.params) / pt_row.params < 0.01  # its own graph: BatchNorm folded only
    assert abs(onnx_row.gflops - pt_row.gflops) / pt_row.gflops < 0.05


def test_a_run_folder_holding_user_files_is_never_deleted(base_pt, tiny_yaml, tmp_path):
    """A finished run's folder is replaced by a rerun, but not once a user put a file there: files count as the run's
    by the record the run kept, not by their extension."""
    def train() -> Path:
        return PruneModel(base_pt, data=tiny_yaml, imgsz=64).train(save_dir=tmp_path / "o" / "x.pt", epochs=1, batch=8)

    run = tmp_path / "o" / "runs" / "x"
    train()
    assert (run / "results.csv").is_file()
    for name in ("my_experiments.csv", "my_settings.yaml"):
        mine = run / name
        mine.write_text("keep me")
        with pytest.raises(CompressError, match=f"{name}, which no yolo-compress run wrote; move it"):
            train()
        assert mine.read_text() == "keep me"
        mine.unlink()
    train()  # only the run's own files: replaced


def test_an_input_inside_a_run_folder_is_refused_before_any_work(base_pt, tiny_yaml, tmp_path):
    import shutil

    run = tmp_path / "w" / "runs" / "t" / "weights"
    run.mkdir(parents=True)
    inside = shutil.copyfile(base_pt, run / "best.pt")
    with pytest.raises(CompressError, match="lies in .*runs/t, the run folder the training stage replaces"):
        PruneModel(inside, data=tiny_yaml, imgsz=64).train(save_dir=tmp_path / "w" / "t.pt", epochs=1)
    out = tmp_path / "out"
    distill_run = out / "runs" / "distill" / "weights"
    distill_run.mkdir(parents=True)
    inside = shutil.copyfile(base_pt, distill_run / "best.pt")
    cfg = load_config(weights=str(inside), data=str(tiny_yaml), out=str(out), imgsz=64, budget=2)
    with pytest.raises(CompressError, match="lies in .*runs/distill, the run folder the distill stage replaces"):
        CompressionPipeline(cfg)
    assert inside.is_file() and sorted(p.name for p in out.iterdir()) == ["runs"]


def test_hidden_tmp_files_of_the_user_survive_the_clean_up(base_pt, tiny_yaml, tmp_path):
    from yolo_compress.run_folder import remove_stale_temps

    out = tmp_path / "out"
    out.mkdir()
    notes = out / ".notes.tmp"
    notes.write_text("mine")
    ours = out / ".prune.pt.abc123.yolo-compress-tmp"
    ours.write_bytes(b"half a checkpoint")
    assert remove_stale_temps(out) == [ours] and notes.read_text() == "mine"


def test_two_stage_commands_on_one_save_fail_fast(base_pt, tiny_yaml, tmp_path):
    from yolo_compress.run_folder import run_lock

    lock = run_lock(tmp_path / "w" / "runs" / "t")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(  # another command trains into the same run folder
        [sys.executable, "-c", f"import fcntl, time; f = open({str(lock)!r}, 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CompressError, match="another yolo-compress command is writing the run folder"):
            PruneModel(base_pt, data=tiny_yaml, imgsz=64).train(save_dir=tmp_path / "w" / "t.pt", epochs=1)
        assert not (tmp_path / "w" / "runs" / "t").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_second_run_on_the_same_out_fails_at_once(base_pt, tiny_yaml, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # another run holds the folder's lock
        [sys.executable, "-c", f"import fcntl, sys, time; f = open({str(out / LOCK_NAME)!r}, 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = load_config(weights=str(base_pt), data=str(tiny_yaml), out=str(out), imgsz=64, factor=0.3)
        t0 = time.perf_counter()
        with pytest.raises(CompressError, match="another yolo-compress command is writing .*; wait for it"):
            CompressionPipeline(cfg, (BaselineStage, PruneStage)).run()
        assert time.perf_counter() - t0 < 5 and not (out / "prune.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    # a killed holder leaves no lock behind: the next run goes through
    assert CompressionPipeline(cfg, (BaselineStage, PruneStage)).run().ran == ["baseline", "prune"]


def test_a_changed_dataset_reruns_what_depends_on_it(base_pt, tiny_yaml, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(tiny_yaml).parent, data)
    yaml_path = data / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(str(Path(tiny_yaml).parent), str(data)))
    cfg = load_config(weights=str(base_pt), data=str(yaml_path), out=str(tmp_path / "out"), imgsz=64, factor=0.3)
    stages = (BaselineStage, PruneStage)
    assert CompressionPipeline(cfg, stages).run().ran == ["baseline", "prune"]
    assert CompressionPipeline(cfg, stages).run().ran == []
    label = sorted((data / "labels" / "train").glob("*.txt"))[0]
    label.write_text("")  # the yaml is unchanged; the data is not
    assert CompressionPipeline(cfg, stages).run().ran == ["baseline", "prune"]


def test_an_interrupted_training_leaks_no_starting_checkpoint(base_pt, tiny_yaml, tmp_path, monkeypatch):
    import tempfile

    from yolo_compress.patches.trainers import ModuleKeepingTrainer

    def crash(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", crash)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(KeyboardInterrupt):
        PruneModel(base_pt, data=tiny_yaml, imgsz=64).train(save_dir=tmp_path / "w" / "x.pt", epochs=1, batch=8)
    assert list((tmp_path / "w").glob(".*")) == [] and list((tmp_path / "tmp").rglob("*.pt")) == []
    # a SIGKILL leaves it next to the output, where the pipeline's start removes it with other temps
    from yolo_compress.run_folder import remove_stale_temps

    stale = tmp_path / "w" / ".x.yolo-compress-init.pt"
    stale.write_bytes(b"left by a kill")
    assert remove_stale_temps(tmp_path / "w") == [stale] and not stale.exists()


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _setup(case: str, tmp: Path, tiny_yaml: Path, base_pt: Path) -> list[str]:
    """The command line of one bad input (files it needs are written into ``tmp``)."""
    data, w = str(tiny_yaml), str(base_pt)
    if case == "nc_names":
        text = Path(tiny_yaml).read_text()
        (tmp / "nc.yaml").write_text(text + "nc: 7\n")
        return ["run", "--data", "nc.yaml", "--out", "out"]
    if case == "empty_dir":
        (tmp / "empty").mkdir()
    if case == "text_list":
        (tmp / "list.txt").write_text("not/an/image.png\n")
    if case == "fake_jpg":
        (tmp / "fake.jpg").write_text("not an image")
    if case == "save_dir_file":
        (tmp / "afile").write_text("")
    if case == "cls_model":
        from yolo_compress.data.classify import make_classify_dataset

        cls_data = resolve_data(make_classify_dataset(tmp / "cls", n_train=6, n_val=6), "classify")
        save_checkpoint(build_from_yaml("yolov8n-cls.yaml", cls_data), tmp / "cls.pt")
    source = str(Path(tiny_yaml).parent / "images" / "val")
    return {
        "imgsz_huge_prune": ["prune", "--weights", w, "--data", data, "--imgsz", "100000", "--save", "out/p.pt"],
        "imgsz_huge_run": ["run", "--weights", w, "--data", data, "--imgsz", "100000", "--out", "out"],
        "imgsz_zero_train": ["train", "--weights", w, "--data", data, "--imgsz", "0", "--save", "out/t.pt"],
        "batch_zero_sparse": ["sparse", "--weights", w, "--data", data, "--batch", "0", "--save", "out/s.pt"],
        "device_missing": ["run", "--weights", w, "--data", data, "--device", "99", "--out", "out"],
        "empty_dir": ["predict", "--weights", w, "--data", data, "--source", "empty"],
        "text_list": ["predict", "--weights", w, "--data", data, "--source", "list.txt"],
        "fake_jpg": ["predict", "--weights", w, "--data", data, "--source", "fake.jpg"],
        "save_dir_file": ["predict", "--weights", w, "--data", data, "--source", source, "--save-dir", "afile"],
        "cls_model": ["compare", w, "cls.pt", "--data", data, "--out", "out"],
    }[case]


@pytest.mark.parametrize("case, words", [
    ("imgsz_huge_prune", ["imgsz 100000", "from 32 to 4096", "fix --imgsz"]),
    ("imgsz_huge_run", ["imgsz 100000", "fix --imgsz"]),
    ("imgsz_zero_train", ["imgsz 0", "fix --imgsz"]),
    ("batch_zero_sparse", ["batch 0", "fix --batch"]),
    ("device_missing", ["device '99'", "pass --device cpu"]),
    ("nc_names", ["nc: 7", "'names' length 4", "must match"]),
    ("empty_dir", ["holds no images", "pass a folder of images"]),
    ("text_list", ["list of image paths", "no image file"]),
    ("fake_jpg", ["not a readable image", "pass an image"]),
    ("save_dir_file", ["--save-dir afile is a file", "pass a folder"]),
    ("cls_model", ["classify model of", "detect data", "compare models of one dataset"]),
])
def test_bad_input_is_one_line_before_any_work(case, words, tmp_path, tiny_yaml, base_pt):
    args = _setup(case, tmp_path, tiny_yaml, base_pt)
    before = sorted(p.name for p in tmp_path.iterdir())
    t0 = time.perf_counter()
    proc = _cli(args, tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("yolo-compress: error:"), proc.stderr[-2000:]
    assert all(w in err[0] for w in words), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no --out, no runs/, no drawings
    assert time.perf_counter() - t0 < 60


def test_the_manifest_records_the_data_fingerprint(base_pt, tiny_yaml, tmp_path):
    out = tmp_path / "out"
    cfg = load_config(weights=str(base_pt), data=str(tiny_yaml), out=str(out), imgsz=64, factor=0.3)
    CompressionPipeline(cfg, (BaselineStage, PruneStage)).run()
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    from yolo_compress.dataset import data_fingerprint

    assert stages["prune"]["sources"]["data"]["sha256"] == data_fingerprint(resolve_data(tiny_yaml))


def _copy_data(tiny_yaml: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(Path(tiny_yaml).parent, to)
    yaml_path = to / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(str(Path(tiny_yaml).parent), str(to)))
    return yaml_path


def test_labels_all_out_of_bounds_are_one_line(tiny_yaml, tmp_path, base_pt):
    yaml_path = _copy_data(tiny_yaml, tmp_path / "data")
    for label in (tmp_path / "data" / "labels" / "train").glob("*.txt"):
        label.write_text("0 1.5 0.5 0.2 0.2\n")  # centre outside the image
    proc = _cli(["train", "--weights", str(base_pt), "--data", str(yaml_path), "--save", "out/t.pt"], tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    assert "split 'train' has no usable labels" in err[0] and "out of bounds coordinates" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_partly_bad_split_is_summed_up_in_one_line(tiny_yaml, tmp_path, caplog):
    import logging

    yaml_path = _copy_data(tiny_yaml, tmp_path / "data")
    labels = sorted((tmp_path / "data" / "labels" / "train").glob("*.txt"))
    labels[0].write_text("0 nan 0.5 0.2 0.2\n")
    labels[1].write_text("0 0.5 0.5 0.2 0.2 0.9\n")  # six columns
    images = sorted((tmp_path / "data" / "images" / "train").glob("*.png"))
    images[2].write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="yolo_compress.dataset"):
        resolve_data(yaml_path)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "yolo_compress.dataset" and "'train'" in r.getMessage()]
    # Ultralytics' own check decides: the unreadable image and both bad label files, in one line
    assert len(lines) == 1 and "3 of 16 images skipped by Ultralytics' label check" in lines[0], lines


def test_a_full_disk_is_one_line(base_pt, tiny_yaml, tmp_path, monkeypatch, capsys):
    import errno

    import yolo_compress.prune.stage as prune_stage
    from yolo_compress.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "out/p.pt")

    monkeypatch.setattr(prune_stage, "save_checkpoint", full)
    code = main(["prune", "--weights", str(base_pt), "--data", str(tiny_yaml), "--imgsz", "64", "--factor", "0.3",
                 "--save", str(tmp_path / "out" / "p.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "the disk is full writing out/p.pt; free space" in err[0]


def test_too_little_disk_space_is_found_before_any_work(base_pt, tiny_yaml, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    from yolo_compress.cli import main

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 50 * 2**20, 50 * 2**20))
    code = main(["run", "--weights", str(base_pt), "--data", str(tiny_yaml), "--imgsz", "64", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "only 50 MB free" in err[0] and "free at least 200 MB" in err[0]
    assert not (tmp_path / "out").exists()
