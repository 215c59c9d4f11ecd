"""Compose record -> adapt -> loss for a YOLO student/teacher pair; returns ``{loss_name: tensor}``.

Knows the Ultralytics ``DetectionModel`` layout (``model.model[i]``, ``.f``, ``.i``, ``.save``, ``Detect.forward_head``)
but nothing about trainers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from yolo_compress.distill.losses import DetectKD, MaskKD
from yolo_compress.distill.methods import FEATURE_METHODS
from yolo_compress.distill.recorder import FeatureRecorder
from yolo_compress.distill.settings import DistillSettings
from yolo_compress.errors import CompressError
from yolo_compress.families import head_inputs
from yolo_compress.models import freeze_


def hooked_layer_names(model: nn.Module, indices: Sequence[int] | None = None) -> list[str]:
    """Map layer indices of a YOLO model to the module names whose outputs are distilled (``"model.16"``).

    The layer's own output is hooked, whatever block it is (in YOLOv8's C2f it is its ``cv2``'s output). ``None``:
    the layers that feed the head (``yolo_compress.families.head_inputs``).

    Raises:
        CompressError: an index outside the model, or the head itself; the message gives the valid range.
    """
    layers = model.model
    chosen = head_inputs(model) if indices is None else tuple(indices)
    bad = [i for i in chosen if not 0 <= i < len(layers) - 1]
    if bad:
        raise CompressError(f"distill_layers {bad} are not layers before the head of this {len(layers)}-layer model; "
                            f"use indices from 0 to {len(layers) - 2} (the head reads {list(head_inputs(model))})")
    return [f"model.{i}" for i in chosen]


def run_to_layer(model: nn.Module, x: torch.Tensor, last: int, proto: bool = False) -> torch.Tensor | list | dict:
    """Run a ``DetectionModel``'s layers ``0..last`` and return the output of layer ``last``.

    The same routing as ``BaseModel._predict_once`` but stopping early, so a teacher that is only hooked in the
    neck skips the rest. When ``last`` is the ``Detect`` head, its raw ``forward_head`` dict (``"boxes"``,
    ``"scores"``, ``"feats"``) is returned instead of decoded boxes, with a segmentation head's prototypes when
    ``proto`` (mask distillation).
    """
    y: list = []
    for m in model.model:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        if m.i == last and hasattr(m, "forward_head"):
            return _head_branches_of(m, x, proto)
        x = m(x)
        if m.i == last:
            return x
        y.append(x if m.i in model.save else None)
    return x


def _head_branches_of(head: nn.Module, x: list[torch.Tensor], proto: bool = False) -> dict:
    """The head's raw dict, or ``{"one2many": ..., "one2one": ...}`` for an end-to-end head (as in training); with
    ``proto``, a segmentation head's prototypes in each (``"proto"``) as its own forward adds them."""
    branches = {k: head.forward_head(x, **getattr(head, k)) for k in ("one2many", "one2one")
                if k == "one2many" or getattr(head, "one2one_cv2", None) is not None}
    if proto:  # Segment builds them from the first level, Segment26 from all
        protos = head.proto(x if type(head).__name__ == "Segment26" else x[0])
        for branch in branches.values():
            branch["proto"] = protos
    return branches["one2many"] if len(branches) == 1 else branches


def head_branches(preds: dict | tuple | list) -> dict[str, dict[str, torch.Tensor]]:
    """Each branch's raw ``{"boxes", "scores"}`` dict from a Detect head's train- or eval-mode output: ``one2many``,
    and ``one2one`` for end-to-end heads (YOLOv10, YOLO26), whose NMS-free predictions come from it."""
    if isinstance(preds, (tuple, list)):
        preds = preds[1]
    return {k: preds[k] for k in ("one2many", "one2one") if k in preds} or {"one2many": preds}


