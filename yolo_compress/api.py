"""``PruneModel``: the Python face of yolo-compress. Each method is one stage; each stage writes a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import load_detection_model
from yolo_compress.dataset import class_count, default_imgsz, resolve_data
from yolo_compress.errors import CompressError
from yolo_compress.measure import model_size, validate
from yolo_compress.training import fit, output_path, training_args

LOGGER = logging.getLogger(__name__)


class PruneModel:
    """A YOLOv8 detector on its way through sparse training, pruning, fine-tuning and distillation.

    Args:
        weights: a trained ``.pt`` checkpoint, or a model yaml such as ``"yolov8n.yaml"`` (random init, built
            with the dataset's class count; no download).
        data: a YOLO dataset yaml; ``None`` uses the built-in shapes dataset (generated on first use).
        imgsz: default image size for every stage; ``None`` takes the dataset's recorded size, else 640.

    Example:
        >>> pm = PruneModel("yolov8n.yaml")  # built-in data
        >>> pm.train(save_dir="weights/baseline.pt", epochs=10)
        >>> pm.info()["params"]
    """

    def __init__(self, weights: str | Path = "yolov8n.yaml", data: str | Path | None = None,
                 imgsz: int | None = None) -> None:
        self.data = resolve_data(data)
        self.imgsz = imgsz or default_imgsz(self.data)
        self.weights: Path | None = None  # the file self.model was last loaded from or saved to
        self.metrics: dict[str, float] = {}
        self.model = self._load(weights)

    def _load(self, weights: str | Path) -> nn.Module:
        text = str(weights)
        if text.endswith((".yaml", ".yml")):
            from ultralytics.nn.tasks import DetectionModel

            try:
                model = DetectionModel(text, nc=class_count(self.data), verbose=False)
            except FileNotFoundError as e:
                raise CompressError(f"model yaml not found: {text}; use e.g. yolov8n.yaml or a .pt file") from e
            model.names = _names(self.data)
            return model
        model = load_detection_model(weights)
        self.weights = Path(weights)
        return model

    def train(self, save_dir: str | Path = "weights/retrain.pt", **kwargs: Any) -> Path:
        """Train (or fine-tune) the current model with its exact architecture; returns the weights path.

        Keyword arguments go to Ultralytics (``epochs``, ``batch``, ``lr0``, ``device``, ``resume``, ...).
        """
        from yolo_compress.patches.trainers import ModuleKeepingTrainer

        return self._fit(ModuleKeepingTrainer, save_dir, kwargs)

    def _fit(self, trainer: type, save_dir: str | Path, kwargs: dict[str, Any]) -> Path:
        out = output_path(save_dir, source=self.weights)
        args = training_args(kwargs, self.data, kwargs.pop("imgsz", self.imgsz), name=out.stem)
        self.model, self.metrics = fit(self.model, trainer, out, args)
        self.weights = out
        return out

    def val(self, **kwargs: Any) -> dict[str, float]:
        """Validate the current model (float32) on the dataset's val split: precision, recall, mAP50, mAP50-95."""
        kwargs.setdefault("imgsz", self.imgsz)
        return validate(self.model, self.data, **kwargs)

    def info(self, imgsz: int | None = None) -> dict[str, float]:
        """Parameter count and GFLOPs of the current model at ``imgsz`` (default: the model's image size)."""
        return model_size(self.model, imgsz or self.imgsz)


def _names(data: Path) -> dict[int, str]:
    import yaml

    names = yaml.safe_load(data.read_text())["names"]
    return dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
