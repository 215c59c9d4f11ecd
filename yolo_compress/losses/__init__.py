"""Distillation losses: pure functions of student and teacher tensors."""

from yolo_compress.losses.cwd import ChannelWiseDivergence
from yolo_compress.losses.kd import DetectKD, LogitKD
from yolo_compress.losses.mgd import MGDLoss

__all__ = ["ChannelWiseDivergence", "DetectKD", "LogitKD", "MGDLoss"]
