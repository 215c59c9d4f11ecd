"""The pipeline's ``compare`` stage: one row per stage's weights, written as ``compare.md/.csv/.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_compress.report.compare import compare
from yolo_compress.report.render import report_paths, write_report
from yolo_compress.stage import Stage


class CompareStage(Stage):
    """Measure every stage's weights the same way (accuracy, size, interleaved latency)."""

    name = "compare"
    switch = True

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return dict(done)

    def outputs(self) -> dict[str, Path]:
        return report_paths(self.ctx.out)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "latency_rounds": self.config.run.latency_rounds}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        rows = compare(list(sources.values()), self.ctx.data, self.ctx.imgsz, names=list(sources),
                       rounds=self.config.run.latency_rounds)
        rows = [r.flat() for r in rows]
        write_report(rows, self.ctx.out)
        return {"rows": rows}
