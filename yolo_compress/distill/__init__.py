"""The `distill` stage: settings, teacher, feature recorder, connectors, pure losses, the method table, the composer.

The trainer that uses them is ``patches.distill``.
"""

from yolo_compress.distill.connectors import CWDConnector, MGDConnector
from yolo_compress.distill.distiller import Distiller, hooked_layer_names, run_to_layer
from yolo_compress.distill.methods import FEATURE_METHODS
from yolo_compress.distill.recorder import FeatureRecorder, OutputHook, remove_output_hooks_
from yolo_compress.distill.settings import LOSSES, DistillSettings

__all__ = [
    "FEATURE_METHODS",
    "LOSSES",
    "CWDConnector",
    "DistillSettings",
    "Distiller",
    "FeatureRecorder",
    "MGDConnector",
    "OutputHook",
    "hooked_layer_names",
    "remove_output_hooks_",
    "run_to_layer",
]
