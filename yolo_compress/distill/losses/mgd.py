"""Masked generative distillation (MGD) loss."""

from __future__ import annotations

import torch
from torch import nn


class MGDLoss(nn.Module):
    """Masked generative distillation: match features the student *generates* from a randomly masked map.

    Yang et al., "Masked Generative Distillation", ECCV 2022, arXiv:2205.01529::

        L = alpha_mgd * sum_{n,c,h,w} (G_nchw - T_nchw)^2 / N

    ``G`` is the generator's output from the masked, aligned student feature and ``T`` the teacher feature. The random
    mask and the generator are trainable or stochastic parts and live in the connector
    (:class:`yolo_compress.distill.connectors.MGDConnector`); this module is only the distance.

    Shapes: ``feat_g`` and ``feat_t`` are (N, C, H, W) and must match. Reduction: squared error summed over all
    elements, divided by the batch size N; returns a scalar. The teacher is detached.

    Args:
        alpha_mgd (float): loss weight, 2e-5 in the paper's detection setting.

    Examples:
        >>> loss = MGDLoss(alpha_mgd=1.0)
        >>> float(loss(torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)))
        1.0
    """

    def __init__(self, alpha_mgd: float = 2e-5) -> None:
        super().__init__()
        self.alpha_mgd = float(alpha_mgd)

    def forward(self, feat_g: torch.Tensor, feat_t: torch.Tensor) -> torch.Tensor:
        """Return the scalar MGD loss of generated features ``feat_g`` against teacher features ``feat_t``."""
        if feat_g.shape != feat_t.shape or feat_g.dim() != 4:
            raise ValueError(f"MGD needs equal (N, C, H, W), got {tuple(feat_g.shape)} and {tuple(feat_t.shape)}")
        return self.alpha_mgd * (feat_g - feat_t.detach()).pow(2).sum() / feat_g.shape[0]
