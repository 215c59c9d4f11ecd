"""The comparison table: size, speed and accuracy of every stage's weights, measured the same way.

All rows are evaluated in float32 on the same split and image size (mAP for detectors, top-1/top-5 accuracy for
classifiers), latency is measured interleaved on one thread count for every runtime
(:mod:`yolo_compress.report.measure`).
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
from yolo_compress.report.measure import (
    Runner,
    check_load,
    default_threads,
    onnx_runner,
    onnx_size,
    openvino_runner,
    openvino_size,
    pytorch_runner,
    time_interleaved,
)
from yolo_compress.validation import validate

LOGGER = logging.getLogger(__name__)


@dataclass
class Row:
    """One weights file's numbers.

    Attributes:
        name: row label (the stage).
        params: parameter count.
        gflops: GFLOPs at the report's image size.
        accuracy: ``mAP50``, ``mAP50_95`` (box; with ``mask_`` or ``pose_`` twins for segment and pose) or ``top1``,
            ``top5`` (classify), plus ``rel_precision``, ``rel_recall``, ``rel_f1`` for datasets with parent labels.
        size_mb: file size.
        latency_ms: median batch-1 CPU latency.
        speed_up: latency of the first row / this row's.
        runtime: where the latency was measured (:func:`runtime_of`).
        threads: the thread count every runtime was timed with.
    """

    name: str
    params: int
    gflops: float
    accuracy: dict[str, float] = field(default_factory=dict)
    size_mb: float = 0.0
    latency_ms: float = 0.0
    speed_up: float = 1.0
    runtime: str = "pytorch"
    threads: int | None = None

    def flat(self) -> dict[str, Any]:
        """One level of keys, as the table, the CSV and the manifest show them."""
        return {"name": self.name, "params": self.params, "gflops": self.gflops, **self.accuracy,
                "size_mb": self.size_mb, "latency_ms": self.latency_ms, "speed_up": self.speed_up,
                "runtime": self.runtime, "threads": self.threads}


def _accuracy(metrics: dict[str, float]) -> dict[str, float]:
    """The report's accuracy columns: top-1/5, or box mAP and, for segment and pose, mask or keypoint (OKS) mAP."""
    if "top1" in metrics:
        return {"top1": metrics["top1"], "top5": metrics["top5"]}
    out = {}
    for kind in ("", "mask ", "pose "):
        if f"{kind}mAP50-95" in metrics:
            prefix = kind.replace(" ", "_")
            out.update({f"{prefix}mAP50": metrics[f"{kind}mAP50"], f"{prefix}mAP50_95": metrics[f"{kind}mAP50-95"]})
    return out


def runtime_of(path: Path) -> str:
    """``pytorch`` for a ``.pt``; ``onnxruntime`` / ``openvino`` for an export, ``-int8`` added for a quantized one
    (read from its own graph: quantize nodes in ONNX, ``FakeQuantize`` ops in OpenVINO)."""
    from yolo_compress.deploy.openvino import is_openvino, model_xml

    if is_openvino(path):
        return "openvino-int8" if 'type="FakeQuantize"' in model_xml(path).read_text() else "openvino"
    if path.suffix == ".onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
        return "onnxruntime-int8" if any("Quantize" in op or op.endswith("Integer") for op in ops) else "onnxruntime"
    return "pytorch"


