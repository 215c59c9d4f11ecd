"""DepGraph channel pruning of Ultralytics YOLO detectors and classifiers with Torch-Pruning.

Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023, arXiv:2301.12900. The dependency graph
groups every layer whose channels are coupled (a conv, its BatchNorm, the convs reading it, residual adds and
concats), so a channel is removed from all of them at once and the network stays consistent.

Every family ``yolo_compress.families`` describes (YOLOv5u, YOLOv8, YOLOv10, YOLO11, YOLO26): ``C2f`` blocks (and
their subclasses ``C3k2``, ``C2fCIB``) are swapped for :class:`~yolo_compress.prune.c2f.C2fChunkFree`
first (Torch-Pruning 1.6 mis-indexes ``chunk -> cat``), the output head (``Detect``, ``Classify``) is ignored
(its outputs are fixed by ``reg_max`` and ``nc``; its input convs still shrink with the layers before it), the
family's attention blocks are kept whole (cut only at their borders), and
parameters are made trainable before tracing (loaded checkpoints come with ``requires_grad=False``, which would
leave the graph empty).
"""

from __future__ import annotations

import logging
import math
import time
from copy import deepcopy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from yolo_compress.errors import CompressError
from yolo_compress.families import family_of, keep_whole_modules
from yolo_compress.models import check_task, gflops, head_inner_convs, head_module_ids, head_types, param_count, task_of
from yolo_compress.patches.pruning import cached_index_mapping, limit_index_mapping
from yolo_compress.preflight import check_imgsz
from yolo_compress.prune.c2f import C2fChunkFree, swap_c2f_
from yolo_compress.prune.flops import FlopsCounter
from yolo_compress.prune.importance import importance
from yolo_compress.prune.settings import PruneSettings

LOGGER = logging.getLogger(__name__)

# per-layer cap on the removed share: above it tiny layers (16 channels in YOLOv8n) would round to nothing
MAX_LAYER_RATIO = 0.9
# ratio increment per step when searching a speed_up; with round_to=8 YOLOv8n widths move in jumps of 8 channels,
# so finer steps mostly change nothing
SPEED_UP_STEP = 0.025
TARGET_TOLERANCE = 0.01  # how far past the speed-up target a cut may land; one estimated further is made in part


@dataclass(frozen=True)
class PruneResult:
    """What pruning did, in numbers a report can print.

    Attributes:
        params_before: parameters of the input model.
        params_after: parameters of the pruned model.
        gflops_before: GFLOPs at ``imgsz`` before pruning (Ultralytics' counter, as everywhere in yolo-compress).
        gflops_after: GFLOPs at ``imgsz`` after pruning.
        imgsz: input size the GFLOPs refer to.
        seconds: wall time of swap + graph + pruning.
        steps: iterative pruning steps actually run.
        ratio: the pruning ratio asked of Torch-Pruning at the last step (per group, or overall when global; for a
            speed-up target that step is taken group by group until the target is met).
        importance: name of the criterion.
        global_pruning: whether channels were ranked across layers.
        channels_removed: share of conv output channels outside the head actually removed. With ``round_to`` it
            exceeds ``ratio`` on narrow layers, because Torch-Pruning rounds the kept channels down.
    """

    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float
    imgsz: int
    seconds: float
    steps: int
    ratio: float
    importance: str
    global_pruning: bool
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
        """Plain data for checkpoints and the manifest."""
        return {**asdict(self), "speed_up": self.speed_up}

    def __str__(self) -> str:
        return (f"params {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.1%}), "
                f"GFLOPs@{self.imgsz} {self.gflops_before:.3f} -> {self.gflops_after:.3f} ({self.speed_up:.2f}x) in "
                f"{self.seconds:.1f}s")


def _trace_input(model: nn.Module, imgsz: int) -> torch.Tensor:
    """A dummy batch, ``2 * stride`` pixels square: tracing is cheap and the graph does not depend on the size.

    Raises:
        CompressError: ``imgsz`` is not a positive multiple of the stride.
    """
    stride = int(max(getattr(model, "stride", torch.tensor([32])).max(), 32))
    if imgsz <= 0 or imgsz % stride:
        raise CompressError(f"image size {imgsz} must be a positive multiple of the model stride {stride}, e.g. 640")
    channels = int(getattr(model, "yaml", {}).get("channels", 3))
    return torch.zeros(1, channels, 2 * stride, 2 * stride, device=next(model.parameters()).device)


