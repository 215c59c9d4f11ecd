"""The comparison table: size, speed and accuracy of every stage's weights, measured the same way.

All rows are evaluated in float32 on the same split and image size. CPU latency is measured side by side:
each round times one batch-1 forward of every model in turn, so a busy machine slows all rows alike, and
the median over rounds is reported.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from yolo_compress.checkpoint import atomic_write_bytes, load_detection_model
from yolo_compress.measure import model_size, validate

LOGGER = logging.getLogger(__name__)


@dataclass
class Row:
    """One weights file's numbers; relation columns stay ``None`` for datasets without parent labels."""

    name: str
    params: int
    gflops: float
    mAP50: float
    mAP50_95: float
    size_mb: float
    latency_ms: float
    speed_up: float = 1.0
    rel_precision: float | None = None
    rel_recall: float | None = None
    rel_f1: float | None = None


def measure_latency(models: list[nn.Module], imgsz: int, rounds: int = 30, warmup: int = 3) -> list[float]:
    """Median CPU milliseconds per batch-1 forward of each model (fused, eval, float32), timed interleaved."""
    fused = [deepcopy(m).float().cpu().eval().fuse(verbose=False) if hasattr(m, "fuse") else m for m in models]
    x = torch.rand(1, 3, imgsz, imgsz)
    times: list[list[float]] = [[] for _ in fused]
    with torch.inference_mode():
        for r in range(warmup + rounds):
            for i, m in enumerate(fused):
                t0 = time.perf_counter()
                m(x)
                if r >= warmup:
                    times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def compare(weights: list[str | Path], data: str | Path, imgsz: int, names: list[str] | None = None,
            relations: bool | None = None, rounds: int = 30) -> list[Row]:
    """Measure every checkpoint; ``speed_up`` is latency relative to the first row.

    Args:
        weights: checkpoint paths, baseline first.
        data: dataset yaml whose ``val`` split scores every row.
        imgsz: evaluation image size (GFLOPs and latency use it too).
        names: row labels (default: file stems).
        relations: add relation P/R/F1 columns; ``None`` adds them when the dataset has parent labels.
        rounds: latency rounds per model.
    """
    paths = [Path(w) for w in weights]
    names = names or [p.stem for p in paths]
    models = [load_detection_model(p) for p in paths]
    latencies = measure_latency(models, imgsz, rounds)
    if relations is None:
        relations = _has_parent_labels(data)
    rows = []
    for name, path, model, latency in zip(names, paths, models, latencies):
        size, metrics = model_size(model, imgsz), validate(path, data, imgsz)
        row = Row(name=name, params=int(size["params"]), gflops=size["gflops"], mAP50=metrics["mAP50"],
                  mAP50_95=metrics["mAP50-95"], size_mb=path.stat().st_size / 2**20, latency_ms=latency,
                  speed_up=latencies[0] / latency)
        if relations:
            from ultralytics import YOLO

            from yolo_compress.relation_eval import evaluate_relations

            rel = evaluate_relations(YOLO(path), data, imgsz=imgsz)
            row.rel_precision, row.rel_recall, row.rel_f1 = rel["precision"], rel["recall"], rel["f1"]
        rows.append(row)
    return rows


def _has_parent_labels(data: str | Path) -> bool:
    from yolo_compress.relation_eval import split_dirs

    try:
        return split_dirs(data, "val")[1].is_dir()
    except Exception:  # any layout split_dirs cannot read simply has no relation labels
        return False


def _columns(rows: list[Row]) -> list[str]:
    cols = [f.name for f in fields(Row)]
    return cols if any(r.rel_f1 is not None for r in rows) else [c for c in cols if not c.startswith("rel_")]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_table(rows: list[Row]) -> str:
    """Aligned plain-text table for the terminal."""
    cols = _columns(rows)
    cells = [cols] + [[_cell(getattr(r, c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
             for line in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def to_markdown(rows: list[Row]) -> str:
    cols = _columns(rows)
    head = "| " + " | ".join(cols) + " |\n|" + "|".join("---" if c == "name" else "---:" for c in cols) + "|\n"
    return head + "".join("| " + " | ".join(_cell(getattr(r, c)) for c in cols) + " |\n" for r in rows)


def write_report(rows: list[Row], out_dir: str | Path, stem: str = "compare") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.png`` (mAP50-95 against GFLOPs) atomically."""
    out_dir = Path(out_dir)
    cols = _columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows({c: asdict(r)[c] for c in cols} for r in rows)
    paths = {
        "md": atomic_write_bytes(out_dir / f"{stem}.md", to_markdown(rows).encode()),
        "csv": atomic_write_bytes(out_dir / f"{stem}.csv", buf.getvalue().encode()),
        "png": atomic_write_bytes(out_dir / f"{stem}.png", _plot(rows)),
    }
    return paths


def _plot(rows: list[Row]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([r.gflops for r in rows], [r.mAP50_95 for r in rows], color="tab:blue", zorder=3)
    for r in rows:
        ax.annotate(r.name, (r.gflops, r.mAP50_95), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("GFLOPs")
    ax.set_ylabel("mAP50-95")
    ax.set_title("accuracy vs compute per stage")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
