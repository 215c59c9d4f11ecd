"""Foundation: dataset generator, PruneModel.train keeping altered models (train + resume), offline, CLI errors."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch_pruning as tp

from yolo_compress import CompressError, PruneModel
from yolo_compress.data.synthetic import make_shapes_dataset
from yolo_compress.patches.trainers import ModuleKeepingTrainer

CLI = [sys.executable, "-m", "yolo_compress.cli"]


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix != ".cache":
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_dataset_is_deterministic_and_well_formed(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", n_train=6, n_val=3, imgsz=64, seed=3)
    b = make_shapes_dataset(tmp_path / "b", n_train=6, n_val=3, imgsz=64, seed=3)
    c = make_shapes_dataset(tmp_path / "c", n_train=6, n_val=3, imgsz=64, seed=4)
    digest = lambda y: _tree_digest(y.parent / "images") + _tree_digest(y.parent / "labels")  # noqa: E731
    assert digest(a) == digest(b) != digest(c)
    assert len(list((a.parent / "images" / "train").glob("*.png"))) == 6
    for label in (a.parent / "labels").rglob("*.txt"):
        rows = [list(map(float, line.split())) for line in label.read_text().splitlines()]
        assert 1 <= len(rows) <= 4
        for cls, x, y, w, h in rows:
            assert cls in (0, 1, 2, 3) and 0 < w <= 0.5 and 0 < h <= 0.5
            assert x - w / 2 >= 0 and x + w / 2 <= 1 and y - h / 2 >= 0 and y + h / 2 <= 1
    with pytest.raises(CompressError, match="already exists"):
        make_shapes_dataset(tmp_path / "a", n_train=1, n_val=1, imgsz=64)


def _narrow_first_conv(model: torch.nn.Module, n: int = 8) -> None:
    """Remove ``n`` output channels of the stem conv (and the inputs that read them) by hand."""
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 64, 64))
    dg.get_pruning_group(model.model[0].conv, tp.prune_conv_out_channels, idxs=list(range(n))).prune()


def test_train_keeps_altered_model_through_training_and_resume(tiny_yaml, monkeypatch):
    pm = PruneModel("yolov8n.yaml", data=tiny_yaml, imgsz=64)
    full = pm.info()["params"]
    _narrow_first_conv(pm.model)
    narrowed = pm.info()["params"]
    assert narrowed < full and pm.model.model[0].conv.out_channels == 8

    original = ModuleKeepingTrainer.save_model

    def save_then_crash(self):  # simulate a crash right after the first epoch's checkpoint
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        pm.train(save_dir="weights/retrain.pt", epochs=2, batch=8, plots=False)
    assert not Path("weights/retrain.pt").exists(), "an interrupted run must not leave final weights"
    assert not Path("runs").exists(), "run folders go next to the weights, not into the current folder"
    last = Path("weights/runs/retrain/weights/last.pt")
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["epoch"] == 0 and sum(p.numel() for p in ckpt["ema"].parameters()) == narrowed

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", original)
    out = pm.train(save_dir="weights/retrain.pt", resume=True)
    assert out == Path("weights/retrain.pt") and out.is_file()
    assert pm.info()["params"] == narrowed
    rows = Path("weights/runs/retrain/results.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"], "resume must continue at epoch 2, not restart"

    from ultralytics import YOLO

    yolo = YOLO(out)
    assert sum(p.numel() for p in yolo.model.parameters()) == narrowed
    assert next(yolo.model.parameters()).dtype == torch.float32
    saved, trained = yolo.model.float().state_dict(), pm.model.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)  # the trained
    start = PruneModel("yolov8n.yaml", data=tiny_yaml, imgsz=64)
    _narrow_first_conv(start.model)
    assert not torch.equal(start.model.model[0].conv.weight, pm.model.model[0].conv.weight)  # ... and it trained


def test_resume_without_a_run_is_a_clear_error(tiny_yaml):
    pm = PruneModel("yolov8n.yaml", data=tiny_yaml, imgsz=64)
    with pytest.raises(CompressError, match="nothing to resume"):
        pm.train(save_dir="weights/none.pt", resume=True)


def test_train_refuses_to_overwrite_its_input(tiny_yaml, tmp_path):
    from yolo_compress.checkpoint import save_checkpoint

    src = save_checkpoint(PruneModel("yolov8n.yaml", data=tiny_yaml).model, tmp_path / "in.pt")
    pm = PruneModel(src, data=tiny_yaml)
    with pytest.raises(CompressError, match="overwrite the input"):
        pm.train(save_dir=src, epochs=1)


NETWORK_PROBE = textwrap.dedent(
    """
    import socket, sys
    socket.socket().connect_ex(("127.0.0.1", 9))  # the control: strace must see this one (refused, local)
    events = []
    def hook(event, args):
        if event.startswith("socket.") and event not in ("socket.__new__",):
            events.append((event, repr(args)[:120]))
    sys.addaudithook(hook)
    from yolo_compress import PruneModel
    from yolo_compress.cli import main
    pm = PruneModel("yolov8n.yaml", data=sys.argv[1], imgsz=64)
    pm.train(save_dir="weights/net.pt", epochs=1, batch=8)
    pm.val()
    from ultralytics import YOLO
    YOLO("weights/net.pt").predict(sys.argv[2], imgsz=64, verbose=False)
    pm.sparse_train(save_dir="weights/sparse.pt", epochs=1, batch=8, factor=0.5)
    pm.prune(save_dir="weights/prune.pt", factor=0.5)
    pm.distill("weights/net.pt", save_dir="weights/distill.pt", epochs=1, batch=8)
    pm.export(format="onnx")
    pm.quantize()
    pm.export(format="openvino")
    pm.quantize(format="openvino", calibration=8)
    assert main(["compare", "weights/net.pt", "weights/distill.pt", "weights/distill.onnx", "weights/distill-int8.onnx",
                 "weights/distill_openvino_model", "weights/distill_int8_openvino_model",
                 "--data", sys.argv[1], "--out", "report"]) == 0
    print("EVENTS", events)
    """
)


def _network_syscalls(trace: Path) -> list[str]:
    """Connections and datagrams to IP addresses (DNS look-ups included) in an ``strace -f`` log."""
    return [line for line in trace.read_text().splitlines()
            if ("connect(" in line or "sendto(" in line or "sendmsg(" in line) and ("AF_INET" in line)]


@pytest.mark.slow
def test_every_stage_and_the_cli_make_no_network_calls(tiny_yaml, tmp_path):
    """train, val, predict, sparse training, prune, distill, export and INT8 for ONNX Runtime and OpenVINO, and the
    CLI's compare of .pt, .onnx and OpenVINO models, with no YOLO_* variable set (the default config dir, whose font
    may not exist yet) and a fresh HOME: not one socket call from Python, not one IP connection or DNS query from
    native code (ONNX Runtime's and OpenVINO's telemetry), nothing written under HOME."""
    import shutil
    import tempfile

    from yolo_compress.patches.runtime import default_config_dir

    images = Path(tiny_yaml).parent / "images" / "val"
    script = tmp_path / "probe.py"
    script.write_text(NETWORK_PROBE)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("YOLO_", "XDG_"))}
    env["TMPDIR"] = str(tmp_path / "tmp")  # a fresh default config dir (under the temp folder): no font there yet
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    command = [sys.executable, str(script), str(tiny_yaml), str(images)]
    strace = shutil.which("strace")
    if strace:  # sees what native libraries send, which Python's audit hooks cannot; stops only on those calls
        command = [strace, "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect,sendto,sendmsg",
                   "-o", str(tmp_path / "net.trace"), *command]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("EVENTS")][-1]
    assert line == "EVENTS []", line
    if strace:
        calls = _network_syscalls(tmp_path / "net.trace")
        assert [c for c in calls if 'inet_addr("127.0.0.1")' in c and "htons(9)" in c], "strace missed the control"
        assert [c for c in calls if "htons(9)" not in c] == []
    assert [p for p in (tmp_path / "home").rglob("*")] == []
    fresh = tmp_path / "tmp" / default_config_dir().relative_to(tempfile.gettempdir())
    assert (fresh / "Ultralytics" / "Arial.ttf").is_file() and (tmp_path / "report" / "compare.md").is_file()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_weights", "weights file not found"),
        ("not_a_checkpoint", "is not a loadable YOLO checkpoint"),
        ("missing_data", "dataset yaml not found"),
        ("malformed_data", "key missing"),
        ("empty_dataset", "no images found"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(case, match, tmp_path, tiny_yaml):
    weights = "yolov8n.yaml"
    data = str(tiny_yaml)
    if case == "missing_weights":
        weights = "nope.pt"
    elif case == "not_a_checkpoint":
        (tmp_path / "fake.pt").write_text("not a checkpoint")
        weights = "fake.pt"
    elif case == "missing_data":
        data = "missing.yaml"
    elif case == "malformed_data":
        (tmp_path / "bad.yaml").write_text("train: images/train\n")
        data = "bad.yaml"
    else:
        (tmp_path / "empty" / "images" / "train").mkdir(parents=True)
        (tmp_path / "empty.yaml").write_text(f"path: {tmp_path / 'empty'}\ntrain: images/train\nval: images/train\n"
                                             "names: {0: a}\n")
        data = "empty.yaml"
    proc = _cli("train", "--weights", weights, "--data", data, "--save", "weights/out.pt", "--epochs", "1",
                cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yolo-compress: error:") and match in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "weights" / "out.pt").exists()


def test_cli_help_lists_every_command(tmp_path):
    import re

    proc = _cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    listed = set(re.search(r"\{([a-z,]+)\}", proc.stdout).group(1).split(","))
    assert listed == {"data", "train", "sparse", "prune", "distill", "compare", "export", "quantize", "predict",
                      "evaluate", "run"}


def test_cli_data_writes_a_dataset(tmp_path):
    proc = _cli("data", "--root", "d", "--train", "3", "--val", "2", "--imgsz", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "data.yaml").is_file()
    assert len(list((tmp_path / "d" / "images" / "val").glob("*.png"))) == 2
    again = _cli("data", "--root", "d", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


DETERMINISM_PROBE = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from yolo_compress import PruneModel
    seed, out = int(sys.argv[3]), Path(sys.argv[2])
    pm = PruneModel("yolov8n.yaml", data=sys.argv[1], imgsz=64)
    teacher = pm.train(save_dir=out / "t.pt", epochs=1, batch=8, plots=False, seed=seed)
    pm.sparse_train(save_dir=out / "s.pt", epochs=1, batch=8, plots=False, seed=seed, factor=0.5)
    pm.prune(save_dir=out / "p.pt", factor=0.5)
    pm.distill(teacher, save_dir=out / "d.pt", epochs=1, batch=8, plots=False, seed=seed)
    h = hashlib.sha256()
    for v in pm.model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    print("DIGEST", h.hexdigest())
    """
)


def test_same_seed_same_machine_same_model(tiny_yaml, tmp_path):
    """Fresh processes running train, sparse training, pruning and distillation (deterministic=True): the same
    seed gives bit-identical weights, another seed other weights."""
    script = tmp_path / "det.py"
    script.write_text(DETERMINISM_PROBE)
    digests = []
    for i, seed in enumerate((0, 0, 1)):
        proc = subprocess.run([sys.executable, str(script), str(tiny_yaml), str(tmp_path / f"w{i}"), str(seed)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        digests.append([x for x in proc.stdout.splitlines() if x.startswith("DIGEST")][-1])
    assert digests[0] == digests[1] != digests[2]


def test_written_files_follow_the_umask(tmp_path):
    import os

    from yolo_compress.checkpoint import atomic_write_bytes

    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            path = atomic_write_bytes(tmp_path / f"f{mask}.bin", b"x")
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == mode