def has_freed_channels(model: nn.Module) -> bool:
    """True when sparse training zeroed channels: some prunable BatchNorm scale is exactly 0 (both sparse methods
    leave exact zeros, ordinary training does not)."""
    from yolo_compress.models import prunable_batchnorms

    return any(bool((bn.weight == 0).any()) for bn in prunable_batchnorms(model))


def _ratio_schedule(settings: PruneSettings, steps: int | None, done: float = 1.0) -> list[float]:
    """Cumulative pruning ratio after each step (index 0 = before the first step), as Torch-Pruning expects.

    ``factor``: linear to ``factor`` in ``steps`` (default 1). A speed-up: the first step jumps to a safe
    fraction of the ratio uniform pruning would need for what is left of the target once the GFLOPs are at
    ``done`` of the original (GFLOPs scale with in x out channels, so about ``1 - 1/sqrt(speed_up * done)``), then
    steps of 2.5 points up to the 90% cap keep the overshoot small.
    """
    if settings.factor is not None:
        n = steps or 1
        return [settings.factor * i / n for i in range(n + 1)]
    left = max(settings.target_speed_up * done, 1.0)
    start = (0.5 if settings.global_pruning else 0.75) * (1 - left**-0.5)
    n = steps or max(1, math.ceil((MAX_LAYER_RATIO - start) / SPEED_UP_STEP))
    return [0.0] + [start + (MAX_LAYER_RATIO - start) * i / n for i in range(n + 1)]


def _prunable_channels(model: nn.Module) -> int:
    """Output channels of all convolutions outside the head (BatchNorms may be fused away)."""
    head = head_module_ids(model)
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in head)


def _refresh_layer_attrs(model: nn.Module) -> None:
    """Update bookkeeping that Ultralytics reads after pruning: per-layer ``np`` and ``C2fChunkFree.c``."""
    for layer in getattr(model, "model", []):
        if hasattr(layer, "np"):
            layer.np = param_count(layer)
    for m in model.modules():
        if isinstance(m, C2fChunkFree):
            m.c = m.cv1.conv.out_channels


def prune_model(model: nn.Module, imgsz: int, settings: PruneSettings | None = None,
                iterative_steps: int | None = None) -> tuple[nn.Module, PruneResult]:
    """Remove channels from a YOLOv8 detector or classifier with DepGraph, by share of channels or to a GFLOPs target.

    The input model is not modified: a float32 copy is swapped (C2f -> C2fChunkFree), traced and pruned. The
    returned model is trainable (``requires_grad=True`` except the fixed DFL conv) and in ``eval()`` mode.

    Args:
        model: a ``DetectionModel`` or ``ClassificationModel`` (e.g. ``YOLO(...).model``).
        imgsz: the input size GFLOPs refer to (a multiple of the stride).
        settings: target and criterion (default: ``PruneSettings()``: 2x fewer GFLOPs; global |gamma| after sparse
            training, per-layer group magnitude otherwise).
        iterative_steps: for ``factor``, steps up to it (default 1, one shot); for a speed-up, the steps after the
            first from its estimate to 90% (default: steps of 2.5 points, importance re-estimated each step).

    Returns:
        (tuple[nn.Module, PruneResult]): the pruned model and the numbers before/after.

    Raises:
        CompressError: a model of another task or with nothing prunable, a bad image size, or a speed-up that the
            per-layer cap of 90% removed channels cannot reach.

    Example:
        >>> from ultralytics import YOLO
        >>> pruned, result = prune_model(YOLO("yolov8n.yaml").model, 640, PruneSettings(factor=0.5, importance="l2"))
        >>> round(result.speed_up, 1)
        2.3
    """
    check_task(model)
    check_imgsz(imgsz)
    settings = (settings or PruneSettings()).resolved(sparse_trained=has_freed_channels(model), task=task_of(model),
                                                      head_whole=family_of(model).head_whole)
    if iterative_steps is not None and iterative_steps < 1:
        raise CompressError(f"iterative_steps={iterative_steps} must be at least 1")
    t0 = time.perf_counter()
    model = deepcopy(model).float()
    inputs = _trace_input(model, imgsz)
    params_before, gflops_before = param_count(model), gflops(model, imgsz)
    channels_before = _prunable_channels(model)
    swap_c2f_(model)
    flops = gflops_before
    with cached_index_mapping():
        if settings.head_ratio:  # a fixed share first; then the search treats the head as a whole, kept
            _prune_head_(model, inputs, settings)
            flops = gflops(model, imgsz)
        schedule = _ratio_schedule(settings, iterative_steps, flops / gflops_before)
        counter = FlopsCounter(model, inputs, imgsz, flops)
        model, done, flops = _step_to_target(model, inputs, counter, settings, schedule, gflops_before)
    _finish_(model)
    result = PruneResult(
        params_before=params_before, params_after=param_count(model), gflops_before=gflops_before,
        gflops_after=flops, imgsz=imgsz, seconds=time.perf_counter() - t0, steps=done,
        ratio=float(schedule[done]), importance=settings.importance, global_pruning=settings.global_pruning,
        channels_removed=1 - _prunable_channels(model) / max(channels_before, 1),
    )
    scope = "global" if settings.global_pruning else "per layer"
    LOGGER.info("pruned by %s (%s): %.1f%% of channels, params %d -> %d, GFLOPs %.3f -> %.3f (%.2fx) in %.1fs",
                settings.importance, scope, 100 * result.channels_removed,
                result.params_before, result.params_after, gflops_before, flops, result.speed_up, result.seconds)
    return model, result


