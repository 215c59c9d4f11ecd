"""Hand-computed checks of parent inference, relation scoring and drawing (``yolo_compress.relations``)."""

from __future__ import annotations

import numpy as np
import pytest

from yolo_compress.relations.infer import (
    LINK_COLOUR,
    PALETTE,
    find_parent_nodes,
    match_boxes,
    relation_metrics,
    visualize_nodes,
)

A = [0, 0, 100, 100]
B = [10, 10, 50, 50]  # inside A
C = [60, 60, 90, 90]  # inside A
D = [15, 15, 30, 30]  # inside B


class TestFindParentNodes:
    def test_empty_and_single(self):
        assert find_parent_nodes([]) == []
        assert find_parent_nodes(np.zeros((0, 4))) == []
        assert find_parent_nodes([A]) == [-1]

    def test_disjoint_boxes_have_no_parents(self):
        assert find_parent_nodes([[0, 0, 10, 10], [20, 20, 30, 30]]) == [-1, -1]

    def test_smallest_container_wins_in_any_order(self):
        assert find_parent_nodes([A, B, C, D]) == [-1, 0, 0, 1]
        assert find_parent_nodes([D, A, C, B]) == [3, -1, 1, 1]

    def test_tolerance(self):
        child = [1, 1, 6, 11]  # area 50, 45 of it inside [0, 0, 10, 10]: containment 0.9
        assert find_parent_nodes([[0, 0, 10, 10], child], tol=0.9) == [-1, 0]
        assert find_parent_nodes([[0, 0, 10, 10], child], tol=0.95) == [-1, -1]
        assert find_parent_nodes([[0, 0, 10, 10], [8, 0, 12, 10]], tol=0.9) == [-1, -1]  # half outside

    def test_equal_area_candidates_pick_lowest_index(self):
        child = [2, 2, 4, 4]
        # the two containers overlap 90% but have equal area, so neither is the other's parent
        assert find_parent_nodes([[0, 0, 10, 10], [1, 0, 11, 10], child]) == [-1, -1, 0]
        assert find_parent_nodes([child, [1, 0, 11, 10], [0, 0, 10, 10]]) == [1, -1, -1]

    def test_duplicates_are_siblings_not_a_cycle(self):
        assert find_parent_nodes([A, B, B]) == [-1, 0, 0]
        assert find_parent_nodes([B, B]) == [-1, -1]
        assert find_parent_nodes([A, A, B]) == [-1, -1, 0]

    def test_near_duplicate_with_larger_area_is_parent(self):
        # documented consequence of "strictly larger area": NMS normally removes such pairs
        assert find_parent_nodes([[0, 0, 10, 10], [0, 0, 10, 10.5]]) == [1, -1]

    def test_degenerate_box_has_no_parent(self):
        assert find_parent_nodes([A, [2, 2, 2, 5]]) == [-1, -1]

    def test_bad_input(self):
        with pytest.raises(ValueError, match="tol"):
            find_parent_nodes([A], tol=0)
        with pytest.raises(ValueError, match=r"\(N, 4\)"):
            find_parent_nodes([[0, 0, 1]])


