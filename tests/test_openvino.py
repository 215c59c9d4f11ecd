"""OpenVINO as a runtime: fp32 and INT8 exports find the baseline's boxes, named layers stay in float, the
accuracy-controlled mode reverts layers when the drop demands it, its yardstick agrees with Ultralytics' validator,
``compare`` times and scores OpenVINO folders, and the pipeline's ``--export openvino --quantize int8`` resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from yolo_compress import PruneModel
from yolo_compress.data import SHIPPED_BASELINE

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytestmark = pytest.mark.skipif(not SHIPPED_BASELINE.is_file(), reason="needs the shipped baseline (source checkout)")


@pytest.fixture(scope="module")
def exported(shapes160, tmp_path_factory) -> dict[str, Path]:
    """The shipped baseline, its fp32 OpenVINO export and its INT8 (16 calibration images)."""
    folder = tmp_path_factory.mktemp("export")
    weights = folder / "base.pt"
    weights.write_bytes(SHIPPED_BASELINE.read_bytes())
    pm = PruneModel(weights, data=shapes160)
    fp32 = pm.export(format="openvino")
    int8 = pm.quantize(format="openvino", calibration=16)
    return {"pt": weights, "fp32": fp32, "int8": int8}


def _ops(folder: Path) -> list:
    import openvino as ov

    from yolo_compress.deploy.openvino import model_xml

    return list(ov.Core().read_model(model_xml(folder)).get_ordered_ops())


def _top_boxes(folder: Path, x: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    import openvino as ov

    from yolo_compress.deploy.openvino import model_xml

    out = ov.Core().compile_model(model_xml(folder), "CPU")(x)[0][0]  # (4 + nc, anchors): xywh, class scores
    top = np.argsort(-out[4:].max(0))[:k]
    xywh = out[:4, top].T
    return np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1), out[4:, top].argmax(0)


def _fake_quantized_inputs(folder: Path, layer: str) -> int:
    """How many inputs of ``layer``'s convolutions come from a FakeQuantize (an INT8 activation)."""
    from yolo_compress.deploy.openvino import in_layers

    return sum(op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"
               for op in _ops(folder) if op.get_type_name() == "Convolution" and in_layers(op.get_friendly_name(),
                                                                                              (layer,)))


def test_openvino_fp32_and_int8_find_the_same_boxes(exported, shapes160):
    from yolo_compress.deploy.calibration import preprocess
    from yolo_compress.relations import box_iou

    fp32, int8 = exported["fp32"], exported["int8"]
    assert fp32.name == "base_openvino_model" and int8.name == "base_int8_openvino_model"
    assert (int8 / "metadata.yaml").is_file()
    assert any(op.get_type_name() == "FakeQuantize" for op in _ops(int8))
    assert not any(op.get_type_name() == "FakeQuantize" for op in _ops(fp32))
    for image in sorted((shapes160.parent / "images" / "val").glob("*.png"))[:3]:
        x = preprocess(image, 160, "detect")
        (b32, c32), (b8, c8) = _top_boxes(fp32, x), _top_boxes(int8, x)
        assert (c32 == c8).all()
        assert np.diag(box_iou(b32, b8)).min() > 0.8


def test_float_layers_stay_in_float_on_both_runtimes(exported, shapes160, tmp_path):
    import onnx

    from yolo_compress.dataset import resolve_data
    from yolo_compress.deploy.export import export
    from yolo_compress.deploy.openvino import quantize_openvino
    from yolo_compress.deploy.quantize import quantize_onnx

    data = resolve_data(shapes160)
    for layer in ("model.0", "model.1", "model.2.cv1", "model.3"):  # the default quantizes their inputs
        assert _fake_quantized_inputs(exported["int8"], layer) == 1, layer
    fp32 = tmp_path / "copy_openvino_model"
    shutil.copytree(exported["fp32"], fp32)
    kept = quantize_openvino(fp32, data, 160, calibration=8, float_layers=("model.0", "model.2.cv1"))
    assert kept == tmp_path / "copy_int8_openvino_model"
    assert _fake_quantized_inputs(kept, "model.0") == 0 and _fake_quantized_inputs(kept, "model.2.cv1") == 0
    assert _fake_quantized_inputs(kept, "model.1") == 1 and _fake_quantized_inputs(kept, "model.3") == 1

    pt = tmp_path / "copy.pt"
    shutil.copyfile(exported["pt"], pt)
    onnx_path = export(pt, "onnx", 160)
    graph = onnx.load(str(quantize_onnx(onnx_path, data, 160, calibration=8, float_layers=("model.0",)))).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert not set(convs["/model.0/conv/Conv"].input) & dequantized
    assert set(convs["/model.1/conv/Conv"].input) & dequantized


def test_the_holdout_yardstick_agrees_with_ultralytics_validator(exported, shapes160, tmp_path):
    """mAP50-95 of the accuracy-controlled mode's own evaluation = ``YOLO(folder).val()`` on the same images."""
    import openvino as ov
    from ultralytics import YOLO

    from yolo_compress.dataset import resolve_data
    from yolo_compress.deploy.holdout import holdout_items, map50_95
    from yolo_compress.deploy.openvino import model_xml

    data = resolve_data(shapes160)
    images, items = holdout_items(data, 160, count=40)
    assert len(items) == 20  # at most half the train split: the rest calibrates
    mine = map50_95(ov.Core().compile_model(model_xml(exported["fp32"]), "CPU"), items)
    yaml = tmp_path / "train_as_val.yaml"
    (tmp_path / "held.txt").write_text("\n".join(str(p) for p in images) + "\n")
    yaml.write_text(f"path: {tmp_path}\ntrain: held.txt\nval: held.txt\nnames: {data.names}\n")
    theirs = YOLO(str(exported["fp32"]), task="detect").val(data=str(yaml), imgsz=160, batch=1, plots=False,
                                                            verbose=False, project=str(tmp_path / "v")).box.map
    assert mine > 0.5
    assert mine == pytest.approx(theirs, abs=0.005)


