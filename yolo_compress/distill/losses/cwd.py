"""Channel-wise distillation (CWD) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelWiseDivergence(nn.Module):
    """Channel-wise knowledge distillation: each channel's spatial map is a distribution over H*W positions.

    Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021, arXiv:2011.13256::

        L = tau^2 / (N*C) * sum_{n,c} KL(softmax(T_nc / tau) || softmax(S_nc / tau))

    where ``T_nc`` and ``S_nc`` are the teacher and student maps of image ``n``, channel ``c``, flattened to H*W
    values, and the softmax runs over those H*W positions.

    Shapes: ``feat_s`` and ``feat_t`` are (N, C, H, W) and must match (align channels first). Reduction: sum over
    images, channels and positions, divided by N*C; returns a scalar. The teacher is detached: no gradient reaches it.

    Args:
        tau (float): softmax temperature, > 0.

    Examples:
        >>> loss = ChannelWiseDivergence(tau=1.0)
        >>> x = torch.randn(2, 8, 4, 4)
        >>> float(loss(x, x))
        0.0
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def forward(self, feat_s: torch.Tensor, feat_t: torch.Tensor) -> torch.Tensor:
        """Return the scalar CWD loss of student features ``feat_s`` against teacher features ``feat_t``."""
        if feat_s.shape != feat_t.shape or feat_s.dim() != 4:
            raise ValueError(f"CWD needs equal (N, C, H, W), got {tuple(feat_s.shape)} and {tuple(feat_t.shape)}")
        n, c = feat_s.shape[:2]
        logits_s = feat_s.reshape(n * c, -1) / self.tau
        logits_t = feat_t.detach().reshape(n * c, -1) / self.tau
        log_p_t = F.log_softmax(logits_t, dim=1)
        kl = (log_p_t.exp() * (log_p_t - F.log_softmax(logits_s, dim=1))).sum()
        return self.tau**2 * kl / (n * c)
