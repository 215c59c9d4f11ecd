"""Accuracy moves the right way: training raises mAP, pruning drops it, fine-tuning brings it back.

One baseline is trained for the module (about two and a half minutes on 2 CPU cores); the stages reuse it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_compress import PruneModel
from yolo_compress.data.synthetic import make_shapes_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, dict[str, float]]:
    root = tmp_path_factory.mktemp("learn")
    data = make_shapes_dataset(root / "shapes", n_train=200, n_val=50, imgsz=160, seed=0)
    pm = PruneModel("yolov8n.yaml", data=data)
    before = pm.val()
    weights = pm.train(save_dir=root / "baseline.pt", epochs=15, batch=16, plots=False, project=root / "runs")
    return data, weights, {"before": before["mAP50-95"], "after": pm.val()["mAP50-95"]}


def test_training_from_scratch_raises_map(trained):
    _, _, m = trained
    assert m["before"] < 0.01
    assert m["after"] > 0.15, m


def test_pruning_drops_map_and_fine_tuning_recovers_it(trained, tmp_path):
    data, weights, m = trained
    pm = PruneModel(weights, data=data)
    result = pm.prune(factor=0.5, importance="l2", save_dir=tmp_path / "prune.pt")
    assert result.gflops_after < 0.5 * result.gflops_before
    pruned = pm.val()["mAP50-95"]
    assert pruned < 0.5 * m["after"]
    pm.train(save_dir=tmp_path / "tuned.pt", epochs=5, batch=16, plots=False)
    tuned = pm.val()["mAP50-95"]
    assert pm.info()["params"] == result.params_after
    assert tuned > pruned + 0.05, (pruned, tuned)