def _prune_head_(model: nn.Module, inputs: torch.Tensor, settings: PruneSettings) -> None:
    """Remove ``settings.head_ratio`` of the channels of each inner head conv (:func:`head_inner_convs`), ranked
    per conv by the settings' criterion; the head's output convs and the rest of the network keep their widths.

    Raises:
        CompressError: the head has no inner convs.
    """
    inner = head_inner_convs(model)
    if not inner:
        raise CompressError("head_ratio needs a detection head (YOLOv8 Detect) with convs before its outputs; "
                            "leave head_ratio unset or 0")
    for p in model.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        pruner = tp.pruner.BasePruner(
            model, inputs, importance=importance(settings.importance), global_pruning=False, pruning_ratio=0.0,
            pruning_ratio_dict={m: settings.head_ratio for m in inner}, max_pruning_ratio=MAX_LAYER_RATIO,
            ignored_layers=_head_outputs(model) + keep_whole_modules(model), round_to=settings.round_to,
            in_channel_groups={}, out_channel_groups={}, num_heads={}, channel_groups={},
        )
        limit_index_mapping(pruner.DG, _roots(pruner))
        pruner.step()


def _head_outputs(model: nn.Module) -> list[nn.Module]:
    """The layers of the output heads whose widths are fixed: every conv, transposed conv (a ``Proto``'s upsampling)
    or linear layer but the inner convs."""
    inner = {id(m) for m in head_inner_convs(model)}
    head = head_module_ids(model)
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    return [m for m in model.modules() if id(m) in head and isinstance(m, layers) and id(m) not in inner]


