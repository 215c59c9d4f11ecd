"""What yolo-compress needs to know about an Ultralytics network: its task, its head, its classes.

Every stage asks these questions; they are answered here once. Checked against Ultralytics 8.4.190.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from yolo_compress.errors import CompressError
from yolo_compress.families import family_of


class DataSpec(Protocol):
    """What building a model needs of a dataset (``yolo_compress.dataset.Dataset`` has it)."""

    task: str
    names: dict[int, str]
    kpt_shape: tuple[int, int] | None

    @property
    def nc(self) -> int: ...

TASKS = ("detect", "segment", "pose", "obb", "classify")
# the heads' output branches of detection and its three task heads (Segment's mask coefficients, Pose's keypoints,
# OBB's angle: ``cv4``), one-to-many and, in end-to-end heads, one-to-one: each a sequence of convs whose last one
# emits a fixed number of channels
HEAD_BRANCHES = ("cv2", "cv3", "cv4", "one2one_cv2", "one2one_cv3", "one2one_cv4")
# the head's convolution branches (Detect's box/class convs and an end-to-end head's one-to-one twins, Classify's
# 1x1 conv): INT8 quantizes them like the rest; every other op of the head (box decoding, DFL, concatenations,
# sigmoid) stays in float where the float-head option asks for it
HEAD_CONV_BRANCHES = (*HEAD_BRANCHES, "conv")


def head_types() -> tuple[type, ...]:
    """Output heads whose widths are fixed by the task (box bins, class count): never pruned or sparsified."""
    from ultralytics.nn.modules.head import Classify, Detect

    return Detect, Classify


def head_module_ids(model: nn.Module) -> set[int]:
    """Ids of every module inside an output head (``Detect`` and subclasses, ``Classify``)."""
    heads = head_types()
    return {id(m) for h in model.modules() if isinstance(h, heads) for m in h.modules()}


def head_inner_layers(model: nn.Module) -> list[nn.Module]:
    """Layers inside a detection head whose output channels are free: every layer of a ``Detect`` branch
    (:data:`HEAD_BRANCHES`) but its last (those emit ``4 * reg_max``, ``nc``, mask coefficients, keypoints or angles).
    A segmentation head's ``Proto`` is kept whole (its output is the ``nm`` prototypes). A ``Classify`` head has
    none worth pruning: its conv costs under 1% of the network's GFLOPs."""
    from ultralytics.nn.modules.head import Detect

    inner: list[nn.Module] = []
    for h in model.modules():
        if isinstance(h, Detect):
            heads = [getattr(h, name, None) for name in HEAD_BRANCHES]
            inner += [layer for branches in heads if branches is not None for b in branches for layer in list(b)[:-1]]
    return inner


def head_inner_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convolutions of :func:`head_inner_layers`."""
    return [m for layer in head_inner_layers(model) for m in layer.modules() if isinstance(m, nn.Conv2d)]


def task_of(model: nn.Module) -> str:
    """``"detect"``, ``"classify"``, ... as Ultralytics names the task of ``model``, read from its architecture.

    Not from ``model.args``/``model.task``: a checkpoint saved without train args loads with Ultralytics' default
    ``task="detect"`` whatever its head.
    """
    from ultralytics.nn.tasks import guess_model_task

    spec = getattr(model, "yaml", None)
    return str(guess_model_task(spec if isinstance(spec, dict) else model))


def check_task(model: nn.Module, what: str = "model") -> str:
    """Return the task of ``model`` when yolo-compress handles it.

    Raises:
        CompressError: a model of another task (semantic segmentation, depth, open-vocabulary), a model of a family
            ``yolo_compress.families`` does not describe (RT-DETR, YOLOv9, YOLO12), or a module that is no
            Ultralytics model.
    """
    from ultralytics.nn.tasks import BaseModel

    if not isinstance(model, BaseModel):
        raise CompressError(f"{what} is a {type(model).__name__}, not an Ultralytics model; pass a YOLO .pt "
                            "checkpoint or YOLO(...).model")
    try:
        family_of(model)
    except CompressError as e:
        raise CompressError(f"{what}: {e}") from None
    return _supported(task_of(model), f"{what} is a {{task}} model ({type(model).__name__})")


def _supported(task: str, what: str) -> str:
    """``task`` when yolo-compress handles it.

    Raises:
        CompressError: ``what`` (with ``{task}`` filled in), and the tasks it handles.
    """
    if task not in TASKS:
        raise CompressError(f"{what.format(task=task)}; yolo-compress handles {', '.join(TASKS[:-1])} and "
                            f"{TASKS[-1]} models")
    return task


def freeze_(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with every parameter frozen (a teacher); returns it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_class_count(model: nn.Module, nc: int, what: str, fix: str) -> None:
    """Raises: CompressError naming ``what``, both counts and ``fix`` when ``model`` does not predict ``nc`` classes."""
    found = class_count(model)
    if found != nc:
        raise CompressError(f"{what} predicts {found} classes but the dataset has {nc}; {fix}")


def class_count(model: nn.Module) -> int:
    """Number of classes the model's head predicts."""
    head = model.model[-1]
    nc = getattr(head, "nc", None)
    if nc is None:  # Classify: the final linear layer
        nc = head.linear.out_features
    return int(nc)


