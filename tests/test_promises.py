"""README promises that are not stage mechanics: small-data defaults, the version warning, task defaults of the
distillation settings, the bare ``yolo-compress run``."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from yolo_compress import PruneModel


def test_nbs_and_warmup_default_to_small_data_values_unless_set(tiny_yaml, tmp_path):
    pm = PruneModel("yolov8n.yaml", data=tiny_yaml, imgsz=64)
    pm.train(save_dir=tmp_path / "a.pt", epochs=1, batch=8, plots=False)
    args = yaml.safe_load((pm.run_dir / "args.yaml").read_text())
    assert (args["nbs"], args["warmup_epochs"]) == (8, 1)
    pm.train(save_dir=tmp_path / "b.pt", epochs=1, batch=8, plots=False, nbs=64, warmup_epochs=0)
    args = yaml.safe_load((pm.run_dir / "args.yaml").read_text())
    assert (args["nbs"], args["warmup_epochs"]) == (64, 0)


def test_a_trained_detector_trains_at_the_recovery_lr_a_new_one_at_ultralytics_rate(tiny_yaml, tmp_path):
    def optimizer(pm: PruneModel) -> tuple[str, float]:
        args = torch.load(pm.run_dir / "weights" / "last.pt", weights_only=False)["train_args"]
        return args["optimizer"], args["lr0"]

    pm = PruneModel("yolov8n.yaml", data=tiny_yaml, imgsz=64)
    common = {"epochs": 1, "batch": 8, "plots": False, "val": False}
    pm.train(save_dir=tmp_path / "a.pt", **common)  # from the yaml: Ultralytics' own small-data choice
    assert optimizer(pm) == ("AdamW", 0.00125)  # 0.002 x 5 / (4 + 4 classes)
    pm.train(save_dir=tmp_path / "b.pt", **common)  # now a trained detector
    assert optimizer(pm) == ("AdamW", 0.005)
    pm.train(save_dir=tmp_path / "c.pt", recovery_lr=0.002, **common)
    assert optimizer(pm) == ("AdamW", 0.002)
    pm.train(save_dir=tmp_path / "d.pt", recovery_lr=0, **common)
    assert optimizer(pm) == ("AdamW", 0.00125)
    pm.train(save_dir=tmp_path / "e.pt", optimizer="SGD", lr0=0.02, **common)
    assert optimizer(pm) == ("SGD", 0.02)


def test_an_unchecked_ultralytics_version_is_named_with_the_fix(monkeypatch, caplog):
    import ultralytics

    from yolo_compress.patches import runtime

    monkeypatch.setattr(ultralytics, "__version__", "8.5.3")
    with caplog.at_level(logging.WARNING, logger="yolo_compress.patches.runtime"):
        assert runtime.check_version() is False
    assert "8.5.3 is installed" in caplog.text and "pip install ultralytics==8.4.190" in caplog.text
    monkeypatch.setattr(ultralytics, "__version__", "8.4.190")
    assert runtime.check_version() is True


def test_distillation_defaults_depend_on_the_task():
    from yolo_compress import CompressError
    from yolo_compress.distill import DistillSettings

    detect, classify = DistillSettings().for_task("detect"), DistillSettings().for_task("classify")
    assert (detect.loss, detect.kd_tau) == ("kd", 1.0) and (classify.loss, classify.kd_tau) == ("kd", 4.0)
    assert DistillSettings(kd_tau=2.0).for_task("classify").kd_tau == 2.0  # a set value wins
    with pytest.raises(CompressError, match="classifiers are distilled with logit KD; set loss kd"):
        DistillSettings(loss="cwd").for_task("classify")


def test_imagenet_teacher_input_is_normalised_with_torchvision_statistics():
    from yolo_compress.distill.classifier import IMAGENET_MEAN, IMAGENET_STD, ClassifierTeacher

    class Spy(torch.nn.Module):
        def forward(self, x):
            self.seen = x
            return x.mean((2, 3))

    spy = Spy()
    img = torch.full((1, 3, 4, 4), 0.5)
    ClassifierTeacher(spy, input="imagenet", imgsz=8)(img)
    expected = torch.tensor([(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert spy.seen.shape == (1, 3, 8, 8)
    torch.testing.assert_close(spy.seen[0, :, 0, 0], expected)
    ClassifierTeacher(spy)(img)
    assert torch.equal(spy.seen, img)  # "same": the student's batch as it is


def test_the_bare_run_compresses_the_shipped_baseline_on_the_built_in_data(tmp_path):
    """What ``yolo-compress run`` with no argument plans (not run here: the README measures it)."""
    from yolo_compress.config import load_config
    from yolo_compress.data import SHIPPED_BASELINE
    from yolo_compress.pipeline import CompressionPipeline

    pipeline = CompressionPipeline(load_config(out=str(tmp_path / "weights")))
    assert pipeline.ctx.config.run.weights == str(SHIPPED_BASELINE)
    assert pipeline.ctx.data.path.parent.name == "shapes" and pipeline.ctx.imgsz == 160
    assert [s.name for s in pipeline.stages] == ["baseline", "prune", "distill", "compare"]  # no reference
    assert pipeline.ctx.plan.budget == {"distill": 20} and pipeline.ctx.plan.final == "distill"
    with_reference = CompressionPipeline(load_config(out=str(tmp_path / "weights"), reference=True))
    assert [s.name for s in with_reference.stages] == ["baseline", "prune", "finetune", "distill", "compare"]
    segments = with_reference.ctx.plan.segments  # the reference trains on distillation's epochs, outside the budget
    assert segments["finetune"] == segments["distill"] and with_reference.ctx.plan.budget == {"distill": 20}