def _build_pruner(model: nn.Module, inputs: torch.Tensor, settings: PruneSettings,
                  schedule: list[float]) -> tp.pruner.BasePruner:
    """Torch-Pruning's pruner over ``model``, stepping through the cumulative ``schedule``. Ignored: the heads' layers
    of fixed width (``head_ratio`` unset), else the heads as a whole (kept, or already cut by :func:`_prune_head_`).

    Raises:
        CompressError: nothing prunable outside the head.
    """
    for p in model.parameters():
        p.requires_grad_(True)  # a frozen graph traces to nothing
    if settings.head_ratio is None:  # the head's inner convs are pruned like any other layer
        ignored = _head_outputs(model)
    else:  # whole heads (their submodules follow)
        ignored = [m for m in model.modules() if isinstance(m, head_types())]
    ignored += keep_whole_modules(model)  # attention: cut only at its borders (yolo_compress.families)
    top = schedule[-1]
    with torch.enable_grad():
        pruner = tp.pruner.BasePruner(
            model, inputs, importance=importance(settings.importance), global_pruning=settings.global_pruning,
            pruning_ratio=top, max_pruning_ratio=MAX_LAYER_RATIO, iterative_steps=len(schedule) - 1,
            ignored_layers=ignored, round_to=settings.round_to,
            iterative_pruning_ratio_scheduler=lambda r, _n: [r * x / top for x in schedule],
            # fresh dicts: Torch-Pruning fills these defaults in place, sharing them across pruners
            in_channel_groups={}, out_channel_groups={}, num_heads={}, channel_groups={},
        )
    if pruner.initial_total_channels == 0:
        raise CompressError("the model has no prunable channels outside its head; pass a YOLOv8 detector or "
                            "classifier (backbone of Conv/C2f/SPPF layers)")
    limit_index_mapping(pruner.DG, _roots(pruner))
    return pruner


def _roots(pruner: tp.pruner.BasePruner) -> list[nn.Module]:
    """The layers the pruner roots its groups at, as ``DependencyGraph.get_all_groups`` chooses them."""
    graph = pruner.DG
    ignored = {id(m) for m in pruner.ignored_layers + graph.IGNORED_LAYERS_IN_TRACING}
    types = tuple(pruner.root_module_types)
    candidates = [m for m in graph.module2node if isinstance(m, types) and id(m) not in ignored]
    return [m for m in candidates if (fns := graph.get_pruner_of_module(m)) is not None
            and fns.get_out_channels(m) is not None]


def _step_to_target(model: nn.Module, inputs: torch.Tensor, counter: FlopsCounter, settings: PruneSettings,
                    schedule: list[float], gflops_before: float) -> tuple[nn.Module, int, float]:
    """Prune ``model`` through the schedule (``factor``) or just to the speed-up target; the pruned model, the steps
    and the GFLOPs.

    With ``round_to``, every group of one width loses channels at the same ratio, so a whole step can jump far past
    the target (YOLOv8n at 192 px: from 2.7x to 3.6x). So every step is taken group by group (in the order
    Torch-Pruning yields them, as ``pruner.step()`` does) and the prune stops at the cut that meets the target
    (:class:`_Landing`): one graph, one pass.

    Raises:
        CompressError: the speed-up is not reached with up to 90% of every group's channels removed.
    """
    pruner = _build_pruner(model, inputs, settings, schedule)
    steps = len(schedule) - 1
    if settings.target_speed_up is None:
        for _ in range(steps):
            pruner.step()
        return model, steps, counter.exact(model)
    landing = _Landing(model, counter, gflops_before, settings)
    for step in range(1, steps + 1):
        for group in pruner.step(interactive=True):
            if landing.cut(pruner, group, last=step == steps):
                return model, step, counter.exact(model)  # counted when the target was met: not again
    raise _unreachable(settings, gflops_before / counter.exact(model))


