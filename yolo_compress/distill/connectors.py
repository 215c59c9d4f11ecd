"""Connectors: the trainable parts between a student feature and the teacher feature it is compared with.

They exist only during training; checkpoints hold the student alone.
"""

from __future__ import annotations

import torch
from torch import nn


def _align(student_channels: int, teacher_channels: int) -> nn.Module:
    """A 1x1 conv from student to teacher width, or identity when the widths already match."""
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)


class CWDConnector(nn.Module):
    """Align student channels to the teacher's with a 1x1 conv, then normalise both maps.

    Each side gets its own ``BatchNorm2d(affine=False)`` so the channel distributions CWD compares are on one
    scale; the 1x1 conv is the only trainable part (absent when widths match).

    Args:
        student_channels (int): channels of the student feature.
        teacher_channels (int): channels of the teacher feature.
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.align = _align(student_channels, teacher_channels)
        self.norm_s = nn.BatchNorm2d(teacher_channels, affine=False)
        self.norm_t = nn.BatchNorm2d(teacher_channels, affine=False)

    def forward(self, feat_s: torch.Tensor, feat_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(student, teacher)`` maps of equal shape (N, C_t, H, W)."""
        return self.norm_s(self.align(feat_s)), self.norm_t(feat_t.detach())


class MGDConnector(nn.Module):
    """Masked generation for MGD (Yang et al., ECCV 2022, arXiv:2205.01529).

    Aligns and normalises like :class:`CWDConnector`, zeroes each spatial position of the student map with
    probability ``lambda_mgd`` (one mask per image, shared by all channels, as in the paper's code:
    ``where(rand > 1 - lambda, 0, 1)``), and regenerates the teacher map from what is left with
    ``Conv3x3 -> ReLU -> Conv3x3``. In eval mode no position is masked.

    Args:
        student_channels (int): channels of the student feature.
        teacher_channels (int): channels of the teacher feature.
        lambda_mgd (float): fraction of positions masked, in [0, 1); 0.65 in the paper's detection setting.
    """

    def __init__(self, student_channels: int, teacher_channels: int, lambda_mgd: float = 0.65) -> None:
        super().__init__()
        if not 0.0 <= lambda_mgd < 1.0:
            raise ValueError(f"lambda_mgd must be in [0, 1), got {lambda_mgd}")
        self.lambda_mgd = float(lambda_mgd)
        self.align = _align(student_channels, teacher_channels)
        self.norm_s = nn.BatchNorm2d(teacher_channels, affine=False)
        self.norm_t = nn.BatchNorm2d(teacher_channels, affine=False)
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
        )

    def forward(self, feat_s: torch.Tensor, feat_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(generated, teacher)`` maps of equal shape (N, C_t, H, W)."""
        feat_s = self.norm_s(self.align(feat_s))
        if self.training and self.lambda_mgd > 0:
            n, _, h, w = feat_s.shape
            keep = torch.rand(n, 1, h, w, device=feat_s.device) > self.lambda_mgd
            feat_s = feat_s * keep.to(feat_s.dtype)
        return self.generation(feat_s), self.norm_t(feat_t.detach())
