"""INT8 quantization: boxes close to the fp32 model, the resumable pipeline stage, its report rows, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yolo_compress import CompressError, PruneModel
from yolo_compress.data import SHIPPED_BASELINE
from yolo_compress.dataset import resolve_data

pytestmark = pytest.mark.skipif(not SHIPPED_BASELINE.is_file(), reason="needs the shipped baseline (source checkout)")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """The built-in shapes set, as the shipped baseline was trained on (written to a temp folder)."""
    from yolo_compress.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("q") / "shapes", n_train=40, n_val=20, imgsz=160, seed=0)


def _top_boxes(session, x: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    out = session.run(None, {session.get_inputs()[0].name: x})[0][0]  # (4 + nc, anchors): xywh, class scores
    scores = out[4:].max(0)
    top = np.argsort(-scores)[:k]
    xywh = out[:4, top].T
    return np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1), out[4:, top].argmax(0)


def test_int8_model_finds_the_same_boxes(shapes, tmp_path):
    import onnxruntime as ort

    from yolo_compress.deploy.calibration import preprocess
    from yolo_compress.relations import box_iou

    weights = tmp_path / "base.pt"
    weights.write_bytes(SHIPPED_BASELINE.read_bytes())
    pm = PruneModel(weights, data=shapes)
    int8 = pm.quantize(calibration=16)
    assert int8 == tmp_path / "base-int8.onnx" and (tmp_path / "base.onnx").is_file()
    fp32 = ort.InferenceSession(str(tmp_path / "base.onnx"), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(int8)).graph.node)
    for image in sorted((shapes.parent / "images" / "val").glob("*.png"))[:3]:
        x = preprocess(image, 160, "detect")
        (b32, c32), (b8, c8) = _top_boxes(fp32, x), _top_boxes(q, x)
        assert (c32 == c8).all()
        assert np.diag(box_iou(b32, b8)).min() > 0.8


def test_quantize_stage_resumes_and_adds_report_rows(shapes, tmp_path):
    from yolo_compress.config import load_config
    from yolo_compress.pipeline import CompressionPipeline

    weights = tmp_path / "base.pt"
    weights.write_bytes(SHIPPED_BASELINE.read_bytes())
    cfg = load_config(weights=str(weights), data=str(shapes), out=str(tmp_path / "o"), sparse=False, finetune=False,
                      distill=False, quantize="int8", calibration=8, latency_rounds=3)
    first = CompressionPipeline(cfg).run()
    assert first.ran == ["baseline", "prune", "quantize", "compare"]
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())["stages"]
    assert len(manifest["quantize"]["outputs"]["int8"]["sha256"]) == 64
    rows = {r["name"]: r for r in first.rows}
    assert list(rows) == ["baseline", "prune", "prune.onnx", "prune-int8.onnx"]
    assert rows["prune-int8.onnx"]["runtime"] == "onnxruntime-int8" and rows["prune"]["runtime"] == "pytorch"
    assert rows["prune.onnx"]["runtime"] == "onnxruntime"
    assert rows["prune-int8.onnx"]["size_mb"] < 0.5 * rows["prune.onnx"]["size_mb"]
    again = CompressionPipeline(cfg).run()
    assert again.ran == [] and again.skipped == first.ran


def test_quantize_bad_input(shapes, tmp_path):
    from yolo_compress.dataset import Dataset
    from yolo_compress.deploy.calibration import calibration_images

    pm = PruneModel("yolov8n.yaml", data=shapes)
    with pytest.raises(CompressError, match="supports onnx, openvino, not 'engine'"):
        pm.quantize(format="engine")
    with pytest.raises(CompressError, match="nothing saved to quantize"):
        pm.quantize()
    empty = tmp_path / "empty"
    (empty / "images" / "train").mkdir(parents=True)
    (empty / "data.yaml").write_text(f"path: {empty}\ntrain: images/train\nval: images/train\nnames: [a]\n")
    with pytest.raises(CompressError, match="no images found for split 'train'"):
        calibration_images(Dataset(empty / "data.yaml", "detect", {0: "a"}, 64, empty / "data.yaml",
                                   {"train": (empty / "images" / "train",)}), 8)
    assert resolve_data(shapes).nc == 4
