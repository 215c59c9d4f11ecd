"""``PruneModel``: the Python face of yolo-compress. Each method is one stage; each stage writes a checkpoint."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from yolo_compress.checkpoint import load_detection_model, save_checkpoint
from yolo_compress.dataset import class_count, default_imgsz, resolve_data
from yolo_compress.errors import CompressError
from yolo_compress.measure import model_size, validate
from yolo_compress.training import fit, output_path, training_args

if TYPE_CHECKING:
    from yolo_compress.pruning import PruneResult
    from yolo_compress.report import Row

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
        self.run_dir: Path | None = None  # Ultralytics folder (results.csv, plots) of the last training stage
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

    def sparse_train(self, save_dir: str | Path = "weights/sparse.pt", sr: float = 5e-3,
                     sr_final: float | None = None, **kwargs: Any) -> Path:
        """Network slimming: train with an L1 pull (``sr``) on the prunable BatchNorm scales.

        ``sr_final`` makes ``sr`` decay linearly to it over the epochs. The histogram of the final scales is
        written next to the weights (``sparse_bn_gamma_hist.png`` for ``sparse.pt``). Other keywords go to
        Ultralytics.
        """
        from yolo_compress.patches.sparse import HISTOGRAM_NAME, SparseTrainer

        out = self._fit(SparseTrainer, save_dir, {"sr": sr, "sr_final": sr_final, **kwargs})
        histogram = self.run_dir / HISTOGRAM_NAME
        if histogram.is_file():
            shutil.copyfile(histogram, out.with_name(f"{out.stem}_{HISTOGRAM_NAME}"))
        return out

    def prune(self, factor: float | None = None, save_dir: str | Path = "weights/prune.pt", *,
              speed_up: float | None = None, importance: str = "bn_scale", global_pruning: bool = False,
              round_to: int | None = 8, iterative_steps: int | None = None) -> PruneResult:
        """Remove channels with DepGraph (Detect head kept) and save the pruned checkpoint.

        Args:
            factor: share of prunable channels to remove, in (0, 1); 0.5 when neither it nor ``speed_up`` is set.
            save_dir: where the pruned ``.pt`` goes.
            speed_up: instead of ``factor``, a GFLOPs ratio to reach (> 1), by iterative steps.
            importance: ``"bn_scale"`` (after sparse training), ``"l2"`` or ``"group_norm"``.
            global_pruning: rank channels across layers rather than the same share per layer.
            round_to: keep channel counts multiples of this.
            iterative_steps: pruning steps (default: 1 for ``factor``; for ``speed_up``, as many as the search needs).

        Returns:
            Params and GFLOPs (at the model's image size) before and after, and the time taken.
        """
        from yolo_compress.pruning import prune_detector

        if factor is None and speed_up is None:
            factor = 0.5
        out = output_path(save_dir, source=self.weights)
        pruned, result = prune_detector(self.model, self.imgsz, factor=factor, speed_up=speed_up,
                                        importance=importance, global_pruning=global_pruning, round_to=round_to,
                                        iterative_steps=iterative_steps)
        save_checkpoint(pruned, out, prune=result.to_dict())
        self.model, self.weights = pruned, out
        return result

    def distill(self, t_weight: str | Path, loss_type: str = "cwd", save_dir: str | Path = "weights/distill.pt",
                **kwargs: Any) -> Path:
        """Fine-tune the current (pruned) model with a teacher: ``"cwd"``, ``"mgd"``, ``"kd"``, ``"cwd+kd"``, ...

        Distillation settings (``distill_layers``, ``distill_weight``, ``kd_tau``, ``distill_schedule``, ...) are
        those of ``yolo_compress.patches.distill.DistillationTrainer``; the rest goes to Ultralytics.
        """
        from yolo_compress.patches.distill import DistillationTrainer

        return self._fit(DistillationTrainer, save_dir, {"teacher": str(t_weight), "distill_loss": loss_type,
                                                         **kwargs})

    def compare(self, weights: list[str | Path], out_dir: str | Path = "weights", names: list[str] | None = None,
                rounds: int = 30) -> list[Row]:
        """Params, GFLOPs, mAP50, mAP50-95, size and CPU latency of each checkpoint (first row = reference).

        Writes ``compare.md``, ``compare.csv`` and ``compare.png`` to ``out_dir`` and logs the table.
        """
        from yolo_compress.report import compare, format_table, write_report

        missing = [str(w) for w in weights if not Path(w).is_file()]
        if missing:
            raise CompressError(f"weights not found: {missing}; pass existing .pt files")
        rows = compare(weights, self.data, self.imgsz, names=names, rounds=rounds)
        write_report(rows, out_dir)
        LOGGER.info("\n%s", format_table(rows))
        return rows

    def export(self, format: str = "onnx", **kwargs: Any) -> Path:
        """Export the current weights with Ultralytics (default ONNX at the model's image size); returns the file."""
        if self.weights is None:
            raise CompressError("nothing saved to export yet; train or prune first (or load a .pt)")
        from ultralytics import YOLO

        kwargs.setdefault("imgsz", self.imgsz)
        return Path(YOLO(self.weights).export(format=format, **kwargs))

    def predict(self, source: str | Path, save: bool = True, save_dir: str | Path = "runs/predict",
                **kwargs: Any) -> list[dict[str, Any]]:
        """Detect boxes, infer each box's parent (smallest containing box) and draw both when ``save``.

        Returns one dict per image: ``path``, ``boxes`` (xyxy pixels), ``classes``, ``scores``, ``parent_ids``.
        """
        from yolo_compress.relation_eval import predict_relations

        kwargs.setdefault("imgsz", self.imgsz)
        with self._as_yolo() as yolo:
            return predict_relations(yolo, source, save_dir=save_dir if save else None, **kwargs)

    def evaluate(self, data_path: str | Path | None = None, **kwargs: Any) -> dict[str, float]:
        """Relation precision, recall and F1 on ``images/val`` + ``parents/val`` (default: the model's dataset)."""
        from yolo_compress.relation_eval import evaluate_relations

        kwargs.setdefault("imgsz", self.imgsz)
        with self._as_yolo() as yolo:
            return evaluate_relations(yolo, data_path or self.data, **kwargs)

    @contextlib.contextmanager
    def _as_yolo(self) -> Iterator[Any]:
        """An Ultralytics ``YOLO`` wrapping the current model, through a temporary checkpoint."""
        from ultralytics import YOLO

        with tempfile.TemporaryDirectory() as tmp:
            yield YOLO(save_checkpoint(self.model, Path(tmp) / "model.pt"))

    def _fit(self, trainer: type, save_dir: str | Path, kwargs: dict[str, Any]) -> Path:
        out = output_path(save_dir, source=self.weights)
        args = training_args(kwargs, self.data, kwargs.pop("imgsz", self.imgsz), name=out.stem)
        self.model, self.metrics, self.run_dir = fit(self.model, trainer, out, args)
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
