"""Render comparison rows: an aligned terminal table, Markdown, CSV and a PNG plot, written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from yolo_compress.checkpoint import atomic_write_bytes


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols.extend(c for c in r if c not in cols)
    return cols


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned plain-text table for the terminal."""
    cols = _columns(rows)
    cells = [cols] + [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
             for line in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def to_markdown(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    head = "| " + " | ".join(cols) + " |\n|" + "|".join("---" if c in ("name", "runtime") else "---:" for c in cols)
    return head + "|\n" + "".join("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |\n" for r in rows)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def report_paths(out_dir: str | Path, stem: str = "compare") -> dict[str, Path]:
    """The files :func:`write_report` writes."""
    return {ext: Path(out_dir) / f"{stem}.{ext}" for ext in ("md", "csv", "png")}


def write_report(rows: list[dict[str, Any]], out_dir: str | Path, stem: str = "compare") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.png`` (accuracy against GFLOPs) atomically."""
    paths = report_paths(out_dir, stem)
    atomic_write_bytes(paths["md"], to_markdown(rows).encode())
    atomic_write_bytes(paths["csv"], to_csv(rows).encode())
    atomic_write_bytes(paths["png"], _plot(rows))
    return paths


def _plot(rows: list[dict[str, Any]]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # the task's main metric: masks for segment, keypoints for pose, else boxes (detect, obb) or top-1
    metric = next((m for m in ("mask_mAP50_95", "pose_mAP50_95", "mAP50_95", "top1") if m in _columns(rows)), None)
    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = [r for r in rows if metric and r.get(metric) is not None and r.get("gflops") is not None]
    ax.scatter([r["gflops"] for r in points], [r[metric] for r in points], color="tab:blue", zorder=3)
    for r in points:
        ax.annotate(r["name"], (r["gflops"], r[metric]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("GFLOPs")
    ax.set_ylabel(metric or "")
    ax.set_title("accuracy vs compute per stage")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()
