"""Quantization-aware distillation (``quantize_mode=qat``): which ops stay in float, fake-quantized models survive
pickling (Ultralytics' checkpoints), the trained model converts to an OpenVINO INT8 folder that agrees with its
PyTorch simulation and finds the baseline's boxes, and bad requests fail before any work."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from yolo_compress import PruneModel
from yolo_compress.data import SHIPPED_BASELINE
from yolo_compress.errors import CompressError

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytestmark = pytest.mark.skipif(not SHIPPED_BASELINE.is_file(), reason="needs the shipped baseline (source checkout)")


@pytest.fixture(scope="module")
def quantized(shapes160) -> torch.nn.Module:
    from yolo_compress.checkpoint import load_model
    from yolo_compress.dataset import resolve_data
    from yolo_compress.deploy.qat import fake_quantize

    return fake_quantize(load_model(SHIPPED_BASELINE), resolve_data(shapes160), 160, calibration=8)


def _graph():
    from nncf.torch.function_hook import wrap_model
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    from yolo_compress.checkpoint import load_model

    model = load_model(SHIPPED_BASELINE).eval().fuse()
    model.model[-1].export = True
    return build_nncf_graph(wrap_model(model), torch.zeros(1, 3, 64, 64))


def test_float_ops_are_the_head_decoding_and_the_named_layers():
    from yolo_compress.deploy.qat import float_ops

    graph = _graph()
    kinds = {n.node_name: n.node_type for n in graph.get_all_nodes()}
    decode = float_ops(graph, "model.22")
    types = {kinds[n] for n in decode}
    # DFL softmax and its conv, the box arithmetic, the class sigmoid; none of the 6 branch outputs' convolutions
    assert {"softmax", "sigmoid", "sub", "div", "conv2d"} <= types
    assert sum(kinds[n] == "conv2d" for n in decode) == 1  # the DFL's fixed conv only
    assert len(decode) < 60 and "nncf_model_output" not in types
    layer0 = set(float_ops(graph, None, ("model.0",)))
    assert layer0 == {"conv/conv2d/0"}  # model.0's one convolution, nothing of model.0x or later layers
    assert set(float_ops(graph, "model.22", ("model.0",))) == set(decode) | layer0


def test_fake_quantized_model_pickles_and_reloads_initialized(quantized):
    from nncf.torch.function_hook.wrapper import get_hook_storage

    x = torch.rand(1, 3, 160, 160)
    quantized.eval()
    with torch.no_grad():
        before = quantized(x)[0]
    buffer = io.BytesIO()
    torch.save({"model": quantized}, buffer)  # how Ultralytics saves last.pt / best.pt
    buffer.seek(0)
    reloaded = torch.load(buffer, weights_only=False)["model"].eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x)[0], before)
    quantizers = [m for _, m in get_hook_storage(reloaded).named_hooks()]
    assert len(quantizers) > 50
    q = quantizers[0]
    q.initialized = False
    q.load_state_dict(q.state_dict())  # the re-registered hook: a loaded state marks it initialized
    assert q.initialized
    # training mode: the loss path (forward(dict) -> loss -> forward(images)) enters NNCF's hook mode once
    quantized.train()
    preds = quantized(x)
    assert preds["boxes"].requires_grad and preds["scores"].shape[1] == 4


def test_qat_makes_an_openvino_int8_model_that_matches_its_simulation(shapes160, tmp_path):
    import openvino as ov

    from yolo_compress.checkpoint import load_model
    from yolo_compress.deploy.calibration import preprocess
    from yolo_compress.deploy.openvino import model_xml
    from yolo_compress.relations import box_iou

    weights = tmp_path / "base.pt"
    weights.write_bytes(SHIPPED_BASELINE.read_bytes())
    pm = PruneModel(weights, data=shapes160)
    int8 = pm.quantize(format="openvino", quantize_mode="qat", qat_epochs=1, calibration=8, batch=8, workers=0)
    assert int8 == tmp_path / "base_int8_openvino_model" and (int8 / "metadata.yaml").is_file()
    assert model_xml(int8).name == "base.xml"
    ops = [op.get_type_name() for op in ov.Core().read_model(model_xml(int8)).get_ordered_ops()]
    assert ops.count("FakeQuantize") > 50
    assert (tmp_path / "base-qat.pt").is_file() and (tmp_path / "runs" / "base-qat" / "results.csv").is_file()

    simulated = load_model(tmp_path / "base-qat.pt").eval()
    simulated.model[-1].export = True
    compiled = ov.Core().compile_model(model_xml(int8), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    fp32 = ov.Core().compile_model(model_xml(pm.export(format="openvino")), "CPU")
    for image in sorted((shapes160.parent / "images" / "val").glob("*.png"))[:3]:
        x = preprocess(image, 160, "detect")
        with torch.no_grad():
            sim = simulated(torch.from_numpy(x)).numpy()[0]
        out, ref = compiled(x)[0][0], fp32(x)[0][0]
        top = np.argsort(-ref[4:].max(0))[:3]
        assert (out[4:, top].argmax(0) == ref[4:, top].argmax(0)).all()
        assert np.abs(out[4:, top] - sim[4:, top]).max() < 0.1  # OpenVINO runs what PyTorch simulated
        assert np.diag(box_iou(_corners(ref[:4, top]), _corners(out[:4, top]))).min() > 0.8


def test_qat_makes_a_qdq_onnx_model_for_onnx_runtime(shapes160, tmp_path):
    import onnx
    import onnxruntime as ort

    from yolo_compress.checkpoint import load_model
    from yolo_compress.deploy.calibration import preprocess

    weights = tmp_path / "base.pt"
    weights.write_bytes(SHIPPED_BASELINE.read_bytes())
    pm = PruneModel(weights, data=shapes160)
    int8 = pm.quantize(format="onnx", quantize_mode="qat", qat_epochs=1, calibration=8, batch=8, workers=0)
    assert int8 == tmp_path / "base-int8.onnx"
    model = onnx.load(str(int8))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 50
    assert {p.key for p in model.metadata_props} >= {"names", "stride", "imgsz"}  # YOLO(int8) reads them
    simulated = load_model(tmp_path / "base-qat.pt").eval()
    simulated.model[-1].export = True
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    for image in sorted((shapes160.parent / "images" / "val").glob("*.png"))[:3]:
        x = preprocess(image, 160, "detect")
        with torch.no_grad():
            sim = simulated(torch.from_numpy(x)).numpy()[0]
        out = session.run(None, {"images": x})[0][0]
        top = np.argsort(-sim[4:].max(0))[:3]
        assert (out[4:, top].argmax(0) == sim[4:, top].argmax(0)).all()
        assert np.abs(out[4:, top] - sim[4:, top]).max() < 0.1  # ONNX Runtime runs what PyTorch simulated


def _corners(xywh: np.ndarray) -> np.ndarray:
    xywh = xywh.T
    return np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "onnx", "quantize_mode": "accuracy"}, "is not for onnx, which takes static, dynamic, qat"),
    ({"format": "openvino", "quantize_mode": "qat", "float_head": False}, "drop float_head=false"),
    ({"format": "openvino", "quantize_mode": "static", "batch": 8}, "QuantizeSettings key"),
    ({"format": "openvino", "quantize_mode": "qat", "lr_zero": 1}, "not an Ultralytics training setting"),
])
def test_bad_qat_requests_fail_before_any_work(shapes160, tmp_path, kwargs, message):
    weights = tmp_path / "base.pt"
    weights.write_bytes(SHIPPED_BASELINE.read_bytes())
    with pytest.raises(CompressError, match=message):
        PruneModel(weights, data=shapes160).quantize(**kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.pt"]


def test_qat_is_for_detectors(tmp_path):
    from yolo_compress.deploy.quantize import check_quantizable

    with pytest.raises(CompressError, match="qat is for detect models; use static for a classify model"):
        check_quantizable("openvino", "qat", "classify")
