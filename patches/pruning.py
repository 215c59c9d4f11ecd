"""Torch-Pruning's index mappings recomputed only when a width changed, for the time a pruner runs.

``torch_pruning.dependency.graph.DependencyGraph.get_pruning_group`` calls
``torch_pruning.dependency.index_mapping.update_index_mapping`` on the whole graph for every group it builds: each
reshape, concat, split and expand node infers its channels again by walking the graph. A step enumerates every
group before it cuts any, so most of those walks see the widths of the last one. With the attention blocks of
YOLO11 and YOLO26 (17 reshapes in YOLO11n against YOLOv8n's 7) they were half of YOLO11n's prune time at 640 px
(2.8 of 5.6 s in a cProfile of ``prune_model``, 0.11.0). The mappings follow from the graph's structure, fixed once
traced, and from its layers' widths, so :func:`cached_index_mapping` recomputes them only when a parameter's shape
changed since the graph's last update: the same mappings, the same groups, the same pruned model.

Checked against torch-pruning 1.6.1 (``index_mapping.update_index_mapping``, looked up by ``graph.py`` at call
time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch_pruning.dependency import index_mapping


def _widths(graph: object) -> tuple[torch.Size, ...]:
    """The shapes of every parameter of the graph's layers: what the index mappings are computed from. (The layers
    are listed once per graph: pruning replaces their parameters, never the layers.)"""
    if not hasattr(graph, "_yolo_compress_layers"):
        graph._yolo_compress_layers = [m for m in graph.module2node if isinstance(m, nn.Module) and m._parameters]
    return tuple(p.shape for m in graph._yolo_compress_layers for p in m._parameters.values() if p is not None)


@contextmanager
def cached_index_mapping() -> Iterator[None]:
    """Within the block, ``update_index_mapping`` skips a graph whose widths are those of its last update."""
    upstream = index_mapping.update_index_mapping

    def update(graph: object) -> None:
        widths = _widths(graph)
        if getattr(graph, "_yolo_compress_widths", None) != widths:
            upstream(graph)
            graph._yolo_compress_widths = widths

    index_mapping.update_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_index_mapping = upstream
