"""The comparison table: size, speed and accuracy of every stage's weights, measured the same way.

All rows are evaluated in float32 on the same split and image size (mAP for detectors, top-1/top-5 accuracy for
classifiers), latency is measured interleaved (:mod:`yolo_compress.report.measure`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import load_model
from yolo_compress.dataset import Dataset
from yolo_compress.errors import CompressError
from yolo_compress.models import model_size
from yolo_compress.report.measure import measure_latency, measure_onnx_latency, onnx_size
from yolo_compress.validation import validate

LOGGER = logging.getLogger(__name__)


@dataclass
class Row:
    """One weights file's numbers.

    Attributes:
        name: row label (the stage).
        params: parameter count.
        gflops: GFLOPs at the report's image size.
        accuracy: ``mAP50``, ``mAP50_95`` (detect) or ``top1``, ``top5`` (classify), plus ``rel_precision``,
            ``rel_recall``, ``rel_f1`` for datasets with parent labels.
        size_mb: file size.
        latency_ms: median batch-1 CPU latency.
        speed_up: latency of the first row / this row's.
        runtime: where the latency was measured.
    """

    name: str
    params: int
    gflops: float
    accuracy: dict[str, float] = field(default_factory=dict)
    size_mb: float = 0.0
    latency_ms: float = 0.0
    speed_up: float = 1.0
    runtime: str = "pytorch"

    def flat(self) -> dict[str, Any]:
        """One level of keys, as the table, the CSV and the manifest show them."""
        return {"name": self.name, "params": self.params, "gflops": self.gflops, **self.accuracy,
                "size_mb": self.size_mb, "latency_ms": self.latency_ms, "speed_up": self.speed_up,
                "runtime": self.runtime}


def _accuracy(metrics: dict[str, float]) -> dict[str, float]:
    if "top1" in metrics:
        return {"top1": metrics["top1"], "top5": metrics["top5"]}
    return {"mAP50": metrics["mAP50"], "mAP50_95": metrics["mAP50-95"]}


def compare(weights: list[str | Path], data: Dataset, imgsz: int, names: list[str] | None = None,
            relations: bool | None = None, rounds: int = 30) -> list[Row]:
    """Measure every checkpoint; ``speed_up`` is latency relative to the first row.

    ``.pt`` files are timed in PyTorch, ``.onnx`` files (an export, an INT8 model) in ONNX Runtime; an ONNX row's
    parameters and GFLOPs are read from its own graph (:func:`onnx_size`): no file but the ones given is loaded.

    Args:
        weights: checkpoint paths (``.pt`` or ``.onnx``), baseline first.
        data: dataset whose ``val`` split scores every row.
        imgsz: evaluation image size (GFLOPs and latency use it too).
        names: row labels (default: file stems).
        relations: add relation P/R/F1; ``None`` adds them when the dataset has parent labels.
        rounds: latency rounds per model.
    """
    paths = [Path(w) for w in weights]
    names = names or [p.stem for p in paths]
    onnx = [p for p in paths if p.suffix == ".onnx"]
    models = {p: load_model(p) for p in paths if p.suffix != ".onnx"}
    for p in paths:  # before any measuring: every row scored on the same data
        check_comparable(p, data, models.get(p))
    timed = dict(zip(models, measure_latency(list(models.values()), imgsz, rounds)))
    timed.update(zip(onnx, measure_onnx_latency(onnx, imgsz, rounds)) if onnx else {})
    latencies = [timed[p] for p in paths]
    if relations is None:
        relations = data.task == "detect" and _has_parent_labels(data.path)
    rows = []
    for name, path, latency in zip(names, paths, latencies):
        size = model_size(models[path], imgsz) if path in models else onnx_size(path, imgsz)
        accuracy = _accuracy(validate(path, data, imgsz))
        if relations:
            from ultralytics import YOLO

            from yolo_compress.relations import evaluate_relations

            rel = evaluate_relations(YOLO(path), data.path, imgsz=imgsz)
            accuracy.update(rel_precision=rel["precision"], rel_recall=rel["recall"], rel_f1=rel["f1"])
        rows.append(Row(name=name, params=int(size["params"]), gflops=size["gflops"], accuracy=accuracy,
                        size_mb=path.stat().st_size / 2**20, latency_ms=latency, speed_up=latencies[0] / latency,
                        runtime="onnxruntime" if path.suffix == ".onnx" else "pytorch"))
    return rows


def check_comparable(path: Path, data: Dataset, model: nn.Module | None = None) -> None:
    """A row's model must be of the dataset's task and classes (read from the loaded ``model`` of a ``.pt``, or from
    an ``.onnx`` file's Ultralytics metadata), so every row is scored on the same data.

    Raises:
        CompressError: another task or class count, or an ONNX file without Ultralytics metadata.
    """
    if model is None:
        import ast

        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if "task" not in meta or "names" not in meta:
            raise CompressError(f"{path} has no Ultralytics metadata (task, names); compare ONNX files exported by "
                                "yolo-compress or Ultralytics")
        task, nc = meta["task"], len(ast.literal_eval(meta["names"]))
    else:
        from yolo_compress.models import class_count, task_of

        task, nc = task_of(model), class_count(model)
    if task != data.task or nc != data.nc:
        raise CompressError(f"{path} is a {task} model of {nc} classes but {data.path} is {data.task} data with "
                            f"{data.nc}; compare models of one dataset (the first sets it, or pass --data)")


def _has_parent_labels(data: Path) -> bool:
    from yolo_compress.relations import split_dirs

    try:
        return split_dirs(data, "val")[1].is_dir()
    except CompressError:  # no parents/ folder: a plain detection set
        return False
