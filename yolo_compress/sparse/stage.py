"""Run sparse training: from ``PruneModel.sparse_train`` and as the pipeline's ``sparse`` stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.checkpoint import atomic_write_bytes, load_model
from yolo_compress.dataset import Dataset
from yolo_compress.sparse.settings import SparseSettings
from yolo_compress.stage import TrainingStage
from yolo_compress.training import Fit, fit


def sparse_train(model: nn.Module, data: Dataset, out: Path, settings: SparseSettings, args: dict[str, Any],
                 resume: bool = False, require_resume: bool = False) -> Fit:
    """Train ``model`` with the proximal L1 pull; save its final (sparsest) weights to ``out``.

    The final epoch is kept, not the best-validating one: the pull grows over the run, so the best epoch is
    usually an early, barely sparse one. The |gamma| histogram is copied next to ``out``
    (``sparse.pt`` -> ``sparse_bn_gamma_hist.png``).
    """
    from yolo_compress.patches.sparse import HISTOGRAM_NAME, TRAINERS

    result = fit(model, TRAINERS[data.task], out, data, {**args, **settings.to_dict()}, resume=resume,
                 take="last", require_resume=require_resume)
    histogram = result.run_dir / HISTOGRAM_NAME
    if histogram.is_file():
        atomic_write_bytes(out.with_name(f"{out.stem}_{HISTOGRAM_NAME}"), histogram.read_bytes())
    return result


class SparseStage(TrainingStage):
    """Sparse-train the baseline; its output is pruned and, by default, teaches the pruned model."""

    name = "sparse"

    def enabled(self) -> bool:
        return self.ctx.config.run.sparse

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": done["baseline"]}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **self.ctx.config.sparse_settings.to_dict()}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        out = self.outputs()["weights"]
        result = sparse_train(load_model(sources["weights"]), self.ctx.data, out, self.ctx.config.sparse_settings,
                              self.ultralytics_args(), resume=resume)
        return {"metrics": result.metrics}
