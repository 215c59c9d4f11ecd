"""The `compare` stage: measure every stage's weights the same way (accuracy, size, latency), render table and plot."""

from yolo_compress.report.compare import Row, compare
from yolo_compress.report.measure import measure_latency
from yolo_compress.report.render import format_table, to_csv, to_markdown, write_report

__all__ = ["Row", "compare", "format_table", "measure_latency", "to_csv", "to_markdown", "write_report"]
