"""Distillation losses: pure functions of student and teacher tensors."""

from yolo_compress.distill.losses.cwd import ChannelWiseDivergence
from yolo_compress.distill.losses.kd import DetectKD, LogitKD, MaskKD, SoftTargetLoss
from yolo_compress.distill.losses.mgd import MGDLoss

__all__ = ["ChannelWiseDivergence", "DetectKD", "LogitKD", "MGDLoss", "MaskKD", "SoftTargetLoss"]
