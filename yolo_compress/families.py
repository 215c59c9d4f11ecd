"""One description per Ultralytics model family: what every stage needs to know that differs between families.

A family is recognised from the blocks a model is built of (never from its file name: a fine-tuned ``best.pt``
has none; a swapped block counts as the class Ultralytics built, which its layer's ``type`` keeps) and the first
entry of :data:`FAMILIES` that matches describes it. What holds for every family is read
from the model itself, not written down here: the head is the last layer and the layers that feed it are the
head's own ``f`` (YOLOv8's Detect reads 15, 18, 21; YOLO11's and YOLO26's 16, 19, 22, where 15 is a ``Concat``);
the head's fixed-width outputs are its branches' last layers (``yolo_compress.models``), for every task: the task
heads' extra branch ``cv4`` (mask coefficients, keypoints, angles) like the box and class branches, and a
segmentation head's ``Proto`` kept whole (``models.HEAD_BRANCHES``), the same in every family.

What differs, per entry:

* ``keep_whole``: blocks DepGraph must not cut inside. Ultralytics' ``Attention`` (C2PSA in YOLO11/YOLO26, PSA in
  YOLOv10, the PSABlock in YOLO26's ``C3k2(attn=True)``) reshapes its ``qkv`` output by ``num_heads``; Torch-Pruning
  1.6 traces those reshapes into index mappings that multiply without end (YOLO11n: 22 GiB, then killed; YOLO26n:
  ``MemoryError``). Kept whole, their convs keep their widths while the layers around them are pruned (the input
  width of ``qkv`` follows its producer): YOLO11n then prunes to 2x in seconds.
* ``end_to_end``: the head has one-to-one and one-to-many branches (``one2one_cv2/3`` beside ``cv2/3``) and
  Ultralytics validates it without NMS.
* ``head_whole``: per task, the largest GFLOPs target (``speed_up``) at which an unset ``head_ratio`` keeps the head
  whole rather than pruning its inner convs like other layers (pose and OBB heads are kept whole in every family:
  ``prune.settings``). Measured per family, task and target (``benchmarks/results/accuracy.md``): YOLO26n's
  detection head, its inner convs cut, lost to (A) at 2x, and kept whole it beat the cut by a point; at 3x the cut
  won (the rest of the network has to lose too much around a whole head). Between the two the cut is used (not
  measured). Its segmentation head is not measured, and kept whole it leaves 2x out of reach at 640 px: it is cut.

Adding a family is one entry. A model no entry matches (RT-DETR, YOLOv9's GELAN, YOLO12's area attention) is
refused in one line before any work: Torch-Pruning's behaviour on its blocks is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from yolo_compress.errors import CompressError


@dataclass(frozen=True)
class Family:
    """How one Ultralytics model family is recognised and what its stages must respect.

    Attributes:
        name: as Ultralytics names it (``"YOLO11"``).
        blocks: module class names a model of the family contains (all of them).
        end_to_end: the head is end-to-end (one-to-one and one-to-many branches, validated without NMS); it is
            also how YOLO26 and YOLOv10 are told from YOLO11 and YOLOv8.
        keep_whole: module class names pruned only at their borders, never inside.
        head_whole: (task, largest speed-up target) pairs: up to that target an unset ``head_ratio`` keeps the
            task's head whole (``PruneSettings.resolved``).
    """

    name: str
    blocks: tuple[str, ...]
    end_to_end: bool = False
    keep_whole: tuple[str, ...] = ()
    head_whole: tuple[tuple[str, float], ...] = ()

    def matches(self, found: set[str], end_to_end: bool) -> bool:
        return set(self.blocks) <= found and self.end_to_end == end_to_end


# most specific first: YOLO26 and YOLO11 share their blocks and differ in the head; classifiers have no head
# branches, so a YOLO26 classifier (built like YOLO11's) is described by the YOLO11 entry
FAMILIES: tuple[Family, ...] = (
    Family("YOLO26", ("C3k2", "C2PSA"), end_to_end=True, keep_whole=("Attention",), head_whole=(("detect", 2.0),)),
    Family("YOLO11", ("C3k2", "C2PSA"), keep_whole=("Attention",)),
    Family("YOLOv10", ("PSA", "SCDown"), end_to_end=True, keep_whole=("Attention",)),
    Family("YOLOv8", ("C2f",)),
    Family("YOLOv5u", ("C3", "SPPF")),
)
# blocks whose presence rules a model out even when it also holds a family's blocks (YOLOv9 and YOLO12 contain C2f-like
# parts; RT-DETR's decoder is no YOLO head)
UNSUPPORTED_BLOCKS = ("RTDETRDecoder", "RepNCSPELAN4", "A2C2f", "C2fAttn")


def is_end_to_end(model: nn.Module) -> bool:
    """Whether the model's head has a one-to-one branch (YOLOv10, YOLO26 and their task heads)."""
    return hasattr(model.model[-1], "one2one_cv2")


def family_of(model: nn.Module) -> Family:
    """The description of ``model``'s family.

    Raises:
        CompressError: a model built of blocks no entry of :data:`FAMILIES` describes.
    """
    found = {type(m).__name__ for m in model.modules()}
    found |= {str(getattr(m, "type", "")).rsplit(".", 1)[-1] for m in model.model}  # as built: before any swap
    e2e = is_end_to_end(model)
    unknown = sorted(found & set(UNSUPPORTED_BLOCKS))
    family = None if unknown else next((f for f in FAMILIES if f.matches(found, e2e)), None)
    if family is None:
        names = ", ".join(dict.fromkeys(f.name for f in FAMILIES))
        blocks = f" (it has {', '.join(unknown)})" if unknown else ""
        raise CompressError(f"{type(model).__name__} is of a model family yolo-compress does not describe{blocks}; "
                            f"it compresses {names} models")
    return family


def keep_whole_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` its family keeps whole when pruning (see the module docstring)."""
    kinds = set(family_of(model).keep_whole)
    return [m for m in model.modules() if type(m).__name__ in kinds]


def head_inputs(model: nn.Module) -> tuple[int, ...]:
    """Indices of the layers whose outputs the head reads, from the head's own ``f`` (``-1``: the layer before)."""
    head = model.model[-1]
    sources = head.f if isinstance(head.f, list) else [head.f]
    return tuple(head.i + j if j < 0 else j for j in sources)
