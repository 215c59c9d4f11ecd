"""Exact swap of Ultralytics ``C2f`` blocks for a chunk-free twin that DepGraph can prune.

``C2f.forward`` splits the output of ``cv1`` with ``chunk(2, 1)`` and later concatenates both halves with the
bottleneck outputs. Torch-Pruning 1.6 maps that ``chunk -> cat`` pattern to the wrong channel indices
(``IndexError: index 384 is out of bounds``) whatever the pruner. :class:`C2fChunkFree` computes the two halves
with two 1x1 convolutions ``cv0``/``cv1`` whose weights and BatchNorm statistics are the halves of the original
``cv1``: the same function, but every tensor has its own producer, so the graph is plain convs and one ``cat``.

The class lives in this importable module on purpose: pruned checkpoints pickle it by reference
(``yolo_compress.prune.c2f.C2fChunkFree``), and ``YOLO(path)`` in a fresh process imports it from here.
Checkpoints written by yolo-compress 0.1 name ``yolo_compress.pruning.c2f``, which still resolves here.

Checked against Ultralytics 8.4.190.
"""

from __future__ import annotations

import logging
from copy import deepcopy

import torch
from torch import nn
from ultralytics.nn.modules.block import C2f

LOGGER = logging.getLogger(__name__)

# attributes parse_model() (ultralytics/nn/tasks.py) attaches to every top-level layer; BaseModel._predict_once
# reads f/i, model_info and profiling read np/type
_LAYER_ATTRS = ("f", "i", "type", "np")


class C2fChunkFree(nn.Module):
    """CSP bottleneck with two convolutions, as ``C2f`` but with ``cv1`` split into ``cv0``/``cv1``.

    Not a ``C2f`` subclass: the ONNX exporter replaces ``forward`` of every ``C2f`` instance with
    ``forward_split``, which would look for the original ``cv1`` of double width.

    Attributes:
        c (int): hidden channels of each half (shrinks after pruning only through the convs; kept for reference).
        cv0 (nn.Module): 1x1 ``Conv`` producing the first half (the untouched skip branch).
        cv1 (nn.Module): 1x1 ``Conv`` producing the second half (fed to the bottlenecks).
        cv2 (nn.Module): output ``Conv`` over the concatenation of both halves and every bottleneck output.
        m (nn.ModuleList): the bottlenecks, taken over from the original block.
    """

    def __init__(self, cv0: nn.Module, cv1: nn.Module, cv2: nn.Module, m: nn.ModuleList, c: int):
        """Assemble from ready modules; use :func:`from_c2f` to convert a trained ``C2f``."""
        super().__init__()
        self.c = c
        self.cv0 = cv0
        self.cv1 = cv1
        self.cv2 = cv2
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same computation as ``C2f.forward``: both halves, each bottleneck on the last output, concat, cv2."""
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def _out_channel_slice(conv_block: nn.Module, start: int, stop: int) -> nn.Module:
    """Deep-copy an Ultralytics ``Conv`` and keep output channels ``start:stop`` of its conv and BatchNorm.

    Copying the block keeps the activation, BatchNorm ``eps``/``momentum`` (1e-3/0.03 in YOLOv8, not PyTorch's
    defaults) and a fused ``forward`` as they were, so the slice computes exactly the matching output channels.
    """
    block = deepcopy(conv_block)
    conv = block.conv
    conv.weight = nn.Parameter(conv.weight.data[start:stop].clone(), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:  # fused Conv (BatchNorm folded in)
        conv.bias = nn.Parameter(conv.bias.data[start:stop].clone(), requires_grad=conv.bias.requires_grad)
    conv.out_channels = stop - start
    bn = getattr(block, "bn", None)
    if isinstance(bn, nn.BatchNorm2d):
        if bn.affine:
            bn.weight = nn.Parameter(bn.weight.data[start:stop].clone(), requires_grad=bn.weight.requires_grad)
            bn.bias = nn.Parameter(bn.bias.data[start:stop].clone(), requires_grad=bn.bias.requires_grad)
        if bn.track_running_stats:
            bn.running_mean = bn.running_mean[start:stop].clone()
            bn.running_var = bn.running_var[start:stop].clone()
        bn.num_features = stop - start
    return block


def from_c2f(block: C2f) -> C2fChunkFree:
    """Convert one ``C2f`` (or subclass with the same ``forward``) into its exact chunk-free twin.

    The bottlenecks and ``cv2`` are moved over, not copied; ``cv1`` is cut in its two output halves. Layer
    bookkeeping attributes (``f``, ``i``, ``type``, ``np``) are carried over so the model's forward loop and
    ``model_info`` keep working.
    """
    out = block.cv1.conv.out_channels
    if out % 2:
        raise ValueError(f"C2f.cv1 has an odd number of output channels ({out}); it cannot be split in halves")
    half = out // 2
    twin = C2fChunkFree(
        cv0=_out_channel_slice(block.cv1, 0, half),
        cv1=_out_channel_slice(block.cv1, half, out),
        cv2=block.cv2,
        m=block.m,
        c=half,
    )
    for name in _LAYER_ATTRS:
        if hasattr(block, name):
            setattr(twin, name, getattr(block, name))
    if hasattr(block, "np"):
        twin.np = sum(p.numel() for p in twin.parameters())
    twin.train(block.training)
    return twin


def is_swappable(module: nn.Module) -> bool:
    """True for ``C2f`` and subclasses that keep ``C2f.forward`` (C3k2, C2fCIB, C2fPSA): their ``cv1`` is chunked."""
    return isinstance(module, C2f) and type(module).forward is C2f.forward


def swap_c2f_(model: nn.Module) -> int:
    """Replace, in place, every chunking ``C2f`` inside ``model`` by :class:`C2fChunkFree`; return how many.

    Run it before building a dependency graph. The swap is exact: in ``eval()`` mode outputs match to the bit
    (BatchNorm running statistics are sliced, not re-estimated). Idempotent: a swapped model has no C2f left.
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_swappable(child):
                setattr(parent, name, from_c2f(child))
                count += 1
    if count:
        LOGGER.debug("swapped %d C2f blocks for C2fChunkFree", count)
    return count