def yaml_task(cfg: str) -> str:
    """The task of the model an Ultralytics model yaml builds.

    Raises:
        CompressError: the yaml does not exist, or builds a model of a task yolo-compress does not handle.
    """
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    try:
        task = str(guess_model_task(yaml_model_load(cfg)))
    except FileNotFoundError as e:
        raise CompressError(f"model yaml not found: {cfg}; use e.g. yolov8n.yaml, yolov8n-cls.yaml or a .pt") from e
    return _supported(task, f"{cfg} builds a {{task}} model")


def build_from_yaml(cfg: str, data: DataSpec, seed: int = 0) -> nn.Module:
    """A randomly initialised model for ``data`` (its classes, a pose set's keypoints) from an Ultralytics model yaml
    (no download), seeded.

    The trainer seeds its RNGs only after it receives the model, so without the seed here two runs of the same
    command would start from different weights.

    Raises:
        CompressError: the yaml does not exist or builds a model of another task than the dataset's.
    """
    from ultralytics.nn import tasks

    built = yaml_task(cfg)
    if built != data.task:
        example = {"classify": "yolov8n-cls.yaml", "detect": "yolov8n.yaml"}.get(data.task, f"yolo11n-{data.task}.yaml")
        raise CompressError(f"{cfg} builds a {built} model but the dataset is for {data.task}; use e.g. {example}")
    cls = {"classify": tasks.ClassificationModel, "segment": tasks.SegmentationModel, "pose": tasks.PoseModel,
           "obb": tasks.OBBModel}.get(data.task, tasks.DetectionModel)
    extra = {"data_kpt_shape": tuple(data.kpt_shape)} if data.task == "pose" else {}
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = cls(cfg, nc=data.nc, verbose=False, **extra)
    finally:
        torch.random.set_rng_state(state)
    model.names = dict(data.names)
    return model


def param_count(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, imgsz: int | tuple[int, int]) -> float:
    """GFLOPs (2 x multiply-accumulates) of one forward at ``imgsz``: Ultralytics' counter, used everywhere here."""
    from ultralytics.utils.torch_utils import get_flops

    flops = float(get_flops(model, list(imgsz) if isinstance(imgsz, tuple) else imgsz))
    if flops <= 0:  # Ultralytics' counter returns 0 when the forward pass fails
        raise CompressError(f"{type(model).__name__} does not run a forward pass at image size {imgsz}, so its GFLOPs "
                            "cannot be counted; check the model (a pruned layer out of step with its neighbours?)")
    return flops


def model_size(model: nn.Module, imgsz: int) -> dict[str, float]:
    """Parameter count and GFLOPs at ``imgsz``."""
    return {"params": param_count(model), "gflops": gflops(model, imgsz)}


def prunable_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """BatchNorm layers whose channels pruning may remove: all but those of the output head's fixed layers.

    The head's output widths are fixed (box bins, class count), so sparsifying their scales would only cost
    accuracy; the detection head's inner layers (:func:`head_inner_layers`) are prunable like the rest.
    """
    inner = {id(m) for layer in head_inner_layers(model) for m in layer.modules()}
    fixed = head_module_ids(model) - inner
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine and id(m) not in fixed]
