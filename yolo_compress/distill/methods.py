"""The name -> (connector, loss) table of feature distillation (its names: ``distill.settings.FEATURES``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from yolo_compress.distill.connectors import CWDConnector, MGDConnector
from yolo_compress.distill.losses import ChannelWiseDivergence, MGDLoss
from yolo_compress.distill.settings import DistillSettings


@dataclass(frozen=True)
class FeatureMethod:
    """How one feature-distillation method adapts a student map and scores it against the teacher's.

    Attributes:
        connector: ``(student_channels, teacher_channels, settings) -> nn.Module`` (the trainable part).
        loss: ``settings -> nn.Module`` (pure: ``loss(feat_s, feat_t) -> scalar``).
    """

    connector: Callable[[int, int, DistillSettings], nn.Module]
    loss: Callable[[DistillSettings], nn.Module]


FEATURE_METHODS: dict[str, FeatureMethod] = {
    "cwd": FeatureMethod(lambda s, t, cfg: CWDConnector(s, t), lambda cfg: ChannelWiseDivergence(cfg.cwd_tau)),
    "mgd": FeatureMethod(lambda s, t, cfg: MGDConnector(s, t, cfg.mgd_lambda), lambda cfg: MGDLoss(cfg.mgd_alpha)),
}
