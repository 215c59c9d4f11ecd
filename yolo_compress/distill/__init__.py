"""Feature distillation: record features with hooks, adapt channels, compose losses."""

from yolo_compress.distill.adapters import CWDConnector, MGDConnector
from yolo_compress.distill.distiller import (
    DEFAULT_LAYERS,
    LOSS_TYPES,
    Distiller,
    cosine_factor,
    hooked_layer_names,
    parse_loss_type,
    run_to_layer,
)
from yolo_compress.distill.recorder import FeatureRecorder, OutputHook, remove_output_hooks_

__all__ = [
    "CWDConnector",
    "DEFAULT_LAYERS",
    "Distiller",
    "FeatureRecorder",
    "LOSS_TYPES",
    "MGDConnector",
    "OutputHook",
    "cosine_factor",
    "hooked_layer_names",
    "parse_loss_type",
    "remove_output_hooks_",
    "run_to_layer",
]
