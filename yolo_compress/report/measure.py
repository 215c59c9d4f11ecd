"""CPU latency of several models, measured side by side so a busy machine slows every row alike."""

from __future__ import annotations

import statistics
import time
from copy import deepcopy
from pathlib import Path

import torch
from torch import nn


def measure_latency(models: list[nn.Module], imgsz: int, rounds: int = 30, warmup: int = 3) -> list[float]:
    """Median CPU milliseconds per batch-1 forward of each model (fused, eval, float32), timed interleaved.

    Each round times one forward of every model in turn; the median over rounds is reported.
    """
    fused = [deepcopy(m).float().cpu().eval() for m in models]
    fused = [m.fuse(verbose=False) if hasattr(m, "fuse") else m for m in fused]
    x = torch.rand(1, 3, imgsz, imgsz)
    times: list[list[float]] = [[] for _ in fused]
    with torch.inference_mode():
        for r in range(warmup + rounds):
            for i, m in enumerate(fused):
                t0 = time.perf_counter()
                m(x)
                if r >= warmup:
                    times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def measure_onnx_latency(paths: list[Path], imgsz: int, rounds: int = 30, warmup: int = 3,
                         threads: int | None = None) -> list[float]:
    """Median milliseconds per batch-1 ONNX Runtime run of each model, timed interleaved like
    :func:`measure_latency`; ``threads`` sets ONNX Runtime's intra-op threads (default: torch's).

    Worker threads do not spin-wait after a run: with several sessions (each its own thread pool) timed in turn, a
    finished session's spinning workers would take the cores from the next one (measured: 2 threads slower than 1).
    """
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    for r in range(warmup + rounds):
        for i, (s, feed) in enumerate(zip(sessions, feeds)):
            t0 = time.perf_counter()
            s.run(None, feed)
            if r >= warmup:
                times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def onnx_size(path: Path, imgsz: int) -> dict[str, float]:
    """Parameters and GFLOPs of an ONNX model read from its own graph (nothing else is loaded).

    Parameters: the weights and biases of its convolutions and matrix products (as stored: BatchNorm folded,
    INT8 weights behind their ``DequantizeLinear``). GFLOPs: 2 x multiply-adds of those layers at the shapes ONNX
    shape inference gives for a ``1 x 3 x imgsz x imgsz`` input, as Ultralytics counts for PyTorch models.
    """
    import numpy as np
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
