"""CPU latency of several models, measured side by side so a busy machine slows every row alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn

Runner = Callable[[], object]


def time_interleaved(runners: list[Runner], rounds: int = 30, warmup: int = 3) -> list[float]:
    """Median milliseconds of each runner: each round calls every runner once in turn (so a busy machine slows
    every row alike), starting one runner later each round, so that every runner runs in every slot of the round
    equally often (a fixed order biased neighbouring rows by a few percent: caches, frequency, thread wake-up); the
    first ``warmup`` rounds are not timed."""
    times: list[list[float]] = [[] for _ in runners]
    n = len(runners)
    for r in range(warmup + rounds):
        for slot in range(n):
            i = (r + slot) % n
            t0 = time.perf_counter()
            runners[i]()
            if r >= warmup:
                times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def _input(imgsz: int) -> np.ndarray:
    return np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)


def pytorch_runner(model: nn.Module, imgsz: int) -> Runner:
    """Batch-1 forward of a copy of ``model``: fused, eval, float32, CPU, under ``inference_mode`` (torch's threads)."""
    m = deepcopy(model).float().cpu().eval()
    m = m.fuse(verbose=False) if hasattr(m, "fuse") else m
    x = torch.from_numpy(_input(imgsz))

    def run() -> object:
        with torch.inference_mode():
            return m(x)

    return run


def onnx_runner(path: Path, imgsz: int, threads: int | None = None) -> Runner:
    """Batch-1 ONNX Runtime run on the CPU with ``threads`` intra-op threads (default: torch's).

    Worker threads do not spin-wait after a run: with several sessions (each its own thread pool) timed in turn, a
    finished session's spinning workers would take the cores from the next one (measured: 2 threads slower than 1).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: _input(imgsz)}
    return lambda: session.run(None, feed)


def openvino_runner(folder: Path, imgsz: int, threads: int | None = None, precision: str | None = None) -> Runner:
    """Batch-1 inference of an OpenVINO model folder on the CPU, compiled the way OpenVINO serves one image at a
    time: its ``LATENCY`` hint, ``threads`` inference threads (default: torch's); ``precision`` (``"f32"``) overrides
    the plugin's default inference precision for float layers (bf16 on CPUs with AVX-512 BF16 or AMX)."""
    import openvino as ov

    from yolo_compress.deploy.openvino import model_xml

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    request = ov.Core().compile_model(model_xml(folder), "CPU", config).create_infer_request()
    x = _input(imgsz)
    return lambda: request.infer({0: x})


def measure_latency(models: list[nn.Module], imgsz: int, rounds: int = 30, warmup: int = 3) -> list[float]:
    """Median CPU milliseconds per batch-1 forward of each PyTorch model, timed interleaved."""
    return time_interleaved([pytorch_runner(m, imgsz) for m in models], rounds, warmup)


def openvino_size(folder: Path, imgsz: int) -> dict[str, float]:
    """Parameters and GFLOPs of an OpenVINO model read from its own graph, counted as :func:`onnx_size` counts
    (convolution and matrix-product weights and the bias added after them; INT8 weights at their shape)."""
    import openvino as ov

    from yolo_compress.deploy.openvino import model_xml

    model = ov.Core().read_model(model_xml(folder))
    model.reshape([1, 3, imgsz, imgsz])
    params, macs = 0, 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        w = list(op.input(1).get_partial_shape().to_shape())
        out = list(op.output(0).get_partial_shape().to_shape())
        params += int(np.prod(w))
        for target in op.output(0).get_target_inputs():  # the bias: an Add of a constant right after the layer
            add, other = target.get_node(), 1 - target.get_index()
            if add.get_type_name() == "Add" and add.input(other).get_source_output().get_node().get_type_name() == (
                    "Constant"):
                params += int(np.prod(list(add.input(other).get_partial_shape().to_shape())))
        # multiply-adds per output element: in-channels (per group) x kernel for a convolution, K for a product
        per_output = int(np.prod(w[-3:])) if "Convolution" in op.get_type_name() else (
            w[-1] if op.get_attributes().get("transpose_b") else w[-2])
        macs += int(np.prod(out)) * per_output
    return {"params": params, "gflops": 2 * macs / 1e9}


def onnx_size(path: Path, imgsz: int) -> dict[str, float]:
    """Parameters and GFLOPs of an ONNX model read from its own graph (nothing else is loaded).

    Parameters: the weights and biases of its convolutions and matrix products (as stored: BatchNorm folded,
    INT8 weights behind their ``DequantizeLinear``). GFLOPs: 2 x multiply-adds of those layers at the shapes ONNX
    shape inference gives for a ``1 x 3 x imgsz x imgsz`` input, as Ultralytics counts for PyTorch models.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    graph = model.graph
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    dims = {t.name: list(t.dims) for t in graph.initializer}
    dequant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}

    def source(name: str) -> str:
        return dequant.get(name, name)

    inp = graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    for d, value in zip(inp.type.tensor_type.shape.dim, [shape[0], shape[1], imgsz, imgsz]):
        d.dim_value = value
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.output, *inferred.input]}
    params, macs = 0, 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        weights = [source(i) for i in node.input[1:] if source(i) in sizes]
        params += sum(sizes[w] for w in weights)
        if not weights:
            continue
        out = shapes.get(node.output[0])
        w = dims[weights[0]]
        if node.op_type == "Conv" and out and len(w) == 4:
            macs += int(np.prod(out)) * int(np.prod(w[1:]))  # out elements x (in/groups x kh x kw)
        elif out and len(w) == 2:
            macs += int(np.prod(out)) * w[0 if node.op_type == "MatMul" else 1]
    return {"params": params, "gflops": 2 * macs / 1e9}
