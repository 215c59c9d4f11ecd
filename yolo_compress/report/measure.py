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
