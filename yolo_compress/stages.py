"""The pipeline's stages, in order: the one list that config keys, CLI flags, the manifest and the run derive from.

Adding a stage means one package (its settings, maths and ``Stage`` subclass) and one entry here.
"""

from __future__ import annotations

from yolo_compress.deploy.stage import ExportStage, QuantizeStage
from yolo_compress.distill.stage import DistillStage
from yolo_compress.finetune.stage import BaselineStage, FinetuneStage
from yolo_compress.prune.stage import PruneStage
from yolo_compress.report.stage import CompareStage
from yolo_compress.sparse.stage import SparseStage
from yolo_compress.stage import Stage

STAGES: tuple[type[Stage], ...] = (BaselineStage, SparseStage, PruneStage, FinetuneStage, DistillStage,
                                   ExportStage, QuantizeStage, CompareStage)
