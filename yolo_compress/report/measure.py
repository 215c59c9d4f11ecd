"""CPU latency of several models, measured side by side so a busy machine slows every row alike."""

from __future__ import annotations

import statistics
import time
from copy import deepcopy

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