class Distiller(nn.Module):
    """Record student and teacher features, adapt the student's, and score them; one loss tensor per kind.

    The adapters are this module's only parameters. The teacher is held but not registered as a submodule, so
    ``parameters()``/``state_dict()`` never include it; it is frozen and kept in eval mode.

    Use it as a context manager (or :meth:`attach`/:meth:`detach`) around training: the student's hooks must be on
    while the student runs its forward pass; then ``distiller(img, head_s)`` runs the teacher on the same ``img``
    (only up to the deepest layer it needs) and returns e.g. ``{"cwd_loss": ..., "kd_loss": ...}``, computed in
    float32 with autocast off.

    Args:
        student (nn.Module): ``DetectionModel`` being trained.
        teacher (nn.Module): ``DetectionModel`` with the same classes and strides.
        settings (DistillSettings): losses, layers (outputs paired by index; default: the head's inputs),
            temperatures.
        probe_imgsz (int): input size of the dummy pass that reads feature widths.

    Raises:
        CompressError: a layer that is not before the head, different classes/strides, or maps of different size.

    Examples:
        >>> distiller = Distiller(student, teacher, DistillSettings(loss="cwd"))  # the head's inputs
        >>> with distiller:
        ...     preds = student(img)
        ...     losses = distiller(img, preds)  # {"cwd_loss": tensor(...)}
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, settings: DistillSettings | None = None,
                 probe_imgsz: int = 64) -> None:
        super().__init__()
        settings = (settings or DistillSettings()).for_task("detect")
        self.feature_kind, self.use_kd = settings.feature, settings.use_kd
        object.__setattr__(self, "teacher", freeze_(teacher))  # held, not registered
        names_s = hooked_layer_names(student, settings.distill_layers) if self.feature_kind else []
        names_t = hooked_layer_names(teacher, settings.distill_layers) if self.feature_kind else []
        self.layers = tuple(int(name.rsplit(".", 1)[1]) for name in names_s)
        self.student_recorder = FeatureRecorder(student, names_s)
        self.teacher_recorder = FeatureRecorder(teacher, names_t)
        self.keys = [name.replace(".", "_") for name in names_s]
        head_s, head_t = student.model[-1], teacher.model[-1]
        self.last = len(teacher.model) - 1 if self.use_kd else max(self.layers)

        self.connectors = nn.ModuleDict()
        self.feature_loss = None
        if self.feature_kind:
            method = FEATURE_METHODS[self.feature_kind]
            shapes_s = _probe_shapes(student, self.student_recorder, probe_imgsz, max(self.layers))
            shapes_t = _probe_shapes(teacher, self.teacher_recorder, probe_imgsz, max(self.layers))
            for key, name, s, t in zip(self.keys, names_s, shapes_s, shapes_t):
                if s[1:] != t[1:]:
                    raise CompressError(
                        f"{name}: student map {s[1]}x{s[2]} but teacher map {t[1]}x{t[2]} at input {probe_imgsz}; "
                        "pick layers at the same stride in both models"
                    )
                self.connectors[key] = method.connector(s[0], t[0], settings)
            self.feature_loss = method.loss(settings)
        self.head_kd = None
        if self.use_kd:
            _check_heads_match(head_s, head_t)
            self.head_kd = DetectKD(settings.kd_tau, reg_max=head_s.reg_max, box=settings.kd_box,
                                    box_min_score=settings.kd_box_min)
        self.mask_kd = MaskKD(settings.kd_box_min) if self.use_kd and settings.kd_mask and hasattr(head_s, "proto") \
            else None
        self.to(next(student.parameters()).device)

    def __enter__(self) -> Distiller:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self) -> Distiller:
        """Register the student and teacher hooks."""
        if self.feature_kind:
            self.student_recorder.__enter__()
            self.teacher_recorder.__enter__()
        return self

    def detach(self) -> None:
        """Remove every hook this distiller registered; safe to call twice."""
        self.student_recorder.__exit__(None, None, None)
        self.teacher_recorder.__exit__(None, None, None)

    def move_(self, device: torch.device | str) -> Distiller:
        """Move the adapters and the teacher to ``device``."""
        self.teacher.to(device)
        return self.to(device)

    @torch.no_grad()
    def run_teacher(self, img: torch.Tensor) -> dict[str, dict[str, torch.Tensor]] | None:
        """Run the frozen teacher on ``img`` up to the deepest layer needed; its head branches when KD is on."""
        self.teacher.eval()
        out = run_to_layer(self.teacher, img, self.last, proto=self.mask_kd is not None)
        return head_branches(out) if self.use_kd else None

    def forward(self, img: torch.Tensor, preds_s: dict | tuple | None = None) -> dict[str, torch.Tensor]:
        """Return the distillation losses for the student pass that just ran on ``img``.

        Args:
            img (torch.Tensor): the preprocessed batch the student saw, (N, 3, H, W).
            preds_s (dict | tuple, optional): the student's head output; needed for KD.

        Returns:
            (dict[str, torch.Tensor]): ``{"cwd_loss" | "mgd_loss": scalar, "kd_loss": scalar}``, float32.
        """
        feats_s = self.student_recorder.pop() if self.feature_kind else {}
        head_t = self.run_teacher(img)
        feats_t = self.teacher_recorder.pop() if self.feature_kind else {}
        losses: dict[str, torch.Tensor] = {}
        with torch.autocast(device_type=img.device.type, enabled=False):
            if self.feature_kind:
                total = img.new_zeros((), dtype=torch.float32)
                for key, f_s, f_t in zip(self.keys, feats_s.values(), feats_t.values()):
                    total = total + self.feature_loss(*self.connectors[key](f_s.float(), f_t.float()))
                losses[f"{self.feature_kind}_loss"] = total
            if self.use_kd:
                if preds_s is None:
                    raise ValueError("KD needs the student's head output: pass preds_s")
                heads_s = head_branches(preds_s)
                pairs = [(heads_s[k], head_t[k]) for k in heads_s]
                losses["kd_loss"] = sum(
                    self.head_kd(s["scores"].float(), t["scores"].float(), s["boxes"].float(), t["boxes"].float())
                    for s, t in pairs
                )
                if self.mask_kd is not None:
                    losses["mask_kd_loss"] = sum(self._mask_kd(s, t, img.shape[2]) for s, t in pairs)
        return losses

    def _mask_kd(self, s: dict[str, torch.Tensor], t: dict[str, torch.Tensor], img_h: int) -> torch.Tensor:
        """:class:`MaskKD` of one head branch, the teacher's boxes decoded into prototype pixels."""
        proto_s, proto_t = (p[0] if isinstance(p, tuple) else p for p in (s["proto"], t["proto"]))
        return self.mask_kd(s["mask_coefficient"].float(), proto_s.float(), t["mask_coefficient"].float(),
                            proto_t.float(), t["scores"].float(),
                            decoded_boxes(self.teacher.model[-1], t) * (proto_t.shape[2] / img_h))


