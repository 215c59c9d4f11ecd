"""DepGraph channel pruning of Ultralytics YOLOv8 detectors with Torch-Pruning.

Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023, arXiv:2301.12900. The dependency graph
groups every layer whose channels are coupled (a conv, its BatchNorm, the convs reading it, residual adds and
concats), so a channel is removed from all of them at once and the network stays consistent.

YOLOv8 specifics handled here: ``C2f`` blocks are swapped for :class:`~yolo_compress.pruning.c2f.C2fChunkFree`
first (Torch-Pruning 1.6 mis-indexes ``chunk -> cat``), the whole ``Detect`` head is ignored (its outputs are
fixed by ``reg_max`` and ``nc``; its input convs still shrink with the neck), and parameters are made trainable
before tracing (loaded checkpoints come with ``requires_grad=False``, which would leave the graph empty).
"""

from __future__ import annotations

import logging
import math
import time
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Union

import torch
import torch_pruning as tp
from torch import nn
from ultralytics.nn.modules.block import DFL
from ultralytics.nn.modules.head import Detect

from yolo_compress.errors import CompressError
from yolo_compress.pruning.c2f import C2fChunkFree, swap_c2f_

LOGGER = logging.getLogger(__name__)

IMPORTANCES = ("bn_scale", "l2", "group_norm")
# per-layer cap on the removed share: above it tiny layers (16 channels in YOLOv8n) would round to nothing
MAX_LAYER_RATIO = 0.9
# ratio increment per step when searching a speed_up; with round_to=8 YOLOv8n widths move in jumps of 8 channels,
# so finer steps mostly change nothing
SPEED_UP_STEP = 0.025

Importance = Union[str, Callable[[Any], torch.Tensor]]


@dataclass(frozen=True)
class PruneResult:
    """What pruning did, in numbers a report can print.

    Attributes:
        params_before: parameters of the input model.
        params_after: parameters of the pruned model.
        gflops_before: GFLOPs (2 x MACs) at ``imgsz`` before pruning.
        gflops_after: GFLOPs at ``imgsz`` after pruning.
        imgsz: input height and width the GFLOPs refer to.
        seconds: wall time of swap + graph + pruning.
        steps: iterative pruning steps actually run.
        ratio: the pruning ratio asked of Torch-Pruning at the last step (per group for local pruning).
        importance: name of the importance criterion.
        channels_removed: share of conv output channels outside the head actually removed. With ``round_to`` it
            exceeds ``ratio`` on narrow layers, because Torch-Pruning rounds the kept channels down (YOLOv8n at
            ``factor=0.3``: 16 -> 8 channels).
    """

    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float
    imgsz: tuple[int, int]
    seconds: float
    steps: int
    ratio: float
    importance: str
    channels_removed: float

    @property
    def speed_up(self) -> float:
        """GFLOPs reduction factor, before / after (> 1 when pruning removed work)."""
        return self.gflops_before / self.gflops_after if self.gflops_after else float("inf")

    @property
    def params_ratio(self) -> float:
        """Share of parameters kept, after / before."""
        return self.params_after / self.params_before if self.params_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for ``save_checkpoint(..., pruning=result.to_dict())`` and JSON reports)."""
        return {**asdict(self), "imgsz": list(self.imgsz), "speed_up": self.speed_up}


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, example_inputs: torch.Tensor) -> float:
    """GFLOPs as Ultralytics reports them (2 x multiply-accumulates) for one forward of ``example_inputs``.

    Uses Torch-Pruning's counter on a copy, so the model's mode and hooks are untouched.
    """
    macs, _ = tp.utils.count_ops_and_params(model, example_inputs)
    return 2 * float(macs) / 1e9


def _detection_model(model: nn.Module | str | Path) -> nn.Module:
    """Return a float32 copy of a detection model, loading it first when given a checkpoint path."""
    from ultralytics.nn.tasks import DetectionModel, guess_model_task

    from yolo_compress.checkpoint import load_detection_model

    loaded = isinstance(model, (str, Path))
    if loaded:
        model = load_detection_model(model)
    elif not isinstance(model, DetectionModel):
        raise CompressError(f"expected an Ultralytics DetectionModel, got {type(model).__name__}; "
                            "pass YOLO(...).model or the path of a detection checkpoint")
    task = guess_model_task(model)  # Segmentation/Pose/OBB models subclass DetectionModel and carry no .task
    if task != "detect":
        raise CompressError(f"this is a {task} model ({type(model).__name__}); yolo-compress prunes detection "
                            "models only")
    return model if loaded else deepcopy(model).float()


def _example_inputs(
    model: nn.Module, example_inputs: torch.Tensor | int | tuple[int, int]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A dummy batch on the model's device, and the image size (h, w) GFLOPs are reported for.

    Given an image size, the batch is ``2 * stride`` pixels square: tracing and counting are then cheap, and
    YOLOv8's GFLOPs (convolutions, BatchNorm, activations, resizes) are exactly proportional to ``h * w``.
    """
    p = next(model.parameters())
    if isinstance(example_inputs, torch.Tensor):
        x = example_inputs.to(p.device, torch.float32)
        return x, (int(x.shape[-2]), int(x.shape[-1]))
    h, w = (example_inputs, example_inputs) if isinstance(example_inputs, int) else tuple(example_inputs)
    stride = int(max(getattr(model, "stride", torch.tensor([32])).max(), 32))
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise CompressError(f"image size {h}x{w} must be a positive multiple of the model stride {stride}, e.g. 640")
    channels = int(getattr(model, "yaml", {}).get("channels", 3))
    side = 2 * stride
    return torch.zeros(1, channels, side, side, device=p.device), (h, w)


