"""Parent relations between nested boxes (a feature beside the pipeline): infer, draw, score against labels."""

from yolo_compress.relations.evaluate import evaluate_relations, predict_relations, split_dirs
from yolo_compress.relations.infer import (
    box_iou,
    find_parent_nodes,
    match_boxes,
    prf,
    relation_metrics,
    visualize_nodes,
)

__all__ = [
    "box_iou",
    "evaluate_relations",
    "find_parent_nodes",
    "match_boxes",
    "predict_relations",
    "prf",
    "relation_metrics",
    "split_dirs",
    "visualize_nodes",
]