@torch.no_grad()
def decoded_boxes(head: nn.Module, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, A, 4) xyxy boxes in input pixels from a Detect head's raw ``"boxes"`` and ``"feats"``, as its inference
    decodes them (DFL, then distances from the anchor points, times the strides)."""
    from ultralytics.utils.tal import dist2bbox, make_anchors

    anchors, strides = (a.transpose(0, 1) for a in make_anchors(raw["feats"], head.stride, 0.5))
    distances = head.dfl(raw["boxes"].float())  # (N, 4, A)
    return (dist2bbox(distances, anchors.unsqueeze(0), xywh=False, dim=1) * strides).transpose(1, 2)


@torch.no_grad()
def _probe_shapes(model: nn.Module, recorder: FeatureRecorder, imgsz: int, last: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of each recorded layer for one zero image of size ``imgsz``, model left in its previous mode."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with recorder:
            run_to_layer(model, torch.zeros(1, 3, imgsz, imgsz, device=device), last)
            feats = recorder.pop()
    finally:
        model.train(was_training)
    return [tuple(f.shape[1:]) for f in feats.values()]


def _check_heads_match(head_s: nn.Module, head_t: nn.Module) -> None:
    """KD needs anchors that correspond 1:1 and logits of the same meaning."""
    for attr in ("nc", "reg_max", "nl"):
        if getattr(head_s, attr, None) != getattr(head_t, attr, None):
            raise CompressError(
                f"logit KD needs the same Detect {attr} in student ({getattr(head_s, attr, None)}) and teacher "
                f"({getattr(head_t, attr, None)}); use a teacher trained on the same dataset and head, or a feature "
                "loss (cwd, mgd) alone"
            )
    if not torch.equal(head_s.stride.cpu(), head_t.stride.cpu()):
        raise CompressError(f"logit KD needs equal strides, got {head_s.stride.tolist()} and {head_t.stride.tolist()}")
