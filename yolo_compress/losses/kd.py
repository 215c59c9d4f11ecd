"""Logit knowledge distillation (Hinton et al.) and its application to YOLOv8 ``Detect`` outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KD_MODES = ("softmax", "sigmoid")


class LogitKD(nn.Module):
    """Temperature-scaled KL divergence between teacher and student logits.

    Hinton et al., "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531::

        softmax mode: L = w * tau^2 * mean_pos sum_k p_t,k (log p_t,k - log p_s,k),  p = softmax(logits / tau) over dim
        sigmoid mode: L = w * tau^2 * mean_pos sum_k KL(Bern(sigmoid(t_k / tau)) || Bern(sigmoid(s_k / tau)))

    ``softmax`` treats ``dim`` as one categorical distribution (Hinton's setting, also used for DFL bins);
    ``sigmoid`` treats each entry along ``dim`` as an independent binary distribution, matching multi-label heads
    trained with BCE such as YOLOv8's class logits. Both are 0 when student == teacher.

    Shapes: ``logits_s`` and ``logits_t`` are equal, any rank; the KL is summed over ``dim`` and the other
    positions are averaged (``mean_pos``), or, when ``weight`` is given (broadcastable to the shape without
    ``dim``), averaged with those weights: ``sum(weight * kl) / sum(weight)``. Returns a scalar. The teacher is
    detached.

    Args:
        tau (float): temperature T, > 0.
        loss_weight (float): factor w.
        mode (str): "softmax" or "sigmoid".
        dim (int): dimension that holds the classes or bins.

    Examples:
        >>> kd = LogitKD(mode="sigmoid")
        >>> round(float(kd(torch.tensor([[1.0986]]), torch.tensor([[0.0]]))), 4)  # KL(Bern(.5) || Bern(.75))
        0.1438
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, mode: str = "softmax", dim: int = 1) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if mode not in KD_MODES:
            raise ValueError(f"mode must be one of {KD_MODES}, got {mode!r}")
        self.tau, self.loss_weight, self.mode, self.dim = float(tau), float(loss_weight), mode, dim

    def forward(
        self, logits_s: torch.Tensor, logits_t: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the scalar KD loss; ``weight`` optionally weighs positions (all dims but ``dim``)."""
        if logits_s.shape != logits_t.shape:
            raise ValueError(f"KD needs equal shapes, got {tuple(logits_s.shape)} and {tuple(logits_t.shape)}")
        s, t = logits_s / self.tau, logits_t.detach() / self.tau
        if self.mode == "softmax":
            log_p_t = F.log_softmax(t, dim=self.dim)
            kl = (log_p_t.exp() * (log_p_t - F.log_softmax(s, dim=self.dim))).sum(self.dim)
        else:  # Bernoulli KL from log-sigmoids: log p = logsig(x), log(1 - p) = logsig(-x)
            p_t = torch.sigmoid(t)
            kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
            kl = kl.sum(self.dim)
        if weight is None:
            kl = kl.mean()
        else:
            weight = weight.detach().expand_as(kl)
            kl = (weight * kl).sum() / weight.sum().clamp(min=1e-9)
        return self.loss_weight * self.tau**2 * kl


class DetectKD(nn.Module):
    """Logit KD on a YOLOv8 ``Detect`` head: class logits (binary KL) plus, optionally, DFL box bins (softmax KL).

    YOLOv8 scores each class with its own sigmoid and trains them with BCE (multi-label), so the class term uses
    :class:`LogitKD` in ``sigmoid`` mode: a binary KL per class, summed over classes, averaged over anchors and
    images. The box term treats each of the 4 box sides' ``reg_max`` DFL logits as a categorical distribution
    (softmax KL, as in Localization Distillation, Zheng et al., CVPR 2022, arXiv:2102.12252), weighted per anchor
    by the teacher's top class probability so background anchors, whose box bins are untrained, count little::

        L = w * tau^2 * ( mean_{n,a} sum_k KLbin(t_nka || s_nka)
                          + sum_{n,j,a} q_na KL(softmax(tb_nja) || softmax(sb_nja)) / sum_{n,j,a} q_na ),
        q_na = max_k sigmoid(t_nka)

    Student and teacher must share strides and input size, so anchors correspond 1:1.

    Shapes: ``scores_*`` are (N, nc, A) and ``boxes_*`` (N, 4 * reg_max, A) as in ``Detect.forward_head``'s
    ``"scores"``/``"boxes"``. Returns a scalar; the teacher is detached.

    Args:
        tau (float): temperature T for both terms.
        loss_weight (float): factor w.
        reg_max (int): DFL bins per box side; 1 or ``box=False`` disables the box term.
        box (bool): also distil the DFL box distributions.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, reg_max: int = 16, box: bool = True) -> None:
        super().__init__()
        self.reg_max = int(reg_max)
        self.cls_kd = LogitKD(tau, loss_weight, mode="sigmoid", dim=1)
        self.box_kd = LogitKD(tau, loss_weight, mode="softmax", dim=2) if box and self.reg_max > 1 else None

    def forward(
        self,
        scores_s: torch.Tensor,
        scores_t: torch.Tensor,
        boxes_s: torch.Tensor | None = None,
        boxes_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the scalar head KD loss; the box term is skipped when boxes are not given."""
        loss = self.cls_kd(scores_s, scores_t)
        if self.box_kd is not None and boxes_s is not None and boxes_t is not None:
            n, _, a = boxes_s.shape
            quality = torch.sigmoid(scores_t.detach()).amax(1, keepdim=True)  # (N, 1, A), broadcast over 4 sides
            loss = loss + self.box_kd(
                boxes_s.view(n, 4, self.reg_max, a), boxes_t.view(n, 4, self.reg_max, a), weight=quality
            )
        return loss
