"""Accuracy moves the right way: training raises mAP, pruning drops it, fine-tuning brings it back near the baseline.

From scratch: one YOLOv8n trained 15 epochs (about two and a half minutes on 2 CPU cores). Recovery: the shipped
baseline (trained on this very data: the built-in generator with its default seed), pruned to half the GFLOPs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_compress import PruneModel
from yolo_compress.data import SHIPPED_BASELINE
from yolo_compress.data.synthetic import make_shapes_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("learn") / "shapes", n_train=200, n_val=50, imgsz=160, seed=0)


@pytest.mark.slow
def test_training_from_scratch_raises_map(shapes, tmp_path):
    pm = PruneModel("yolov8n.yaml", data=shapes)
    before = pm.val()["mAP50-95"]
    pm.train(save_dir=tmp_path / "baseline.pt", epochs=15, batch=16, plots=False)
    after = pm.val()["mAP50-95"]
    assert before < 0.01 and after > 0.15, (before, after)


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_BASELINE.is_file(), reason="needs the shipped baseline (source checkout)")
def test_pruning_drops_map_and_fine_tuning_recovers_most_of_the_baseline(shapes, tmp_path):
    pm = PruneModel(SHIPPED_BASELINE, data=shapes)
    baseline = pm.val()["mAP50-95"]
    assert baseline > 0.75  # the shipped model is converged on this data
    result = pm.prune(save_dir=tmp_path / "prune.pt", speed_up=2.0)
    assert result.importance == "group_norm" and result.gflops_after <= 0.5 * result.gflops_before
    pruned = pm.val()["mAP50-95"]
    assert pruned < 0.2 * baseline
    pm.train(save_dir=tmp_path / "tuned.pt", epochs=5, batch=16, plots=False)
    tuned = pm.val()["mAP50-95"]
    assert pm.info()["params"] == result.params_after
    assert tuned > 0.6 * baseline, (baseline, pruned, tuned)
