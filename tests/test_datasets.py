"""Datasets resolved as Ultralytics resolves them: real layouts accepted, download scripts never run, images never
rewritten, checkpoints read from exactly the path named."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from yolo_compress import CompressError, PruneModel
from yolo_compress.checkpoint import save_checkpoint
from yolo_compress.dataset import data_fingerprint, resolve_data
from yolo_compress.models import build_from_yaml


def _layout(tiny_yaml: Path, root: Path, splits: dict[str, str]) -> None:
    """Copy the tiny set's images and labels to ``root/<folder>/images`` and ``.../labels`` per split."""
    src = Path(tiny_yaml).parent
    for split, folder in splits.items():
        for kind in ("images", "labels"):
            shutil.copytree(src / kind / split, root / folder / kind)


def _write_yaml(file: Path, **spec) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(yaml.safe_dump({**spec, "names": {0: "circle", 1: "square", 2: "triangle", 3: "star"}}))
    return file


def _planted(tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "download-ran"
    return f"import pathlib; pathlib.Path({str(marker)!r}).touch()", marker


def test_a_relative_path_key_is_read_from_the_current_folder_and_its_download_never_runs(tiny_yaml, tmp_path,
                                                                                         monkeypatch):
    _layout(tiny_yaml, tmp_path / "ds", {"train": "train", "val": "val"})
    script, marker = _planted(tmp_path)
    # ../ds exists beside the yaml's folder, but Ultralytics reads a relative path: from the current folder, where
    # it does not: the dataset is "missing", and Ultralytics would run the download script
    yaml_path = _write_yaml(tmp_path / "cfg" / "data.yaml", path="../ds", train="train/images",
                            val="val/images", download=script)
    with pytest.raises(CompressError, match="must be downloaded first .*never runs a yaml's download"):
        resolve_data(yaml_path)
    assert not marker.exists()


def test_a_val_list_with_a_missing_entry_is_refused_and_its_download_never_runs(tiny_yaml, tmp_path):
    _layout(tiny_yaml, tmp_path, {"train": "train", "val": "val"})
    script, marker = _planted(tmp_path)
    yaml_path = _write_yaml(tmp_path / "data.yaml", train="train/images", val=["val/images", "val_extra/images"],
                            download=script)
    with pytest.raises(CompressError, match="val_extra"):
        resolve_data(yaml_path)
    assert not marker.exists()


def test_a_roboflow_export_and_bom_labels_train(tiny_yaml, tmp_path, monkeypatch):
    """Roboflow writes ``train: ../train/images`` and no ``path:``; Ultralytics drops the ``../``. Labels saved with a
    UTF-8 byte-order mark, CRLF line ends and blank lines are read by Ultralytics as they are."""
    root = tmp_path / "roboflow"
    _layout(tiny_yaml, root, {"train": "train", "val": "valid"})
    for label in (root / "train" / "labels").glob("*.txt"):
        rows = label.read_text().strip().splitlines()
        label.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([*rows, ""]).encode() + b"\r\n")
    yaml_path = _write_yaml(root / "data.yaml", train="../train/images", val="../valid/images")
    data = resolve_data(yaml_path)
    assert data.splits["train"] == ((root / "train" / "images").resolve(),)
    model = build_from_yaml("yolov8n.yaml", data)
    pm = PruneModel(save_checkpoint(model, tmp_path / "base.pt"), data=yaml_path, imgsz=64)
    out = pm.train(save_dir=tmp_path / "out" / "t.pt", epochs=1, batch=8)
    assert out.is_file()
    with open(pm_run_csv(out)) as f:  # Ultralytics trained on every image: no image skipped as corrupt
        assert len(f.read().strip().splitlines()) == 2


def pm_run_csv(out: Path) -> Path:
    return out.parent / "runs" / out.stem / "results.csv"


