"""The end-to-end pipeline (crash, resume, force, manifest, bad input) and the seed's PruneModel usage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_compress import CompressError, PruneModel
from yolo_compress.config import load_config
from yolo_compress.pipeline import CompressionPipeline

TINY = {"imgsz": 64, "epochs": 1, "batch": 8, "factor": 0.5}


def test_pipeline_crash_resume_force_and_manifest(tiny_yaml, tmp_path, monkeypatch):
    cfg = load_config(data=str(tiny_yaml), out=str(tmp_path / "out"), loss="cwd", **TINY)

    def crash(self, weights, out, resume):
        raise RuntimeError("killed inside distillation")

    monkeypatch.setattr(CompressionPipeline, "_distill", crash)
    with pytest.raises(RuntimeError, match="killed inside distillation"):
        CompressionPipeline(cfg).run()
    stages = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]
    assert [s for s in stages if stages[s]["status"] == "done"] == ["baseline", "sparse", "prune", "finetune"]
    assert stages["distill"]["status"] == "running" and not (tmp_path / "out" / "distill.pt").exists()

    monkeypatch.undo()
    result = CompressionPipeline(cfg).run()
    assert result.skipped == ["baseline", "sparse", "prune", "finetune"]
    assert result.ran == ["distill", "compare"]

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]
    assert list(manifest) == ["baseline", "sparse", "prune", "finetune", "distill", "compare"]
    for name in ("baseline", "sparse", "prune", "finetune", "distill"):
        rec = manifest[name]
        assert rec["status"] == "done" and rec["seconds"] > 0
        assert len(rec["outputs"]["weights"]["sha256"]) == 64 and rec["inputs"]["data"]["sha256"]
        assert rec["params"] > 0 and rec["gflops"] > 0
    assert manifest["distill"]["inputs"]["teacher"] == manifest["sparse"]["outputs"]["weights"]
    assert manifest["distill"]["params"] == manifest["prune"]["params"] < 0.6 * manifest["baseline"]["params"]
    assert manifest["distill"]["gflops"] <= 0.5 * manifest["baseline"]["gflops"] * 1.05
    assert 0.0 <= manifest["distill"]["metrics"]["mAP50-95"] <= 1.0
    rows = manifest["compare"]["rows"]
    assert [r["name"] for r in rows] == ["baseline", "sparse", "prune", "finetune", "distill"]
    assert rows[0]["speed_up"] == 1.0 and all(r["latency_ms"] > 0 for r in rows)
    for ext in ("md", "csv", "png"):
        assert (tmp_path / "out" / f"compare.{ext}").stat().st_size > 0

    again = CompressionPipeline(cfg).run(force="compare")
    assert again.ran == ["compare"] and len(again.skipped) == 5

    # a changed stage input invalidates that stage and everything downstream of it
    sparse = tmp_path / "out" / "sparse.pt"
    sparse.write_bytes(sparse.read_bytes() + b"\0")
    pipeline = CompressionPipeline(cfg)
    weights = {"baseline": tmp_path / "out" / "baseline.pt"}
    assert not pipeline.manifest.is_done("sparse", pipeline._inputs("sparse", weights),
                                         pipeline._stage_config("sparse"))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"factr": 0.5}, "did you mean 'factor'"),
        ({"sr": "high"}, "'sr' must be float"),
        ({"batch": 0}, "batch must be >= 1"),
        ({"distill_from": "teacher"}, "distill_from must be"),
    ],
)
def test_bad_config_values(overrides, match):
    with pytest.raises(CompressError, match=match):
        load_config(**overrides)


def test_bad_config_file_and_paths(tmp_path, tiny_yaml):
    bad = tmp_path / "cfg.yaml"
    bad.write_text("epochs: 2\nsparce: false\n")
    with pytest.raises(CompressError, match="did you mean 'sparse'"):
        load_config(bad)
    with pytest.raises(CompressError, match="weights file not found"):
        CompressionPipeline(load_config(weights="missing.pt", data=str(tiny_yaml), out=str(tmp_path / "o")))
    with pytest.raises(CompressError, match="dataset yaml not found"):
        CompressionPipeline(load_config(data="missing.yaml", out=str(tmp_path / "o")))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CompressError, match="not writable"):
        CompressionPipeline(load_config(data=str(tiny_yaml), out=str(blocker / "out")))
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_seed_usage_sparse_prune_train_distill_compare_export(tiny_yaml, tmp_path):
    """The sequence a user of the original seed writes, end to end, on tiny settings."""
    base = PruneModel("yolov8n.yaml", data=tiny_yaml, imgsz=64)
    base_pt = base.train(save_dir="weights/base.pt", epochs=1, batch=8)

    model = PruneModel(base_pt, data=tiny_yaml)
    sparse_pt = model.sparse_train(save_dir="weights/sparse.pt", sr=1e-2, epochs=1, batch=8)
    assert Path("weights/sparse_bn_gamma_hist.png").read_bytes()[:4] == b"\x89PNG"
    before = model.info()
    result = model.prune(factor=0.5, save_dir="weights/prune.pt")
    assert result.params_after == model.info()["params"] < 0.6 * before["params"]
    retrain_pt = model.train(epochs=1, batch=8)
    assert retrain_pt == Path("weights/retrain.pt") and model.info()["params"] == result.params_after
    distill_pt = model.distill(sparse_pt, loss_type="mgd", epochs=1, batch=8)
    assert model.info()["params"] == result.params_after
    rows = model.compare([base_pt, "weights/prune.pt", retrain_pt, distill_pt], rounds=3)
    assert [r.name for r in rows] == ["base", "prune", "retrain", "distill"]
    assert rows[1].params == rows[3].params == result.params_after and rows[1].gflops < 0.6 * rows[0].gflops
    assert Path("weights/compare.md").read_text().count("\n") == 2 + len(rows)

    onnx_path = model.export(format="onnx")
    import onnxruntime as ort
    from ultralytics import YOLO

    x = torch.rand(1, 3, 64, 64)
    torch_model = YOLO(distill_pt).model.float().eval()
    with torch.no_grad():
        expected = torch_model(x)[0].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
