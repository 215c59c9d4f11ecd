"""One trainer per task with features as plug-ins: a new plug-in reaches the loss of every task's trainer."""

from __future__ import annotations

import csv
from typing import Any

import pytest
import torch
from ultralytics.utils.torch_utils import unwrap_model

from yolo_compress import CompressError
from yolo_compress.patches import trainers
from yolo_compress.patches.plugin import TrainerPlugin


class ConstantLoss(TrainerPlugin):
    """A test plug-in: adds ``const_loss`` to the training loss, as its own logged term."""

    trigger = "const_loss"

    def __init__(self, trainer: Any) -> None:
        super().__init__(trainer)
        trainer.add_callback("on_train_start", self._wrap)

    def _wrap(self, trainer: Any) -> None:
        student = unwrap_model(trainer.model)
        base = getattr(student, "criterion", None) or student.init_criterion()
        value = float(trainer.args.const_loss)

        def criterion(preds: Any, batch: dict) -> tuple[torch.Tensor, dict]:
            loss, items = base(preds, batch)
            extra = torch.tensor([value], dtype=loss.dtype, device=loss.device)
            return torch.cat([loss.reshape(-1), extra]), {**items, "const_loss": extra[0].detach()}

        student.criterion = criterion
        self.seen = []
        trainer.add_callback("on_train_batch_end", lambda t: self.seen.append(float(t.loss.detach())))


@pytest.fixture
def with_constant_loss(monkeypatch):
    monkeypatch.setattr(trainers, "PLUGINS", (*trainers.PLUGINS, ConstantLoss))


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory):
    from yolo_compress.data.classify import make_classify_dataset

    return make_classify_dataset(tmp_path_factory.mktemp("cls") / "c", n_train=16, n_val=8, imgsz=32, seed=0)


@pytest.mark.parametrize("task", ["detect", "classify"])
def test_a_new_plugin_reaches_the_loss_of_each_task_without_a_new_trainer(task, with_constant_loss, tiny_yaml,
                                                                           cls_root, tmp_path):
    from ultralytics import YOLO

    yaml, data, imgsz = ("yolov8n.yaml", str(tiny_yaml), 64) if task == "detect" else (
        "yolov8n-cls.yaml", str(cls_root), 32)
    model = YOLO(yaml)
    model.train(trainer=trainers.TRAINERS[task], data=data, epochs=1, imgsz=imgsz, batch=8, workers=0, plots=False,
                val=False, project=str(tmp_path), name="run", const_loss=0.25)
    trainer = model.trainer
    assert type(trainer) is trainers.TRAINERS[task]  # the task's one trainer, no class made for the plug-in
    assert [type(p) for p in trainer.plugins] == [ConstantLoss]
    seen = trainer.plugin(ConstantLoss).seen
    assert seen and all(loss > 0.25 for loss in seen)  # the summed loss the optimizer steps on holds it
    rows = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    column = {k.strip(): v for k, v in rows[0].items()}["train/const_loss"]
    assert float(column) == pytest.approx(0.25)
    assert trainer.args.const_loss == 0.25  # in args: a resume or a DDP worker switches it on again


def test_a_plugin_setting_without_its_trigger_is_refused(tiny_yaml, tmp_path):
    with pytest.raises(CompressError, match=r"kd_tau only apply with teacher="):
        trainers.ModuleKeepingTrainer(overrides={"data": str(tiny_yaml), "model": "yolov8n.yaml", "kd_tau": 2.0,
                                                 "project": str(tmp_path), "name": "run"})
    assert not (tmp_path / "run").exists()  # refused before Ultralytics made the run folder
