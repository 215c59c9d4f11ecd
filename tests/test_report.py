"""Comparison table formatting and files, row names, latency threads and load; PruneModel.predict / evaluate on
diagram data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from yolo_compress import PruneModel
from yolo_compress.report import Row, format_table, measure_latency, to_markdown, write_report

ROWS = [
    Row("baseline", 3_011_628, 8.194, {"mAP50": 0.91, "mAP50_95": 0.64}, 11.7, 20.0, 1.0, threads=2).flat(),
    Row("distill", 1_223_908, 3.61, {"mAP50": 0.89, "mAP50_95": 0.60}, 4.9, 10.0, 2.0, threads=2).flat(),
]


def test_table_markdown_csv_and_plot(tmp_path):
    table = format_table(ROWS).splitlines()
    assert table[0].split() == ["name", "params", "gflops", "mAP50", "mAP50_95", "size_mb", "latency_ms", "speed_up",
                                "runtime", "threads"]
    assert len({len(line) for line in table}) == 1, "every line of the table has the same width"
    assert table[3].split() == ["distill", "1,223,908", "3.610", "0.890", "0.600", "4.900", "10.000", "2.000",
                                "pytorch", "2"]
    assert "rel_f1" not in to_markdown(ROWS)

    paths = write_report(ROWS, tmp_path)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["baseline", "distill"] and float(rows[1]["speed_up"]) == 2.0
    assert [r["threads"] for r in rows] == ["2", "2"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["md"].read_text().startswith("| name | params |")


def test_classifier_and_relation_columns():
    rows = [Row("a", 1, 1.0, {"top1": 0.5, "top5": 0.9}).flat()]
    assert format_table(rows).splitlines()[0].split()[3:5] == ["top1", "top5"]
    rel = [Row("a", 1, 1.0, {"mAP50": 0.5, "mAP50_95": 0.3, "rel_precision": 0.5, "rel_recall": 0.25,
                             "rel_f1": 1 / 3}).flat()]
    assert format_table(rel).splitlines()[0].split()[5:8] == ["rel_precision", "rel_recall", "rel_f1"]
    assert "0.333" in to_markdown(rel)


def test_latency_is_measured_per_model():
    import torch

    small, big = torch.nn.Conv2d(3, 8, 3), torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1)] * 30)
    fast, slow = measure_latency([small, big], imgsz=64, rounds=5, warmup=1)
    assert 0 < fast < slow


def test_interleaved_timing_gives_every_runner_every_slot():
    from yolo_compress.report.measure import time_interleaved

    calls: list[str] = []
    runners = [lambda name=name: calls.append(name) for name in "abc"]
    times = time_interleaved(runners, rounds=6, warmup=0)
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert len(times) == 3 and all(sorted(r) == ["a", "b", "c"] for r in rounds), "each round runs each once"
    for slot in range(3):
        assert sorted(r[slot] for r in rounds) == ["a", "a", "b", "b", "c", "c"], f"slot {slot} is shared equally"


def test_rows_are_named_uniquely_with_parent_folders_where_stems_clash(tmp_path):
    from yolo_compress.report.compare import row_names

    paths = [tmp_path / p for p in ("w1/t.pt", "out/t.pt", "out/t.onnx", "a/x/m.pt", "b/x/m.pt", "solo.pt")]
    assert row_names(paths) == ["w1/t", "out/t.pt", "out/t.onnx", "a/x/m", "b/x/m", "solo"]
    assert row_names([tmp_path / "w/t.pt", tmp_path / "w/t.pt"]) == ["t", "t (2)"]  # one file given twice
    assert row_names([Path("a.pt"), Path("b.onnx")]) == ["a", "b"]


@pytest.fixture(scope="module")
def tiny_pt(tiny_yaml, tmp_path_factory) -> Path:
    from yolo_compress.checkpoint import save_checkpoint
    from yolo_compress.dataset import resolve_data
    from yolo_compress.models import build_from_yaml

    data = resolve_data(tiny_yaml)
    return save_checkpoint(build_from_yaml("yolov8n.yaml", data),
                           tmp_path_factory.mktemp("tiny_pt") / "t.pt")


def test_compare_takes_an_export_first_and_states_its_threads(tiny_pt, tiny_yaml, capsys):
    """``compare x.onnx y.pt``: the export sets the task from its metadata (it is no checkpoint); clashing stems get
    their folders; every row was timed on the --threads given."""
    import shutil

    from ultralytics import YOLO

    from yolo_compress.cli import main

    for folder in ("w1", "out"):
        Path(folder).mkdir()
        shutil.copyfile(tiny_pt, f"{folder}/t.pt")
    Path(YOLO("w1/t.pt").export(format="onnx", imgsz=64, device="cpu"))
    assert main(["compare", "w1/t.onnx", "w1/t.pt", "out/t.pt", "--data", str(tiny_yaml), "--imgsz", "64",
                 "--out", "rep", "--threads", "1"]) == 0, capsys.readouterr().err
    with open("rep/compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["w1/t.onnx", "w1/t.pt", "out/t"]
    assert [r["runtime"] for r in rows] == ["onnxruntime", "pytorch", "pytorch"]
    assert [r["threads"] for r in rows] == ["1", "1", "1"] and float(rows[0]["speed_up"]) == 1.0
    assert rows[1]["mAP50_95"] == rows[2]["mAP50_95"], "the same weights score the same"
    assert "latency timed with 1 thread(s) in every runtime" in capsys.readouterr().out


def test_every_runtime_is_timed_on_the_same_threads(tmp_path, monkeypatch):
    import onnxruntime as ort
    import torch

    from yolo_compress.report.measure import onnx_runner, openvino_runner, time_interleaved

    before = torch.get_num_threads()
    seen: list[int] = []
    time_interleaved([lambda: seen.append(torch.get_num_threads())], rounds=2, warmup=0, threads=1)
    assert seen == [1, 1] and torch.get_num_threads() == before, "PyTorch timed on 1 thread, restored after"

    options: list[ort.SessionOptions] = []

    class Session:
        def __init__(self, path: str, opts: ort.SessionOptions, providers: list[str]) -> None:
            options.append(opts)

        def get_inputs(self) -> list[object]:
            return [type("Input", (), {"name": "images"})()]

    monkeypatch.setattr(ort, "InferenceSession", Session)
    onnx_runner(tmp_path / "m.onnx", 32, threads=3)
    assert options[0].intra_op_num_threads == 3

    ov = pytest.importorskip("openvino")
    configs: list[dict] = []

    class Core:
        def compile_model(self, xml: Path, device: str, config: dict) -> object:
            configs.append(config)
            return type("Compiled", (), {"create_infer_request": lambda self: None})()

    monkeypatch.setattr(ov, "Core", Core)
    (tmp_path / "m_openvino_model").mkdir()
    (tmp_path / "m_openvino_model" / "m.xml").write_text("<net/>")
    openvino_runner(tmp_path / "m_openvino_model", 32, threads=3)
    assert configs[0]["INFERENCE_NUM_THREADS"] == 3


def test_a_busy_machine_is_named_in_a_warning(monkeypatch, caplog):
    import os

    from yolo_compress.report import measure

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(measure, "own_load", lambda: 0.5)  # this process's share, not counted against the machine
    load = {"now": 0.0}
    monkeypatch.setattr(os, "getloadavg", lambda: (load["now"], 0.0, 0.0))
    for now, busy in ((0.0, False), (5.4, False), (5.6, True), (12.0, True)):  # 4 threads: 8 - 4 + 1 = 5 free
        load["now"] = now
        caplog.clear()
        assert measure.check_load(4) is busy, now
        assert ("latencies are unreliable" in caplog.text) is busy
    assert "load average 12.0 on 8 cores, about 11.5 from other programs; measuring on 4 thread(s)" in caplog.text
    assert measure.check_load(1) is True and measure.check_load(8) is True  # 7 + 1 free for one thread: 11.5 is more
    load["now"] = 8.0
    assert measure.check_load(1) is False, "7.5 from others fits the 7 cores one thread leaves, plus the slack"


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_kill_during_compare_validation_leaves_no_temp_folder(signal_name, tiny_pt, tiny_yaml, tmp_path):
    """In a process of its own: a real signal in the middle of validation, the command's one line and exit code,
    the validation's temp folder removed, the previous SIGTERM handler restored."""
    import subprocess
    import sys

    script = f"""
import os, signal, sys, time
from pathlib import Path
from ultralytics import YOLO
from yolo_compress.cli import main
folders = []
def val(self, **kwargs):
    folders.append(Path(str(kwargs["project"])))
    assert folders[-1].is_dir()
    os.kill(os.getpid(), signal.{signal_name})
    time.sleep(10)  # the signal's exception ends this
    raise AssertionError("the signal did not stop the command")
YOLO.val = val
handler = signal.getsignal(signal.SIGTERM)
code = main(["compare", {str(tiny_pt)!r}, "--data", {str(tiny_yaml)!r}, "--imgsz", "64", "--out", "rep"])
print("CODE", code, "FOLDERS", len(folders), "LEFT", any(f.exists() for f in folders),
      "RESTORED", signal.getsignal(signal.SIGTERM) is handler)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    code = 143 if signal_name == "SIGTERM" else 130
    assert f"CODE {code} FOLDERS 1 LEFT False RESTORED True" in proc.stdout, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines()[-1] == (f"yolo-compress: {'terminated' if code == 143 else 'interrupted'}; "
                                                     "rerun the same command to continue")


@pytest.fixture(scope="module")
def diagram_yaml(tmp_path_factory) -> Path:
    from yolo_compress.data.diagram import make_diagram_dataset

    return make_diagram_dataset(tmp_path_factory.mktemp("diag") / "d", n_train=4, n_val=3, imgsz=64, seed=0)


def test_prune_model_predict_and_evaluate(diagram_yaml, tmp_path):
    pm = PruneModel("yolov8n.yaml", data=diagram_yaml)
    assert pm.imgsz == 64
    images = Path(diagram_yaml).parent / "images" / "val"
    results = pm.predict(images, save_dir=tmp_path / "pred", conf=0.0001)
    assert len(results) == 3 and all(len(r["parent_ids"]) == len(r["boxes"]) for r in results)
    assert len(list((tmp_path / "pred").iterdir())) == 3
    metrics = pm.evaluate()
    assert metrics["images"] == 3 and metrics["skipped"] == 0 and metrics["n_gt"] > 0
    tp, n_pred, n_gt = metrics["tp"], metrics["n_pred"], metrics["n_gt"]
    assert 0 <= tp <= min(n_pred, n_gt)
    p, r = (tp / n_pred if n_pred else 0.0), tp / n_gt  # by hand: precision, recall and their harmonic mean
    assert (metrics["precision"], metrics["recall"]) == pytest.approx((p, r))
    assert metrics["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)


def test_report_has_relation_columns_on_diagram_data(diagram_yaml, tmp_path):
    from yolo_compress.checkpoint import save_checkpoint
    from yolo_compress.dataset import resolve_data
    from yolo_compress.report import compare

    pm = PruneModel("yolov8n.yaml", data=diagram_yaml)
    weights = save_checkpoint(pm.model, tmp_path / "m.pt")
    rows = [r.flat() for r in compare([weights], resolve_data(diagram_yaml), 64, rounds=1)]
    assert {"rel_precision", "rel_recall", "rel_f1"} <= set(rows[0])
    assert format_table(rows).splitlines()[0].split()[5:8] == ["rel_precision", "rel_recall", "rel_f1"]


def test_every_row_scores_its_own_weights_and_int8_stays_close(tmp_path):
    """On the shipped baseline: each row's mAP is ``YOLO(w).val()`` of that row's file, a pruned model gets another
    row, and the INT8 ONNX row lands within 0.05 of its fp32 ONNX row."""
    from ultralytics import YOLO

    from yolo_compress.data import SHIPPED_BASELINE

    base = tmp_path / "base.pt"
    base.write_bytes(SHIPPED_BASELINE.read_bytes())
    pm = PruneModel(base)
    onnx, int8 = pm.export(format="onnx"), pm.quantize()  # of the baseline
    pm.prune(save_dir=tmp_path / "pruned.pt", factor=0.3)
    files = [base, tmp_path / "pruned.pt", onnx, int8]
    rows = pm.compare(files, out_dir=tmp_path / "report", rounds=1)
    for row, path in zip(rows, files):
        val = YOLO(str(path), task="detect").val(data=str(pm.data.path), imgsz=pm.imgsz, plots=False, verbose=False,
                                                 project=str(tmp_path / "val"))
        assert row.accuracy["mAP50_95"] == pytest.approx(val.box.map, abs=1e-4), path.name
    assert rows[0].params > rows[1].params and rows[0].accuracy != rows[1].accuracy
    fp32, quantized = rows[2].accuracy["mAP50_95"], rows[3].accuracy["mAP50_95"]
    assert abs(quantized - fp32) < 0.05 and fp32 > 0.1
