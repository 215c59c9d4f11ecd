"""Logit knowledge distillation (Hinton et al.) and its application to YOLO ``Detect`` outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KD_MODES = ("softmax", "sigmoid")


def categorical_kl(logits_s: torch.Tensor, logits_t: torch.Tensor, dim: int) -> torch.Tensor:
    """``KL(softmax(t) || softmax(s))`` along ``dim`` (that dim summed away); the teacher is detached."""
    log_p_t = F.log_softmax(logits_t.detach(), dim=dim)
    return (log_p_t.exp() * (log_p_t - F.log_softmax(logits_s, dim=dim))).sum(dim)


def bernoulli_kl(logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """Element-wise ``KL(Bern(sigmoid(t)) || Bern(sigmoid(s)))``, from log-sigmoids; the teacher is detached."""
    t = logits_t.detach()
    p_t = torch.sigmoid(t)
    return p_t * (F.logsigmoid(t) - F.logsigmoid(logits_s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-logits_s))


class LogitKD(nn.Module):
    """Temperature-scaled KL divergence between teacher and student logits, averaged over positions.

    Hinton et al., "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531::

        softmax mode: L = tau^2 * mean_pos sum_k p_t,k (log p_t,k - log p_s,k),  p = softmax(logits / tau) over dim
        sigmoid mode: L = tau^2 * mean_pos sum_k KL(Bern(sigmoid(t_k / tau)) || Bern(sigmoid(s_k / tau)))

    ``softmax`` treats ``dim`` as one categorical distribution (Hinton's setting; for a classifier's (N, C)
    logits, ``mean_pos`` is the batch mean); ``sigmoid`` treats each entry along ``dim`` as an independent binary
    distribution, matching multi-label heads trained with BCE. Both are 0 when student == teacher.

    Shapes: ``logits_s`` and ``logits_t`` are equal, any rank; the KL is summed over ``dim`` and the other
    positions are averaged. Returns a scalar. The teacher is detached.

    Args:
        tau (float): temperature T, > 0.
        mode (str): "softmax" or "sigmoid".
        dim (int): dimension that holds the classes or bins.

    Examples:
        >>> kd = LogitKD(mode="sigmoid")
        >>> round(float(kd(torch.tensor([[1.0986]]), torch.tensor([[0.0]]))), 4)  # KL(Bern(.5) || Bern(.75))
        0.1438
    """

    def __init__(self, tau: float = 1.0, mode: str = "softmax", dim: int = 1) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if mode not in KD_MODES:
            raise ValueError(f"mode must be one of {KD_MODES}, got {mode!r}")
        self.tau, self.mode, self.dim = float(tau), mode, dim

    def forward(self, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        """Return the scalar KD loss."""
        if logits_s.shape != logits_t.shape:
            raise ValueError(f"KD needs equal shapes, got {tuple(logits_s.shape)} and {tuple(logits_t.shape)}")
        s, t = logits_s / self.tau, logits_t / self.tau
        kl = categorical_kl(s, t, self.dim) if self.mode == "softmax" else bernoulli_kl(s, t).sum(self.dim)
        return self.tau**2 * kl.mean()


class DetectKD(nn.Module):
    """Logit KD on a YOLOv8 ``Detect`` head: class logits (binary KL) plus DFL box bins (softmax KL).

    Both terms are normalised the way Ultralytics normalises its own detection loss, by a foreground mass,
    here the teacher's: ``q_na = max_k sigmoid(t_nka)`` (how surely the teacher sees an object at anchor ``a``).
    A plain mean over all anchors would divide by thousands of background anchors and leave the term ~100x
    weaker than the detection class loss, which divides by ``target_scores_sum``::

        L_cls = tau^2 * sum_{n,a,k} KLbin(t_nka / tau || s_nka / tau) / sum_{n,a} q_na
        L_box = tau^2 * sum_{n,a: q_na >= q_min} q_na * mean_j KL(softmax(tb_nja / tau) || softmax(sb_nja / tau))
                / sum_{n,a: q_na >= q_min} q_na
        L = L_cls + L_box
        (reg_max 1, YOLO26: L_box = sum q_na * mean_j smoothL1(sb_nja, tb_nja) / sum q_na over the same anchors: the
        head regresses distances directly, there are no bins to soften)

    The class term covers every anchor (the teacher's "no object here" is knowledge too); the box term only the
    anchors where the teacher sees an object (``q >= q_min``), as background anchors' box bins are untrained
    noise (Localization Distillation, Zheng et al., CVPR 2022, arXiv:2102.12252, distils boxes on positives).

    Student and teacher must share strides and input size, so anchors correspond 1:1.

    Shapes: ``scores_*`` are (N, nc, A) and ``boxes_*`` (N, 4 * reg_max, A) as in ``Detect.forward_head``'s
    ``"scores"``/``"boxes"``. Returns a scalar; the teacher is detached.

    Args:
        tau (float): temperature T for both terms.
        reg_max (int): DFL bins per box side; 1: direct distances (smooth L1 term).
        box (bool): also distil the boxes; ``False`` disables the box term.
        box_min_score (float): ``q_min``, the teacher score from which an anchor's box is distilled.
    """

    def __init__(self, tau: float = 1.0, reg_max: int = 16, box: bool = True,
                 box_min_score: float = 0.25) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau, self.reg_max = float(tau), int(reg_max)
        self.box = box
        self.box_min_score = float(box_min_score)

    def forward(self, scores_s: torch.Tensor, scores_t: torch.Tensor, boxes_s: torch.Tensor | None = None,
                boxes_t: torch.Tensor | None = None) -> torch.Tensor:
        """Return the scalar head KD loss; the box term is skipped when boxes are not given."""
        if scores_s.shape != scores_t.shape:
            raise ValueError(f"KD needs equal shapes, got {tuple(scores_s.shape)} and {tuple(scores_t.shape)}")
        quality = torch.sigmoid(scores_t.detach()).amax(1)  # (N, A)
        kl_cls = bernoulli_kl(scores_s / self.tau, scores_t / self.tau).sum()
        loss = self.tau**2 * kl_cls / quality.sum().clamp(min=1.0)
        if self.box and boxes_s is not None and boxes_t is not None:
            weight = quality * (quality >= self.box_min_score)
            loss = loss + (weight * self._box_term(boxes_s, boxes_t)).sum() / weight.sum().clamp(min=1e-6)
        return loss

    def _box_term(self, boxes_s: torch.Tensor, boxes_t: torch.Tensor) -> torch.Tensor:
        """Per-anchor (N, A) box distance: tau^2 * KL of the DFL bins, or smooth L1 of direct distances (reg_max 1)."""
        if self.reg_max == 1:
            return F.smooth_l1_loss(boxes_s, boxes_t.detach(), reduction="none").mean(1)
        n, _, a = boxes_s.shape
        return self.tau**2 * categorical_kl(boxes_s.view(n, 4, self.reg_max, a) / self.tau,
                                            boxes_t.view(n, 4, self.reg_max, a) / self.tau, dim=2).mean(1)


class MaskKD(nn.Module):
    """Logit KD on a segmentation head's masks: the student draws, inside the teacher's box, the mask the teacher
    draws, at the anchors where the teacher sees an object.

    Each anchor's mask logits are its coefficients times the prototypes, as Ultralytics assembles them (its own mask
    loss is a BCE cropped to the box); coefficients and prototypes are distilled only through the masks they make,
    so the student keeps its own prototype basis::

        L = sum_{n,a in top-k, q_na >= q_min} q_na * mean_{(h,w) in box_na} KLbin(t_nahw || s_nahw) / sum q_na
        t_nahw = sum_c ct_nca * Pt_nchw,  s_nahw = sum_c cs_nca * Ps_nchw

    ``q_na = max_k sigmoid(scores_t)`` as in :class:`DetectKD`; outside the box the teacher's mask is untrained (its
    loss is cropped there too). Only the ``top_k`` anchors of each image by ``q`` are drawn: a mask per anchor is
    (H, W), and 8400 anchors at 640 px would take gigabytes.

    Shapes: ``coef_*`` (N, nm, A), ``proto_*`` (N, nm, H, W), ``scores_t`` (N, nc, A), ``boxes_t`` (N, A, 4) xyxy in
    prototype pixels. Returns a scalar; the teacher is detached.

    Args:
        min_score (float): ``q_min``, the teacher score from which an anchor's mask is distilled.
        top_k (int): anchors drawn per image.
    """

    def __init__(self, min_score: float = 0.25, top_k: int = 32) -> None:
        super().__init__()
        self.min_score, self.top_k = float(min_score), int(top_k)

    def forward(self, coef_s: torch.Tensor, proto_s: torch.Tensor, coef_t: torch.Tensor, proto_t: torch.Tensor,
                scores_t: torch.Tensor, boxes_t: torch.Tensor) -> torch.Tensor:
        """Return the scalar mask KD loss (0 with the student's graph kept when the teacher sees nothing)."""
        quality, idx = torch.sigmoid(scores_t.detach()).amax(1).topk(min(self.top_k, scores_t.shape[2]), dim=1)
        weight = quality * (quality >= self.min_score)  # (N, k)
        pick = idx.unsqueeze(1).expand(-1, coef_s.shape[1], -1)  # (N, nm, k)
        masks_s = torch.einsum("nck,nchw->nkhw", coef_s.gather(2, pick), proto_s)
        masks_t = torch.einsum("nck,nchw->nkhw", coef_t.detach().gather(2, pick), proto_t.detach())
        inside = _box_area(boxes_t.detach().gather(1, idx.unsqueeze(2).expand(-1, -1, 4)), masks_s.shape[2:])
        kl = (bernoulli_kl(masks_s, masks_t) * inside).sum((2, 3)) / inside.sum((2, 3)).clamp(min=1.0)
        return (weight * kl).sum() / weight.sum().clamp(min=1e-6)


def _box_area(boxes: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(N, k, H, W) float mask of the pixels whose centres lie in each xyxy box (N, k, 4) (Ultralytics' crop_mask)."""
    x = torch.arange(size[1], device=boxes.device, dtype=boxes.dtype)[None, None, None, :]
    y = torch.arange(size[0], device=boxes.device, dtype=boxes.dtype)[None, None, :, None]
    x1, y1, x2, y2 = (b[..., None, None] for b in boxes.unbind(-1))
    return ((x >= x1) & (x < x2) & (y >= y1) & (y < y2)).to(boxes.dtype)


class SoftTargetLoss(nn.Module):
    """Hinton's knowledge-distillation objective for a classifier: hard labels plus the teacher's soft targets.

    Hinton et al., "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531::

        L = (1 - alpha) * CE(s, y) + alpha * T^2 * mean_n KL(softmax(t_n / T) || softmax(s_n / T))

    The KL term is summed over classes and averaged over the batch (``reduction="batchmean"``; ``nn.KLDivLoss()``'s
    default element-wise mean would also divide by the number of classes). ``T^2`` keeps the soft-target gradient on
    the scale of the hard-label one when ``T`` changes.

    Shapes: ``logits_s`` and ``logits_t`` are (N, C) logits, ``labels`` (N,) class indices. Returns the two weighted
    terms ``((1 - alpha) * CE, alpha * T^2 * KL)``, whose sum is ``L``. The teacher is detached.

    Args:
        tau (float): temperature T, > 0.
        alpha (float): weight of the soft targets, in [0, 1]; 0 is plain cross-entropy, 1 pure distillation.

    Examples:
        >>> loss = SoftTargetLoss(tau=1.0, alpha=1.0)
        >>> s = torch.tensor([[0.0, 0.0]])
        >>> [round(float(x), 4) for x in loss(s, s, torch.tensor([0]))]
        [0.0, 0.0]
    """

    def __init__(self, tau: float = 4.0, alpha: float = 0.5) -> None:
        super().__init__()
        if tau <= 0 or not 0 <= alpha <= 1:
            raise ValueError(f"need tau > 0 and alpha in [0, 1], got tau={tau}, alpha={alpha}")
        self.kl = LogitKD(tau, mode="softmax", dim=1)
        self.alpha = float(alpha)

    def forward(self, logits_s: torch.Tensor, logits_t: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``((1 - alpha) * CE, alpha * T^2 * KL)``."""
        ce = F.cross_entropy(logits_s, labels)
        return (1 - self.alpha) * ce, self.alpha * self.kl(logits_s, logits_t)
