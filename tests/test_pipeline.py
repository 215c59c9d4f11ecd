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

STAGES = ["baseline", "sparse", "prune", "finetune", "distill", "compare"]


def test_pipeline_crash_resume_force_and_manifest(tiny_yaml, tmp_path, monkeypatch):
    from yolo_compress.patches.trainers import ModuleKeepingTrainer

    out = tmp_path / "out"
    cfg = load_config(data=str(tiny_yaml), out=str(out), loss="cwd", imgsz=64, batch=8, factor=0.5, sparse=True,
                      reference=True, baseline_epochs=1, sparse_epochs=1, finetune_epochs=1, distill_epochs=2)
    original = ModuleKeepingTrainer.save_model

    def save_then_crash(self):  # killed right after distillation's first epoch was saved
        original(self)
        if Path(self.save_dir).name == "distill":
            raise RuntimeError("killed inside distillation")

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", save_then_crash)
    with pytest.raises(RuntimeError, match="killed inside distillation"):
        CompressionPipeline(cfg).run()
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert [s for s in stages if stages[s]["status"] == "done"] == ["baseline", "sparse", "prune", "finetune"]
    assert stages["distill"]["status"] == "running" and not (out / "distill.pt").exists()
    assert (out / "runs" / "distill" / "weights" / "last.pt").is_file()

    monkeypatch.undo()
    saved = []

    def count_saves(self):
        saved.append(self.epoch)
        return original(self)

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", count_saves)
    result = CompressionPipeline(cfg).run()
    monkeypatch.undo()
    assert result.skipped == ["baseline", "sparse", "prune", "finetune"] and result.ran == ["distill", "compare"]
    assert saved == [1], "distillation must resume at epoch 2, not start over"
    epochs = [r.split(",")[0] for r in (out / "runs" / "distill" / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]

    manifest = json.loads((out / "manifest.json").read_text())["stages"]
    assert list(manifest) == STAGES
    for name in STAGES[:-1]:
        rec = manifest[name]
        assert rec["status"] == "done" and rec["seconds"] > 0
        assert len(rec["outputs"]["weights"]["sha256"]) == 64 and rec["sources"]["data"]["sha256"]
        assert rec["params"] > 0 and rec["gflops"] > 0
    assert manifest["distill"]["sources"]["teacher"] == manifest["baseline"]["outputs"]["weights"]
    assert manifest["distill"]["params"] == manifest["prune"]["params"] < 0.6 * manifest["baseline"]["params"]
    assert manifest["prune"]["prune"]["importance"] == "bn_scale"  # auto: the sparse model has freed channels
    rows = manifest["compare"]["rows"]
    assert [r["name"] for r in rows] == STAGES[:-1]
    assert rows[2]["gflops"] < 0.6 * rows[0]["gflops"] and all(r["latency_ms"] > 0 for r in rows)
    for ext in ("md", "csv", "png"):
        assert (out / f"compare.{ext}").stat().st_size > 0

    assert CompressionPipeline(cfg).run(force="compare").ran == ["compare"]
    assert CompressionPipeline(cfg).run(force="prune").ran == ["prune", "finetune", "distill", "compare"]

    # a changed stage output invalidates that stage and everything downstream of it
    sparse = out / "sparse.pt"
    sparse.write_bytes(sparse.read_bytes() + b"\0")
    again = CompressionPipeline(cfg).run()
    assert again.skipped == ["baseline"] and again.ran == STAGES[1:]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"factr": 0.5}, "did you mean 'factor'"),
        ({"zero_at": "high"}, "'zero_at' must be float"),
        ({"batch": 0}, "batch=0: must be >= 1"),
        ({"distill_from": "teacher"}, "distill_from='teacher': must be prune or finetune"),
        ({"sr": 0.01}, "unknown config key 'sr'"),
        ({"train_args": {"lr00": 0.01}}, "'lr00' is not an Ultralytics training setting; did you mean 'lr0'"),
        ({"train_args": {"recovery_lr": 0.01}}, r"'recovery_lr' is a yolo-compress setting.*top level of the config "
                                                r"\(recovery_lr: 0.01\)"),
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
    with pytest.raises(CompressError, match="file not found"):
        CompressionPipeline(load_config(weights="missing.pt", data=str(tiny_yaml), out=str(tmp_path / "o")))
    with pytest.raises(CompressError, match="dataset yaml not found"):
        CompressionPipeline(load_config(data="missing.yaml", out=str(tmp_path / "o")))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CompressError, match="cannot be made: .*file is a file"):
        CompressionPipeline(load_config(data=str(tiny_yaml), out=str(blocker / "out")))
    assert not (tmp_path / "o").exists()  # failed runs create nothing


def test_seed_usage_sparse_prune_train_distill_compare_export(tiny_yaml, tmp_path):
    """The sequence a user of the original seed writes, end to end, on tiny settings."""
    base = PruneModel("yolov8n.yaml", data=tiny_yaml, imgsz=64)
    base_pt = base.train(save_dir="weights/base.pt", epochs=1, batch=8)

    model = PruneModel(base_pt, data=tiny_yaml)
    assert model.sparse_train(save_dir="weights/sparse.pt", epochs=1, batch=8) == Path("weights/sparse.pt")
    assert Path("weights/sparse_bn_gamma_hist.png").read_bytes()[:4] == b"\x89PNG"
    before = model.info()
    result = model.prune(speed_up=2.0, save_dir="weights/prune.pt")
    assert result.params_after == model.info()["params"] < 0.6 * before["params"]
    retrain_pt = model.train(epochs=1, batch=8)
    assert retrain_pt == Path("weights/retrain.pt") and model.info()["params"] == result.params_after
    distill_pt = model.distill(base_pt, loss="mgd", epochs=1, batch=8)
    assert model.info()["params"] == result.params_after
    rows = model.compare([base_pt, "weights/prune.pt", retrain_pt, distill_pt], rounds=3)
    assert [r.name for r in rows] == ["base", "prune", "retrain", "distill"]
    assert rows[1].params == rows[3].params == result.params_after and rows[1].gflops < 0.6 * rows[0].gflops
    assert Path("weights/compare.md").read_text().count("\n") == 2 + len(rows)

    onnx_path = model.export(format="onnx")
    assert onnx_path == Path("weights/distill.onnx").resolve() or onnx_path == Path("weights/distill.onnx")
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