def test_a_relative_data_yaml_without_path_resolves_from_another_folder(tiny_yaml, tmp_path, monkeypatch):
    _layout(tiny_yaml, tmp_path / "ds", {"train": "train", "val": "val"})
    _write_yaml(tmp_path / "ds" / "data.yaml", train="train/images", val="val/images")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    data = resolve_data("../ds/data.yaml")
    assert data.splits["val"] == ((tmp_path / "ds" / "val" / "images").resolve(),)
    handed = yaml.safe_load(data.data_arg.read_text())  # what training reads: absolute, no download key
    assert Path(handed["train"]).is_absolute() and "download" not in handed
    model = build_from_yaml("yolov8n.yaml", data)
    pm = PruneModel(save_checkpoint(model, tmp_path / "base.pt"), data="../ds/data.yaml", imgsz=64)
    assert pm.train(save_dir=tmp_path / "t.pt", epochs=1, batch=8).is_file()


def test_names_that_do_not_start_at_zero_are_one_line(tiny_yaml, tmp_path):
    _layout(tiny_yaml, tmp_path, {"train": "train", "val": "val"})
    path = tmp_path / "data.yaml"
    path.write_text("train: train/images\nval: val/images\nnames: {1: a, 4: b}\n")
    with pytest.raises(CompressError, match="requires class indices 0-1"):
        resolve_data(path)


def test_an_imgsz_pair_in_the_yaml_is_an_image_size(tiny_yaml, tmp_path):
    _layout(tiny_yaml, tmp_path, {"train": "train", "val": "val"})
    path = _write_yaml(tmp_path / "data.yaml", train="train/images", val="val/images", imgsz=[64, 48])
    assert resolve_data(path).imgsz == 64


def test_a_list_file_with_relative_lines_is_read_as_ultralytics_reads_it(tiny_yaml, tmp_path, monkeypatch):
    """``./`` lines are relative to the list, other relative lines to the current folder (Ultralytics' rule)."""
    _layout(tiny_yaml, tmp_path, {"train": "train", "val": "val"})
    train = sorted((tmp_path / "train" / "images").iterdir())
    (tmp_path / "train.txt").write_text("".join(f"./train/images/{p.name}\n" for p in train))
    (tmp_path / "val.txt").write_text("val/images/no-such.png\n")  # relative to the current folder: not there
    path = _write_yaml(tmp_path / "data.yaml", train="train.txt", val="train.txt")
    assert len(resolve_data(path).splits["train"]) == 1
    bad = _write_yaml(tmp_path / "bad.yaml", train="train.txt", val="val.txt")
    monkeypatch.chdir(tmp_path / "train")
    with pytest.raises(CompressError, match="split 'val' has no usable labels .*No such file .*val/images/no-such"):
        resolve_data(bad)


def test_a_jpeg_with_trailing_bytes_is_never_rewritten(tiny_yaml, tmp_path):
    """Ultralytics' label scan "restores" such JPEGs in place; the user's file and the fingerprint must not change,
    so a second identical run skips every stage."""
    import cv2

    _layout(tiny_yaml, tmp_path, {"train": "train", "val": "val"})
    for png in (tmp_path / "train" / "images").glob("*.png"):
        jpg = png.with_suffix(".jpg")
        cv2.imwrite(str(jpg), cv2.imread(str(png)))
        jpg.write_bytes(jpg.read_bytes() + b"\x00\x00")  # two bytes after the end marker, as some cameras write
        png.unlink()
    before = {p: p.read_bytes() for p in (tmp_path / "train" / "images").iterdir()}
    path = _write_yaml(tmp_path / "data.yaml", train="train/images", val="val/images")
    data = resolve_data(path)
    first = data_fingerprint(data)
    model = build_from_yaml("yolov8n.yaml", data)
    PruneModel(save_checkpoint(model, tmp_path / "base.pt"), data=path, imgsz=64).train(
        save_dir=tmp_path / "t.pt", epochs=1, batch=8)
    assert {p: p.read_bytes() for p in (tmp_path / "train" / "images").iterdir()} == before
    assert data_fingerprint(resolve_data(path)) == first
    from yolo_compress.config import load_config
    from yolo_compress.finetune.stage import BaselineStage
    from yolo_compress.pipeline import CompressionPipeline
    from yolo_compress.prune.stage import PruneStage

    cfg = load_config(weights=str(tmp_path / "base.pt"), data=str(path), out=str(tmp_path / "o"), imgsz=64)
    assert CompressionPipeline(cfg, (BaselineStage, PruneStage)).run().ran == ["baseline", "prune"]
    again = CompressionPipeline(cfg, (BaselineStage, PruneStage)).run()  # the same command, the same files
    assert again.ran == [] and again.skipped == ["baseline", "prune"]
    assert {p: p.read_bytes() for p in (tmp_path / "train" / "images").iterdir()} == before