def _ratio_schedule(factor: float | None, speed_up: float | None, steps: int | None, global_pruning: bool) -> list:
    """Cumulative pruning ratio after each step (index 0 = before the first step), as Torch-Pruning expects.

    ``factor``: linear to ``factor`` in ``steps`` (default 1). ``speed_up``: the first step jumps to a safe
    fraction of the ratio uniform pruning would need (GFLOPs scale with in x out channels, so about
    ``1 - 1/sqrt(speed_up)``), then steps of 2.5 points up to the 90% cap keep the overshoot small.
    """
    if factor is not None:
        n = steps or 1
        return [factor * i / n for i in range(n + 1)]
    start = (0.5 if global_pruning else 0.75) * (1 - speed_up**-0.5)
    n = steps or max(1, math.ceil((MAX_LAYER_RATIO - start) / SPEED_UP_STEP))
    return [0.0] + [start + (MAX_LAYER_RATIO - start) * i / n for i in range(n + 1)]


def _importance_and_pruner(importance: Importance) -> tuple[Callable, type, str]:
    """Map a criterion name to a Torch-Pruning importance and the pruner class that matches it.

    * ``bn_scale``: |gamma| of the group's BatchNorms (network slimming, arXiv:1708.06519); pairs with sparse
      training, which pushes unneeded channels' gammas to zero.
    * ``l2``: L2 norm of the root conv's filters only (Li et al., arXiv:1608.08710), the classic criterion.
    * ``group_norm``: L2 norm over every coupled layer of the group, mean-normalised (DepGraph's criterion).

    A callable is used as it is (any ``tp.importance.Importance``) with the base pruner.
    """
    if callable(importance):
        return importance, tp.pruner.BasePruner, type(importance).__name__
    if importance == "bn_scale":
        return tp.importance.BNScaleImportance(), tp.pruner.BNScalePruner, importance
    if importance == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="first"), tp.pruner.BasePruner, importance
    if importance == "group_norm":
        return tp.importance.GroupMagnitudeImportance(p=2), tp.pruner.GroupNormPruner, importance
    raise CompressError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCES)}")


def _check_targets(factor: float | None, speed_up: float | None, round_to: int | None, steps: int | None) -> None:
    """Reject bad arguments up front with a message that names the fix."""
    if (factor is None) == (speed_up is None):
        raise CompressError("give exactly one of factor (share of channels to remove, e.g. 0.5) "
                            "or speed_up (target GFLOPs ratio, e.g. 2.0)")
    if factor is not None and not 0 < factor < 1:
        raise CompressError(f"factor={factor} must be between 0 and 1 (share of channels removed), e.g. 0.5")
    if speed_up is not None and not speed_up > 1:
        raise CompressError(f"speed_up={speed_up} must be greater than 1 (GFLOPs before / after), e.g. 2.0")
    if round_to is not None and round_to < 1:
        raise CompressError(f"round_to={round_to} must be a positive channel multiple (8 suits most hardware)")
    if steps is not None and steps < 1:
        raise CompressError(f"iterative_steps={steps} must be at least 1")


def _prunable_channels(model: nn.Module) -> int:
    """Output channels of all convolutions outside the Detect head (BatchNorms may be fused away)."""
    head = {id(m) for d in model.modules() if isinstance(d, Detect) for m in d.modules()}
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in head)


def _refresh_layer_attrs(model: nn.Module) -> None:
    """Update bookkeeping that Ultralytics reads after pruning: per-layer ``np`` and ``C2fChunkFree.c``."""
    for layer in getattr(model, "model", []):
        if hasattr(layer, "np"):
            layer.np = count_params(layer)
    for m in model.modules():
        if isinstance(m, C2fChunkFree):
            m.c = m.cv1.conv.out_channels