class TestRelationMetrics:
    def test_both_empty_is_perfect(self):
        m = relation_metrics([], [], [], [])
        assert m == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 0, "n_pred": 0, "n_gt": 0}

    def test_no_predictions(self):
        m = relation_metrics([A, B], [], [-1, 0], [])
        assert (m["precision"], m["recall"], m["f1"], m["n_gt"], m["n_pred"]) == (0.0, 0.0, 0.0, 1, 0)

    def test_no_gt_parents(self):
        m = relation_metrics([A, C], [A, B], [-1, -1], [-1, 0])
        assert (m["precision"], m["recall"], m["tp"], m["n_pred"], m["n_gt"]) == (0.0, 0.0, 0, 1, 0)

    def test_no_parents_anywhere_is_perfect(self):
        m = relation_metrics([A], [A], [-1], [-1])
        assert m["f1"] == 1.0 and m["n_pred"] == m["n_gt"] == 0

    def test_perfect_in_shuffled_order(self):
        gt = [A, B, C, D]
        pred = [D, C, A, B]
        m = relation_metrics(gt, pred, [-1, 0, 0, 1], find_parent_nodes(pred))
        assert (m["tp"], m["n_pred"], m["n_gt"], m["f1"]) == (3, 3, 3, 1.0)

    def test_partial_match(self):
        # GT: B->A, C->A, D->B. Pred: A, B exact; D shifted to IoU 25/425; C missed.
        pred = [A, B, [25, 25, 40, 40]]
        assert find_parent_nodes(pred) == [-1, 0, 1]
        m = relation_metrics([A, B, C, D], pred, [-1, 0, 0, 1], [-1, 0, 1])
        assert (m["tp"], m["n_pred"], m["n_gt"]) == (1, 2, 3)
        assert m["precision"] == pytest.approx(0.5)
        assert m["recall"] == pytest.approx(1 / 3)
        assert m["f1"] == pytest.approx(0.4)

    def test_skipping_a_level_is_wrong(self):
        m = relation_metrics([A, B, D], [A, B, D], [-1, 0, 1], [-1, 0, 0])  # D's parent said to be A
        assert (m["tp"], m["n_pred"], m["n_gt"]) == (1, 2, 2)

    def test_duplicate_prediction_counts_once(self):
        m = relation_metrics([A, B], [A, B, B], [-1, 0], [-1, 0, 0])
        assert (m["tp"], m["n_pred"], m["n_gt"]) == (1, 2, 1)
        assert m["f1"] == pytest.approx(2 / 3)

    def test_iou_threshold_is_inclusive(self):
        half = [0, 0, 100, 50]  # IoU 0.5 with A
        m = relation_metrics([A, B], [half, B], [-1, 0], [-1, 0], iou=0.5)
        assert m["tp"] == 1
        assert relation_metrics([A, B], [half, B], [-1, 0], [-1, 0], iou=0.51)["tp"] == 0

    def test_class_aware_when_classes_given(self):
        args = ([A, B], [A, B], [-1, 0], [-1, 0])
        assert relation_metrics(*args, gt_classes=[0, 1], pred_classes=[0, 1])["tp"] == 1
        assert relation_metrics(*args, gt_classes=[0, 1], pred_classes=[0, 2])["tp"] == 0
        assert relation_metrics(*args)["tp"] == 1

    def test_bad_parent_ids(self):
        with pytest.raises(ValueError, match="entries for 2 boxes"):
            relation_metrics([A, B], [A, B], [-1], [-1, 0])
        with pytest.raises(ValueError, match=r"pred_parent_ids\[1\]=1"):
            relation_metrics([A, B], [A, B], [-1, 0], [-1, 1])


def test_match_boxes_greedy_by_iou_not_index():
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 6], [0, 0, 10, 9]], dtype=float)  # IoU 0.6 and 0.9
    assert match_boxes(gt, pred).tolist() == [-1, 0]


class TestVisualizeNodes:
    def test_draws_boxes_and_link_on_a_copy(self):
        image = np.zeros((64, 64, 3), np.uint8)
        out = visualize_nodes(image, [[4, 4, 60, 60], [20, 20, 40, 40]], [-1, 0])
        assert image.sum() == 0
        assert tuple(out[4, 30]) == PALETTE[0]  # top edge of the container
        assert tuple(out[40, 30]) == PALETTE[1]  # bottom edge of the child
        assert tuple(out[12, 12]) == LINK_COLOUR  # on the arrow from (20, 20) to (4, 4)
        assert out[30, 50].sum() == 0  # inside the container, away from lines
        assert out[30, 30].sum() == 0  # inside the child

    def test_no_link_without_parent(self):
        out = visualize_nodes(np.zeros((64, 64, 3), np.uint8), [[4, 4, 60, 60], [20, 20, 40, 40]], [-1, -1])
        assert out[12, 12].sum() == 0

    def test_grey_image_and_labels(self):
        out = visualize_nodes(np.zeros((64, 64), np.uint8), [[10, 20, 60, 60]], [-1], labels=["node"])
        assert out.shape == (64, 64, 3)
        assert out[10:19, 11:40].any()  # text above the box

    def test_bad_labels(self):
        with pytest.raises(ValueError, match="labels"):
            visualize_nodes(np.zeros((8, 8, 3), np.uint8), [[0, 0, 4, 4]], [-1], labels=["a", "b"])