class _Landing:
    """The cuts of a prune to a speed-up target, and where it stops.

    A group is cut whole unless that is estimated to overshoot the target by more than :data:`TARGET_TOLERANCE`
    (one group of a narrow layer at full resolution: YOLOv8n-obb at 3x, 8 channels, +3.6%). Then only as many of its
    channels as keep the landing within the tolerance are cut, ``round_to`` at a time and least important first,
    none if even ``round_to`` would overshoot: the groups after it, or the next step, take the cut instead. The last
    step cuts whole groups (nothing after it could). GFLOPs are estimated from the layers' sizes and counted exactly
    where a decision is taken (:class:`~yolo_compress.prune.flops.FlopsCounter`).
    """

    def __init__(self, model: nn.Module, counter: FlopsCounter, gflops_before: float,
                 settings: PruneSettings) -> None:
        self.model, self.counter, self.gflops_before = model, counter, gflops_before
        self.target, self.round_to = settings.target_speed_up, settings.round_to or 1

    def cut(self, pruner: tp.pruner.BasePruner, group: Any, last: bool) -> bool:
        """Cut ``group``, whole or in part (:meth:`_share`); True once the target is met."""
        n = len(group[0][1])
        count = n if last else self._share(pruner.DG, group)
        if count < n:
            idxs = _least_important(pruner, group, count) if count else None
            if not idxs:  # nothing to cut, or no score per channel to choose by: the groups after it take the cut
                return False
            group.prune(idxs)
        else:
            group.prune()
        return self.counter.reached(self.model, self.gflops_before, self.target)[0]

    def _share(self, graph: Any, group: Any) -> int:
        """How many of ``group``'s channels to cut: all, unless the landing would overshoot by more than the
        tolerance (checked on an exact count of the model as it is); then the most, in steps of ``round_to``, that
        do not."""
        cuts = [(dep.target.module, graph.is_out_channel_pruning_fn(dep.handler), len(i)) for dep, i in group]
        n, limit = len(group[0][1]), self.target * (1 + TARGET_TOLERANCE)
        if self.gflops_before / self.counter.estimate_cut(self.model, cuts) <= limit:
            return n
        self.counter.exact(self.model)  # estimates drift across a prune: decide from an exact count
        for count in range(n, 0, -self.round_to):
            if self.gflops_before / self.counter.estimate_cut(self.model, cuts, count / n) <= limit:
                return count
        return 0


def _least_important(pruner: tp.pruner.BasePruner, group: Any, count: int) -> list[int] | None:
    """The ``count`` of ``group``'s channels the pruner's criterion scores lowest on the whole layer; None where it
    does not give one score per channel."""
    dep, idxs = group[0]
    layer, fn, graph = dep.target.module, dep.handler, pruner.DG
    width = graph.get_out_channels(layer) if graph.is_out_channel_pruning_fn(fn) else graph.get_in_channels(layer)
    scores = pruner.estimate_importance(graph.get_pruning_group(layer, fn, list(range(width))))
    if scores is None or len(scores) != width:
        return None
    return sorted(idxs, key=lambda i: float(scores[i]))[:count]


def _unreachable(settings: PruneSettings, speed_up: float) -> CompressError:
    """The error for a target that up to 90% of every group's channels removed does not reach, with what might."""
    hint = "" if settings.global_pruning else ", or rank channels across layers (--global-pruning)"
    if settings.head_ratio == 0:  # kept whole, asked or by default (pose, OBB, a YOLO26 detector)
        hint += ", or cut the head's inner convs too (head_ratio, e.g. 0.5: --head-ratio 0.5)"
    return CompressError(f"speed_up={settings.target_speed_up} is unreachable: removing up to {MAX_LAYER_RATIO:.0%} "
                         f"of every group's channels gives {speed_up:.2f}x; ask for less{hint}")


def _finish_(model: nn.Module) -> None:
    """The pruned model as Ultralytics builds one: DFL projection frozen, layer bookkeeping current, eval mode."""
    from ultralytics.nn.modules.block import DFL

    for m in model.modules():
        if isinstance(m, DFL):
            m.requires_grad_(False)  # as Ultralytics builds it: fixed projection
    _refresh_layer_attrs(model)
    model.eval()


def plan_channels(model: nn.Module, imgsz: int, settings: PruneSettings) -> tuple[dict[str, list[int]], PruneResult]:
    """Which BatchNorm channels ``prune_model(model, imgsz, settings)`` would remove, by layer name.

    ``model`` must already be swapped (:func:`swap_c2f_`) so the names match the pruned network's. A copy is pruned
    with channel ids written into its BatchNorm ``running_mean`` (the criteria read weights only); the ids that
    survive tell which original channels were kept, whatever the number of iterative steps.
    """
    marked = deepcopy(model)
    for bn in marked.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean = torch.arange(bn.num_features, dtype=torch.float32, device=bn.running_mean.device)
    pruned, result = prune_model(marked, imgsz, settings)
    after = dict(pruned.named_modules())
    plan = {}
    for name, bn in marked.named_modules():
        if isinstance(bn, nn.BatchNorm2d):
            kept = set(after[name].running_mean.round().long().tolist())
            freed = [i for i in range(bn.num_features) if i not in kept]
            if freed:
                plan[name] = freed
    return plan, result