QUOTED_PROBE = textwrap.dedent(
    """
    import socket, sys
    events = []
    sys.addaudithook(lambda e, a: events.append(e) if e.startswith("socket.") and e != "socket.__new__" else None)
    from yolo_compress.patches import runtime
    runtime.apply()
    from ultralytics import YOLO
    from yolo_compress.checkpoint import load_model
    model = load_model(sys.argv[1])
    YOLO(sys.argv[1])
    print("LOADED", type(model).__name__, "EVENTS", events)
    """
)


def test_a_quote_in_a_weights_path_loads_that_file_and_nothing_else(tiny_yaml, tmp_path):
    """Ultralytics' asset lookup drops the quote and would unpickle ``obrien/best.pt`` after DNS look-ups."""
    import pickle

    data = resolve_data(tiny_yaml)
    quoted = save_checkpoint(build_from_yaml("yolov8n.yaml", data),
                             tmp_path / "wq" / "o'brien" / "best.pt")
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "wq" / "obrien" / "best.pt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(pickle.dumps(_Payload(marker)))
    script = tmp_path / "probe.py"
    script.write_text(QUOTED_PROBE)
    proc = subprocess.run([sys.executable, str(script), str(quoted)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED DetectionModel EVENTS []" in proc.stdout, proc.stdout[-2000:]
    assert not marker.exists()


class _Payload:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_label_files_mixing_polygon_and_box_rows_are_summed_up(tiny_yaml, tmp_path, caplog):
    import logging

    _layout(tiny_yaml, tmp_path, {"train": "train", "val": "val"})
    labels = sorted((tmp_path / "train" / "labels").glob("*.txt"))
    for label in labels[:12]:
        label.write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n")
    path = _write_yaml(tmp_path / "data.yaml", train="train/images", val="val/images")
    with caplog.at_level(logging.WARNING, logger="yolo_compress.dataset"):
        resolve_data(path)
    lines = [r.getMessage() for r in caplog.records if r.name == "yolo_compress.dataset"]
    assert len(lines) == 1 and "12 of 16 images skipped" in lines[0] and "mix segment and detection" in lines[0]


def test_a_checkpoint_without_data_uses_the_data_and_size_it_was_trained_on(tiny_yaml, tmp_path, monkeypatch):
    """As ``YOLO(path).val()`` does: the checkpoint's own dataset and image size, nothing generated in the folder."""
    monkeypatch.chdir(tmp_path)
    data = resolve_data(tiny_yaml)
    model = build_from_yaml("yolov8n.yaml", data)
    model.args = {"data": str(tiny_yaml), "imgsz": 96}
    pm = PruneModel(save_checkpoint(model, tmp_path / "own.pt"))
    assert (pm.data.path, pm.imgsz) == (data.path, 96)
    assert PruneModel(tmp_path / "own.pt", imgsz=64).imgsz == 64
    from yolo_compress.models import gflops
    from yolo_compress.report.compare import compare_files

    row = compare_files([tmp_path / "own.pt"], out_dir=tmp_path / "report", rounds=1)[0]
    assert row.gflops == pytest.approx(gflops(pm.model, 96), rel=1e-3) != pytest.approx(gflops(pm.model, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own.pt", "report"]


def test_a_checkpoint_whose_data_is_elsewhere_is_refused_before_the_built_in_set_is_written(tiny_yaml, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build_from_yaml("yolov8n.yaml", replace(resolve_data(tiny_yaml), names={i: str(i) for i in range(80)}))
    model.args = {"data": "/elsewhere/coco.yaml", "imgsz": 640}
    save_checkpoint(model, tmp_path / "coco.pt")
    with pytest.raises(CompressError, match=r"predicts 80 classes but the dataset has 4; it was trained on "
                                            r"/elsewhere/coco.yaml, which is not here; pass --data"):
        PruneModel(tmp_path / "coco.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.pt"]
