"""Comparison table formatting and files; PruneModel.predict / evaluate on diagram data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from yolo_compress import PruneModel
from yolo_compress.report import Row, format_table, measure_latency, to_markdown, write_report

ROWS = [
    Row("baseline", 3_011_628, 8.194, {"mAP50": 0.91, "mAP50_95": 0.64}, 11.7, 20.0, 1.0).flat(),
    Row("distill", 1_223_908, 3.61, {"mAP50": 0.89, "mAP50_95": 0.60}, 4.9, 10.0, 2.0).flat(),
]


def test_table_markdown_csv_and_plot(tmp_path):
    table = format_table(ROWS).splitlines()
    assert table[0].split() == ["name", "params", "gflops", "mAP50", "mAP50_95", "size_mb", "latency_ms", "speed_up",
                                "runtime"]
    assert len({len(line) for line in table}) == 1, "every line of the table has the same width"
    assert table[3].split() == ["distill", "1,223,908", "3.610", "0.890", "0.600", "4.900", "10.000", "2.000",
                                "pytorch"]
    assert "rel_f1" not in to_markdown(ROWS)

    paths = write_report(ROWS, tmp_path)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["baseline", "distill"] and float(rows[1]["speed_up"]) == 2.0
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