def test_stage_wiring_distill_from_and_export(tiny_yaml, tmp_path):
    """Which files each stage reads and writes, as the pipeline passes them (no training)."""
    from yolo_compress.deploy.stage import ExportStage, QuantizeStage
    from yolo_compress.distill.stage import DistillStage
    from yolo_compress.plan import make_plan
    from yolo_compress.stage import RunContext
    from yolo_compress.stages import STAGES as PIPELINE_STAGES

    done = {s: tmp_path / f"{s}.pt" for s in ("baseline", "sparse", "prune", "finetune", "distill")}

    def ctx(**kw):
        cfg = load_config(data=str(tiny_yaml), out=str(tmp_path), **kw)
        from yolo_compress.dataset import resolve_data

        return RunContext(cfg, make_plan(PIPELINE_STAGES, cfg), tmp_path, resolve_data(tiny_yaml), 64)

    assert DistillStage(ctx()).sources(done) == {"weights": done["prune"], "teacher": done["baseline"]}
    assert DistillStage(ctx(distill_from="finetune")).sources(done)["weights"] == done["finetune"]
    assert DistillStage(ctx(sparse=False)).sources(done)["teacher"] == done["baseline"]
    larger = tmp_path / "larger.pt"
    assert DistillStage(ctx(teacher=str(larger))).sources(done)["teacher"] == larger
    from yolo_compress.sparse.stage import SparseStage

    assert SparseStage(ctx(sparse=True, teacher=str(larger))).sources(done) == {"weights": done["baseline"]}
    taught = SparseStage(ctx(sparse=True, sparse_distill=True, teacher=str(larger))).sources(done)
    assert taught == {"weights": done["baseline"], "teacher": larger}  # sparse_distill learns from it too
    export = ExportStage(ctx(export="onnx"))
    assert export.sources(done) == {"weights": done["distill"]}
    assert export.outputs() == {"file": tmp_path / "distill.onnx"}
    assert ExportStage(ctx(export="onnx", distill=False)).outputs() == {"file": tmp_path / "finetune.onnx"}
    quant = QuantizeStage(ctx(export="onnx", quantize="int8"))
    assert quant.sources(done)["fp32"] == tmp_path / "distill.onnx"  # the export stage's file, not a second export
    assert quant.outputs() == {"int8": tmp_path / "distill-int8.onnx"}
    alone = QuantizeStage(ctx(quantize="int8"))  # no export stage: the quantize stage makes the fp32 ONNX itself
    assert "fp32" not in alone.sources(done)
    assert alone.outputs() == {"fp32": tmp_path / "distill.onnx", "int8": tmp_path / "distill-int8.onnx"}
    openvino = QuantizeStage(ctx(export="openvino", quantize="int8"))  # INT8 for the export's runtime
    assert openvino.sources(done)["fp32"] == tmp_path / "distill_openvino_model"
    assert openvino.outputs() == {"int8": tmp_path / "distill_int8_openvino_model"}
    qat = QuantizeStage(ctx(export="openvino", quantize="int8", quantize_mode="qat", batch=4))
    assert qat.outputs() == {"qat": tmp_path / "distill-qat.pt", "int8": tmp_path / "distill_int8_openvino_model"}
    assert qat.fingerprint()["qat_epochs"] == 3 and qat.fingerprint()["batch"] == 4  # its training reruns it on change
    assert "batch" not in openvino.fingerprint()
    with pytest.raises(CompressError, match="export='foo' is not supported; use one of onnx, torchscript, openvino"):
        ctx(export="foo")


def test_precedence_defaults_yaml_flags_and_set(tiny_yaml, tmp_path):
    """defaults < the YAML file < flags and --set; ``epochs`` applies to every training stage."""
    import csv

    from yolo_compress.checkpoint import save_checkpoint
    from yolo_compress.cli import main
    from yolo_compress.dataset import resolve_data
    from yolo_compress.models import build_from_yaml

    data = resolve_data(tiny_yaml)
    weights = save_checkpoint(build_from_yaml("yolov8n.yaml", data), tmp_path / "b.pt")
    config = tmp_path / "cfg.yaml"
    config.write_text("zero_at: 0.3\nepochs: 3\nfactor: 0.2\nbatch: 8\nimgsz: 64\nreference: true\n")
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--weights", str(weights), "--data", str(tiny_yaml), "--out",
                 str(out), "--sparse", "--zero-at", "0.7", "--set", "factor=0.4", "--no-compare"]) == 0
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages["sparse"]["settings"]["zero_at"] == 0.7 and stages["prune"]["settings"]["factor"] == 0.4
    assert stages["sparse"]["settings"]["batch"] == 8  # from the YAML, not the default 16
    for stage in ("sparse", "finetune", "distill"):
        rows = list(csv.DictReader((out / "runs" / stage / "results.csv").open()))
        assert len(rows) == 3, stage
