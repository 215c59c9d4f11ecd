"""CPU latency of several models, measured side by side so a busy machine slows every row alike.

Every runtime (PyTorch, ONNX Runtime, OpenVINO) runs with the same explicit thread count, which the report states;
a machine already busy on the cores the measurement needs is named in a warning, since no interleaving makes such
numbers comparable (a training beside ``compare`` once slowed all-core PyTorch 140x, ONNX Runtime hardly at all).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
LOAD_SLACK = 1.0  # load average above the cores left free that still counts as idle
Runner = Callable[[], object]


def default_threads() -> int:
    """The thread count latency is measured with unless one is given: torch's (all cores once yolo-compress ran)."""
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def own_load() -> float:
    """This process's share of the 1-minute load average, as if it had used the CPU evenly since it started: the
    pipeline measures right after training on every core, which is no sign of another program's load."""
    try:
        import psutil  # an Ultralytics dependency
    except ImportError:
        return 0.0
    try:
        proc = psutil.Process()
        cpu, elapsed = proc.cpu_times(), max(time.time() - proc.create_time(), 1e-3)
    except (psutil.Error, OSError):
        return 0.0
    busy = cpu.user + cpu.system + cpu.children_user + cpu.children_system
    return busy / elapsed * (1 - math.exp(-elapsed / 60))


def check_load(threads: int) -> bool:
    """Log a warning and return True when other programs load the machine beyond the cores ``threads`` leave free
    (1-minute load average, less this process's own share, above ``cpu_count - threads + LOAD_SLACK``)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return False
    cores = os.cpu_count() or 1
    others = load - own_load()
    if others <= cores - threads + LOAD_SLACK:
        return False
    LOGGER.warning("the machine is busy (load average %.1f on %d cores, about %.1f from other programs; measuring "
                   "on %d thread(s)): latencies are unreliable; compare again when it is idle, or pass fewer "
                   "--threads", load, cores, others, threads)
    return True


def time_interleaved(runners: list[Runner], rounds: int = 30, warmup: int = 3,
                     threads: int | None = None) -> list[float]:
    """Median milliseconds of each runner: each round calls every runner once in turn (so a busy machine slows
    every row alike), starting one runner later each round, so that every runner runs in every slot of the round
    equally often (a fixed order biased neighbouring rows by a few percent: caches, frequency, thread wake-up); the
    first ``warmup`` rounds are not timed. PyTorch runs with ``threads`` (default: :func:`default_threads`); give
    the other runtimes' runners the same count."""
    times: list[list[float]] = [[] for _ in runners]
    n = len(runners)
    with torch_threads(threads or default_threads()):
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
    """Batch-1 forward of a copy of ``model``: fused, eval, float32, CPU, under ``inference_mode`` (with the threads
    :func:`time_interleaved` sets)."""
    m = deepcopy(model).float().cpu().eval()
    m = m.fuse(verbose=False) if hasattr(m, "fuse") else m
    x = torch.from_numpy(_input(imgsz))

    def run() -> object:
        with torch.inference_mode():
            return m(x)

    return run


def onnx_runner(path: Path, imgsz: int, threads: int | None = None) -> Runner:
    """Batch-1 ONNX Runtime run on the CPU with ``threads`` intra-op threads (default: :func:`default_threads`).

    Worker threads do not spin-wait after a run: with several sessions (each its own thread pool) timed in turn, a
    finished session's spinning workers would take the cores from the next one (measured: 2 threads slower than 1).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: _input(imgsz)}
    return lambda: session.run(None, feed)


def openvino_runner(folder: Path, imgsz: int, threads: int | None = None, precision: str | None = None) -> Runner:
    """Batch-1 inference of an OpenVINO model folder on the CPU, compiled the way OpenVINO serves one image at a
    time: its ``LATENCY`` hint, ``threads`` inference threads (default: :func:`default_threads`); ``precision``
    (``"f32"``) overrides
    the plugin's default inference precision for float layers (bf16 on CPUs with AVX-512 BF16 or AMX)."""
    import openvino as ov

    from yolo_compress.deploy.openvino import model_xml

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or default_threads()}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    request = ov.Core().compile_model(model_xml(folder), "CPU", config).create_infer_request()
    x = _input(imgsz)
    return lambda: request.infer({0: x})


def measure_latency(models: list[nn.Module], imgsz: int, rounds: int = 30, warmup: int = 3,
                    threads: int | None = None) -> list[float]:
    """Median CPU milliseconds per batch-1 forward of each PyTorch model, timed interleaved on ``threads``."""
    return time_interleaved([pytorch_runner(m, imgsz) for m in models], rounds, warmup, threads)


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