def test_accuracy_mode_reverts_layers_to_float_until_the_drop_is_met(exported, shapes160, tmp_path):
    """With the head's decoding quantized too (``float_head=False``) static INT8 loses more than 1 point on the
    held-out images; the accuracy-controlled mode returns layers to float until it loses at most ``max_drop`` (0.5
    point: the quantized-head model calibrated on the other half loses ~1 point, so layers must return)."""
    import openvino as ov

    from yolo_compress.dataset import resolve_data
    from yolo_compress.deploy.holdout import holdout_items, map50_95
    from yolo_compress.deploy.openvino import model_xml, quantize_openvino

    data = resolve_data(shapes160)
    made = {}
    for mode in ("static", "accuracy"):
        fp32 = tmp_path / f"{mode}_openvino_model"
        shutil.copytree(exported["fp32"], fp32)
        made[mode] = quantize_openvino(fp32, data, 160, mode=mode, calibration=16, float_head=False, max_drop=0.005,
                                       holdout=24)
    _, items = holdout_items(data, 160, count=24)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}  # as NNCF evaluates (the CPU's default may be bf16)
    score = {k: map50_95(ov.Core().compile_model(model_xml(v), "CPU", f32), items)
             for k, v in {"fp32": exported["fp32"], **made}.items()}
    assert score["static"] < score["fp32"] - 0.01
    assert score["accuracy"] >= score["fp32"] - 0.005 - 1e-6
    quantizers = {k: sum(op.get_type_name() == "FakeQuantize" for op in _ops(v)) for k, v in made.items()}
    assert 0 < quantizers["accuracy"] < quantizers["static"]


def test_accuracy_mode_caps_the_rounds_of_returning_ops_to_float(exported, shapes160, tmp_path, monkeypatch):
    """``max_reverts`` reaches NNCF's accuracy restorer (its own default: a round per quantized op, no cap); the
    setting is checked before any work."""
    import nncf

    from yolo_compress import CompressError

    weights = tmp_path / "base.pt"
    shutil.copy2(exported["pt"], weights)  # mtimes kept: the fp32 copy stays newer, so it is not exported again
    shutil.copytree(exported["fp32"], tmp_path / exported["fp32"].name)
    seen = {}

    def restorer(model, calibration, validation, **kwargs):
        seen.update(kwargs)
        return model

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", restorer)
    pm = PruneModel(weights, data=shapes160)
    out = pm.quantize(format="openvino", quantize_mode="accuracy", calibration=4, max_reverts=3)
    assert seen["advanced_accuracy_restorer_parameters"].max_num_iterations == 3
    assert seen["max_drop"] == 0.003 and out.parent == tmp_path
    with pytest.raises(CompressError, match="max_reverts"):
        pm.quantize(format="openvino", quantize_mode="accuracy", max_reverts=0)


def test_compare_gives_openvino_rows(exported, shapes160, tmp_path):
    pm = PruneModel(exported["pt"], data=shapes160)
    rows = pm.compare([exported["pt"], exported["fp32"], exported["int8"]], out_dir=tmp_path / "r", rounds=2)
    assert [r.runtime for r in rows] == ["pytorch", "openvino", "openvino-int8"]
    assert rows[1].params == rows[2].params and rows[1].gflops == pytest.approx(rows[2].gflops)
    assert rows[1].gflops == pytest.approx(rows[0].gflops, rel=0.05)
    assert rows[2].size_mb < 0.5 * rows[1].size_mb
    assert abs(rows[1].accuracy["mAP50_95"] - rows[0].accuracy["mAP50_95"]) < 0.01
    assert abs(rows[2].accuracy["mAP50_95"] - rows[1].accuracy["mAP50_95"]) < 0.05
    assert "openvino-int8" in (tmp_path / "r" / "compare.md").read_text()


def test_pipeline_exports_openvino_int8_and_resumes(shapes160, tmp_path):
    from yolo_compress.config import load_config
    from yolo_compress.pipeline import CompressionPipeline

    weights = tmp_path / "base.pt"
    weights.write_bytes(SHIPPED_BASELINE.read_bytes())
    cfg = load_config(weights=str(weights), data=str(shapes160), out=str(tmp_path / "o"), sparse=False, finetune=False,
                      distill=False, export="openvino", quantize="int8", calibration=8, latency_rounds=2)
    first = CompressionPipeline(cfg).run()
    assert first.ran == ["baseline", "prune", "export", "quantize", "compare"]
    rows = {r["name"]: r["runtime"] for r in first.rows}
    assert rows == {"baseline": "pytorch", "prune": "pytorch", "prune_openvino_model": "openvino",
                    "prune_int8_openvino_model": "openvino-int8"}
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())["stages"]
    assert len(manifest["quantize"]["outputs"]["int8"]["sha256"]) == 64
    assert CompressionPipeline(cfg).run().ran == []
    (tmp_path / "o" / "prune_int8_openvino_model" / "prune.bin").write_bytes(b"damaged")
    assert CompressionPipeline(cfg).run().ran == ["quantize", "compare"]  # a changed folder file reruns its stage
