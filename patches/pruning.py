"""Torch-Pruning's index mappings recomputed only when a width changed, for the time a pruner runs.

``torch_pruning.dependency.graph.DependencyGraph.get_pruning_group`` calls
``torch_pruning.dependency.index_mapping.update_index_mapping`` on the whole graph for every group it builds: each
reshape, concat, split and expand node infers its channels again by walking the graph. A step enumerates every
group before it cuts any, so most of those walks see the widths of the last one. With the attention blocks of
YOLO11 and YOLO26 (17 reshapes in YOLO11n against YOLOv8n's 7) they were half of YOLO11n's prune time at 640 px
(2.8 of 5.6 s in a cProfile of ``prune_model``, 0.11.0). The mappings follow from the graph's structure, fixed once
traced, and from its layers' widths, so :func:`cached_index_mapping` recomputes them only when a parameter's shape
changed since the graph's last update: the same mappings, the same groups, the same pruned model.

Most of the mappings left are never read: the reshapes, splits and expands inside the attention blocks and heads
kept whole (YOLO26n: 46 of its 64 mapping nodes; 1.0 of 4.7 s in a cProfile of its 2x prune at 640 px, 0.13.0).
A group is a walk from a root layer along the dependencies its pruning function triggers, so
:func:`limit_index_mapping` records the mapping nodes such a walk can reach from the pruner's roots (every
dependency followed, whatever its mapping: a superset of what any group reads) and the update keeps to them.

Checked against torch-pruning 1.6.1 (``index_mapping.update_index_mapping`` and the per-type updates it calls, looked
up by ``graph.py`` at call time; ``DependencyGraph.get_pruning_group``'s walk and its depthwise-conv root).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch_pruning import ops
from torch_pruning.dependency import index_mapping
from torch_pruning.pruner import function

# upstream's update, type by type (names looked up at call time, as upstream does)
_UPDATES = {ops.OPTYPE.CONCAT: "update_concat_index_mapping", ops.OPTYPE.SPLIT: "update_split_index_mapping",
            ops.OPTYPE.RESHAPE: "update_reshape_index_mapping", ops.OPTYPE.UNBIND: "update_unbind_index_mapping",
            ops.OPTYPE.EXPAND: "update_expand_index_mapping", ops.OPTYPE.SLICE: "update_slice_index_mapping"}


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
        if getattr(graph, "_yolo_compress_widths", None) == widths:
            return
        reachable = getattr(graph, "_yolo_compress_reachable", None)
        if reachable is None:
            upstream(graph)
        else:
            for node in reachable:
                getattr(index_mapping, _UPDATES[node.type])(graph, node)
        graph._yolo_compress_widths = widths

    index_mapping.update_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_index_mapping = upstream


def limit_index_mapping(graph: object, roots: Iterable[nn.Module]) -> None:
    """Within :func:`cached_index_mapping`, update only the mapping nodes of ``graph`` that a group rooted at one of
    ``roots`` (out-channel pruning, as ``get_pruning_group`` roots a pruner's groups) can reach."""
    stack = []
    for module in roots:
        fn = graph.get_pruner_of_module(module).prune_out_channels
        if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels > 1:
            fn = function.prune_depthwise_conv_out_channels  # as get_pruning_group roots a depthwise conv
        stack.append((graph.module2node[module], fn))
    seen = set(stack)
    while stack:
        node, fn = stack.pop()
        for dep in node.dependencies:
            if dep.is_triggered_by(fn) and (dep.target, dep.handler) not in seen:
                seen.add((dep.target, dep.handler))
                stack.append((dep.target, dep.handler))
    reached = {node for node, _ in seen}
    graph._yolo_compress_reachable = [n for n in graph.module2node.values() if n in reached and n.type in _UPDATES]