def prune_detector(
    model: nn.Module | str | Path,
    example_inputs: torch.Tensor | int | tuple[int, int] = 640,
    *,
    factor: float | None = None,
    speed_up: float | None = None,
    importance: Importance = "bn_scale",
    global_pruning: bool = False,
    round_to: int | None = 8,
    iterative_steps: int | None = None,
) -> tuple[nn.Module, PruneResult]:
    """Remove channels from a YOLOv8 detector with DepGraph, by share of channels or to a GFLOPs target.

    The input model is not modified: a float32 copy is swapped (C2f -> C2fChunkFree), traced and pruned. The
    returned model is trainable (``requires_grad=True`` except the fixed DFL conv) and in ``eval()`` mode; save
    it with :func:`yolo_compress.checkpoint.save_checkpoint` and fine-tune it with ``ModuleKeepingTrainer``.

    Args:
        model: a ``DetectionModel`` (e.g. ``YOLO(...).model``) or the path of a detection checkpoint.
        example_inputs: a dummy batch, or the image size (int or (h, w)) to build one; GFLOPs refer to it.
        factor: share of each prunable group's channels to remove, in (0, 1) (overall share if global).
        speed_up: target GFLOPs ratio before/after, > 1: a first step to a safe estimate of the needed ratio,
            then steps of growing ratio up to 90% (importance re-estimated each step), stopping at the first step
            that reaches it. With ``round_to=8`` YOLOv8n widths move in jumps, so expect some overshoot.
        importance: ``"bn_scale"``, ``"l2"``, ``"group_norm"`` or a ``tp.importance.Importance``.
        global_pruning: rank channels across layers instead of removing the same share from every layer.
        round_to: keep channel counts multiples of this (None for exact ratios).
        iterative_steps: for ``factor``, steps up to it (default 1, one shot); for ``speed_up``, the number of
            steps after the first from its estimate to 90% (default: steps of 2.5 points).

    Returns:
        (tuple[nn.Module, PruneResult]): the pruned model and the numbers before/after.

    Raises:
        CompressError: bad arguments, a model that is not a detector or has nothing prunable, or a ``speed_up``
            that the per-layer cap of 90% removed channels cannot reach.

    Example:
        >>> from ultralytics import YOLO
        >>> pruned, result = prune_detector(YOLO("yolov8n.yaml").model, 640, factor=0.5)
        >>> round(result.speed_up, 1)
        2.2
    """
    _check_targets(factor, speed_up, round_to, iterative_steps)
    t0 = time.perf_counter()
    model = _detection_model(model)
    inputs, imgsz = _example_inputs(model, example_inputs)
    flops_scale = imgsz[0] * imgsz[1] / (inputs.shape[-2] * inputs.shape[-1])
    imp, pruner_cls, imp_name = _importance_and_pruner(importance)
    schedule = _ratio_schedule(factor, speed_up, iterative_steps, global_pruning)
    top = schedule[-1]

    def gflops_of(m: nn.Module) -> float:
        return count_gflops(m, inputs) * flops_scale

    params_before, gflops_before = count_params(model), gflops_of(model)
    channels_before = _prunable_channels(model)
    swap_c2f_(model)
    for p in model.parameters():
        p.requires_grad_(True)  # a frozen graph traces to nothing
    head = [m for m in model.modules() if isinstance(m, Detect)]  # its submodules (DFL included) follow
    with torch.enable_grad():
        pruner = pruner_cls(
            model, inputs, importance=imp, global_pruning=global_pruning, pruning_ratio=top,
            max_pruning_ratio=MAX_LAYER_RATIO, iterative_steps=len(schedule) - 1, ignored_layers=head,
            round_to=round_to, iterative_pruning_ratio_scheduler=lambda r, _n: [r * x / top for x in schedule],
            # fresh dicts: Torch-Pruning fills these defaults in place, sharing them across pruners
            in_channel_groups={}, out_channel_groups={}, num_heads={}, channel_groups={},
        )
    if pruner.initial_total_channels == 0:
        raise CompressError("the model has no prunable channels outside the Detect head; "
                            "pass a YOLOv8 detector (backbone + neck of Conv/C2f/SPPF layers)")

    done, gflops, params = 0, gflops_before, count_params(model)
    for _ in range(len(schedule) - 1):
        pruner.step()
        done += 1
        if speed_up is not None and count_params(model) != params:  # unchanged widths: skip the slow count
            gflops, params = gflops_of(model), count_params(model)
            LOGGER.debug("step %d, ratio %.3f: %.3f GFLOPs (%.2fx)", done, schedule[done], gflops,
                         gflops_before / gflops)
            if gflops_before / gflops >= speed_up:
                break
    if speed_up is None:
        gflops = gflops_of(model)
    elif gflops_before / gflops < speed_up:
        raise CompressError(f"speed_up={speed_up} is unreachable: removing up to {MAX_LAYER_RATIO:.0%} of every "
                            f"group's channels gives {gflops_before / gflops:.2f}x; ask for less"
                            + ("" if global_pruning else ", or try global_pruning=True"))

    for m in model.modules():
        if isinstance(m, DFL):
            m.requires_grad_(False)  # as Ultralytics builds it: fixed projection
    _refresh_layer_attrs(model)
    model.eval()
    ratio = float(schedule[done])
    result = PruneResult(
        params_before=params_before, params_after=count_params(model), gflops_before=gflops_before,
        gflops_after=gflops, imgsz=imgsz,
        seconds=time.perf_counter() - t0, steps=done, ratio=ratio, importance=imp_name,
        channels_removed=1 - _prunable_channels(model) / max(channels_before, 1),
    )
    LOGGER.info("pruned %s: %.1f%% of channels, params %d -> %d, GFLOPs %.2f -> %.2f (%.2fx) in %.1fs", imp_name,
                100 * result.channels_removed, result.params_before, result.params_after, gflops_before, gflops,
                result.speed_up, result.seconds)
    return model, result