def row_names(paths: list[Path]) -> list[str]:
    """Row labels: file stems; where stems clash, parent folders prefixed until the labels differ (``w1/t``,
    ``out/t``), the suffix kept for files that differ only in it (``w/t.pt``, ``w/t.onnx``), and a count added to a
    file given twice."""
    full = [p.resolve() for p in paths]
    keys = [[*p.parent.parts[1:], p.name if any(q != p and (q.parent, q.stem) == (p.parent, p.stem) for q in full)
             else p.stem] for p in full]

    def clashes(labels: list[str], i: int) -> bool:  # another file has this label
        return any(x == labels[i] and full[j] != full[i] for j, x in enumerate(labels))

    stems = [p.stem for p in paths]
    depth = [2 if clashes(stems, i) else 1 for i in range(len(paths))]
    while True:
        labels = ["/".join(k[-d:]) for k, d in zip(keys, depth)]
        grow = [i for i in range(len(paths)) if clashes(labels, i) and depth[i] < len(keys[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    return [x if x not in labels[:i] else f"{x} ({labels[:i].count(x) + 1})" for i, x in enumerate(labels)]


def _runner(path: Path, model: nn.Module | None, runtime: str, imgsz: int, threads: int) -> Runner:
    if model is not None:
        return pytorch_runner(model, imgsz)
    if runtime.startswith("openvino"):
        return openvino_runner(path, imgsz, threads)
    return onnx_runner(path, imgsz, threads)


def _graph_size(path: Path, model: nn.Module | None, runtime: str, imgsz: int) -> dict[str, float]:
    if model is not None:
        return model_size(model, imgsz)
    return openvino_size(path, imgsz) if runtime.startswith("openvino") else onnx_size(path, imgsz)


def compare(weights: list[str | Path], data: Dataset, imgsz: int, names: list[str] | None = None,
            relations: bool | None = None, rounds: int = 30, threads: int | None = None) -> list[Row]:
    """Measure every model; ``speed_up`` is latency relative to the first row.

    ``.pt`` files are timed in PyTorch, ``.onnx`` files (an export, an INT8 model) in ONNX Runtime, OpenVINO
    folders (``*_openvino_model``) in OpenVINO, all interleaved in one loop on the same ``threads``; a machine busy
    beyond the cores left free is named in a warning (:func:`~yolo_compress.report.measure.check_load`). An
    export's parameters and GFLOPs are read from its own graph (:func:`onnx_size`, :func:`openvino_size`): no file
    but the ones given is loaded.

    Args:
        weights: ``.pt`` / ``.onnx`` files or OpenVINO folders, baseline first.
        data: dataset whose ``val`` split scores every row.
        imgsz: evaluation image size (GFLOPs and latency use it too).
        names: row labels (default: :func:`row_names`).
        relations: add relation P/R/F1; ``None`` adds them when the dataset has parent labels.
        rounds: latency rounds per model.
        threads: threads of every runtime (default: torch's count, all cores once yolo-compress ran).
    """
    paths = [Path(w) for w in weights]
    names = names or row_names(paths)
    threads = threads or default_threads()
    runtimes = {p: runtime_of(p) for p in paths}
    if any(r.startswith("openvino") for r in runtimes.values()):
        from yolo_compress.deploy.openvino import check_openvino

        check_openvino()
    models = {p: load_model(p) for p in paths if runtimes[p] == "pytorch"}
    for p in paths:  # before any measuring: every row scored on the same data
        check_comparable(p, data, models.get(p))
    runners = [_runner(p, models.get(p), runtimes[p], imgsz, threads) for p in paths]
    check_load(threads)
    latencies = time_interleaved(runners, rounds, threads=threads)
    del runners
    if relations is None:
        relations = data.task == "detect" and _has_parent_labels(data.path)
    rows = []
    for name, path, latency in zip(names, paths, latencies):
        size = _graph_size(path, models.get(path), runtimes[path], imgsz)
        accuracy = _accuracy(validate(path, data, imgsz))
        if relations:
            from ultralytics import YOLO

            from yolo_compress.relations import evaluate_relations

            rel = evaluate_relations(YOLO(path), data.path, imgsz=imgsz)
            accuracy.update(rel_precision=rel["precision"], rel_recall=rel["recall"], rel_f1=rel["f1"])
        rows.append(Row(name=name, params=int(size["params"]), gflops=size["gflops"], accuracy=accuracy,
                        size_mb=_size_mb(path), latency_ms=latency, speed_up=latencies[0] / latency,
                        runtime=runtimes[path], threads=threads))
    return rows


def compare_files(weights: list[str | Path], data: Dataset | str | Path | None = None, imgsz: int | None = None,
                  out_dir: str | Path = "weights", names: list[str] | None = None, rounds: int = 30,
                  threads: int | None = None) -> list[Row]:
    """:func:`compare` of files in any order of ``.pt``, ``.onnx`` and OpenVINO folders, written as
    ``compare.md/.csv/.png`` in ``out_dir``. The first row sets the task, from its checkpoint or an export's
    Ultralytics metadata (an export is no checkpoint); with ``data`` ``None``, a first checkpoint's own data and
    image size when that data is here, else the built-in set of the task.

    Raises:
        CompressError: a missing file, an unwritable ``out_dir``, a bad ``imgsz``, rows of another task or classes.
    """
    from yolo_compress.dataset import resolve_data
    from yolo_compress.deploy.openvino import is_openvino
    from yolo_compress.preflight import check_imgsz, check_writable
    from yolo_compress.report.render import write_report
    from yolo_compress.workspace import checkpoint_defaults

    paths = [Path(w) for w in weights]
    missing = [str(p) for p in paths if not (p.is_file() or is_openvino(p))]
    if missing:
        raise CompressError(f"weights not found: {missing}; pass existing .pt / .onnx files or OpenVINO folders")
    if imgsz is not None:
        check_imgsz(imgsz)
    out = check_writable(Path(out_dir).expanduser().absolute(), "pass --out (out_dir in Python) in a writable folder")
    if data is None and runtime_of(paths[0]) == "pytorch":  # the first checkpoint's own data, as Ultralytics does
        data, trained_imgsz = checkpoint_defaults(load_model(paths[0]), f"weights {paths[0]}")
        imgsz = imgsz or trained_imgsz
    if not isinstance(data, Dataset):
        data = resolve_data(data, _task_of_file(paths[0]))
    rows = compare(paths, data, imgsz or data.imgsz, names=names, rounds=rounds, threads=threads)
    write_report([r.flat() for r in rows], out)
    return rows


def _task_of_file(path: Path) -> str:
    if runtime_of(path) == "pytorch":
        from yolo_compress.models import task_of

        return task_of(load_model(path))
    return export_meta(path)[0]


def _size_mb(path: Path) -> float:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files) / 2**20


def export_meta(path: Path) -> tuple[str, int]:
    """Task and class count of an export, from Ultralytics' metadata (an OpenVINO folder's ``metadata.yaml``, an
    ONNX file's metadata properties).

    Raises:
        CompressError: an export without that metadata.
    """
    if path.is_dir():
        import yaml

        meta_file = path / "metadata.yaml"
        meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
        if not isinstance(meta, dict) or "task" not in meta or "names" not in meta:
            raise CompressError(f"{path} has no Ultralytics metadata.yaml (task, names); compare OpenVINO folders "
                                "exported by yolo-compress or Ultralytics")
        return meta["task"], len(meta["names"])
    import ast

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "task" not in meta or "names" not in meta:
        raise CompressError(f"{path} has no Ultralytics metadata (task, names); compare ONNX files exported by "
                            "yolo-compress or Ultralytics")
    return meta["task"], len(ast.literal_eval(meta["names"]))


def check_comparable(path: Path, data: Dataset, model: nn.Module | None = None) -> None:
    """A row's model must be of the dataset's task and classes (read from the loaded ``model`` of a ``.pt``, or from
    an export's Ultralytics metadata), so every row is scored on the same data.

    Raises:
        CompressError: another task or class count, or an export without Ultralytics metadata.
    """
    if model is None:
        task, nc = export_meta(path)
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
