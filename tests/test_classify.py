"""Classifiers: the built-in ImageFolder data, Hinton's KD loss, pruning, KD training from any teacher, the pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yolo_compress import CompressError, PruneModel
from yolo_compress.dataset import resolve_data
from yolo_compress.distill.losses import SoftTargetLoss

IMGSZ = 32


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory) -> Path:
    from yolo_compress.data.classify import make_classify_dataset

    return make_classify_dataset(tmp_path_factory.mktemp("cls") / "c", n_train=24, n_val=12, imgsz=IMGSZ, seed=0)


# ---- Hinton's loss ------------------------------------------------------------------------------------------------
def test_soft_target_loss_hand_computed():
    s = torch.tensor([[0.0, math.log(3)]])  # softmax [1/4, 3/4]
    t = torch.tensor([[0.0, 0.0]])  # softmax [1/2, 1/2]
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    ce = -math.log(0.25)  # label 0
    hard, soft = SoftTargetLoss(tau=1.0, alpha=0.25)(s, t, torch.tensor([0]))
    assert float(hard) == pytest.approx(0.75 * ce, abs=1e-6) and float(soft) == pytest.approx(0.25 * kl, abs=1e-6)


def test_soft_target_loss_alpha_ends_tau_squared_and_batch_mean():
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g), torch.randint(0, 7, (5,), generator=g)
    ce = F.cross_entropy(s, y)
    hard, soft = SoftTargetLoss(tau=3.0, alpha=0.0)(s, t, y)
    assert float(hard) == pytest.approx(float(ce)) and float(soft) == 0.0  # alpha 0: plain cross-entropy
    hard, soft = SoftTargetLoss(tau=3.0, alpha=1.0)(s, t, y)
    batchmean = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean")
    assert float(hard) == 0.0 and float(soft) == pytest.approx(9 * float(batchmean), rel=1e-5)  # T^2, batch mean
    p_t = F.softmax(t / 3, 1)
    elementwise = (p_t * (p_t.log() - F.log_softmax(s / 3, 1))).mean()  # nn.KLDivLoss()'s default reduction
    assert float(batchmean) == pytest.approx(7 * float(elementwise), rel=1e-5)  # it would divide by the classes too


def test_soft_target_gradient_reaches_only_the_student():
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    sum(SoftTargetLoss(alpha=0.7)(s, t, torch.tensor([0, 1, 2, 0]))).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


# ---- data ---------------------------------------------------------------------------------------------------------
def test_builtin_classify_data_is_deterministic_and_checked(cls_root, tmp_path):
    from yolo_compress.data.classify import CLASSES, make_classify_dataset

    data = resolve_data(cls_root, "classify")
    assert data.task == "classify" and data.nc == len(CLASSES) and data.imgsz == IMGSZ
    again = make_classify_dataset(tmp_path / "again", n_train=24, n_val=12, imgsz=IMGSZ, seed=0)
    for a in sorted(cls_root.rglob("*.png"))[:10]:
        assert a.read_bytes() == (again / a.relative_to(cls_root)).read_bytes()
    assert len(list((cls_root / "val").rglob("*.png"))) == 12 and (cls_root / "test").is_dir()


def test_bad_image_folders(cls_root, tmp_path):
    import shutil

    empty = tmp_path / "empty"
    shutil.copytree(cls_root, empty)
    for f in (empty / "val" / "ring").iterdir():
        f.unlink()
    with pytest.raises(CompressError, match="ring holds no images"):
        resolve_data(empty, "classify")
    broken = tmp_path / "broken"
    shutil.copytree(cls_root, broken)
    bad = next((broken / "train" / "cross").iterdir())
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(CompressError, match="cannot read image"):
        resolve_data(broken, "classify")
    with pytest.raises(CompressError, match="classification dataset is a folder"):
        resolve_data(cls_root / "dataset.yaml", "classify")


# ---- pruning, training, distillation ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pruned_cls(cls_root, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pc")
    pm = PruneModel("yolov8n-cls.yaml", data=cls_root)
    base = pm.train(save_dir=folder / "base.pt", epochs=1, batch=8, plots=False)
    pm.prune(save_dir=folder / "prune.pt", speed_up=2.0)
    return base, folder / "prune.pt"


def test_classifier_prunes_with_head_kept_and_reloads(pruned_cls, cls_root):
    from ultralytics import YOLO

    base, pruned = pruned_cls
    model = YOLO(str(pruned))
    head, head0 = model.model.model[-1], YOLO(str(base)).model.model[-1]
    assert head.linear.out_features == 6 and head.conv.conv.in_channels < head0.conv.conv.in_channels
    n = sum(p.numel() for p in model.model.parameters())
    assert n < 0.7 * sum(p.numel() for p in YOLO(str(base)).model.parameters())
    metrics = model.val(data=str(cls_root), imgsz=IMGSZ, plots=False, verbose=False)
    assert {"metrics/accuracy_top1", "metrics/accuracy_top5"} <= set(metrics.results_dict)


class _TinyNet(nn.Module):
    """A torchvision-style classifier: any module that maps (N, 3, H, W) to (N, C) logits."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, nc)

    def forward(self, x):
        return self.fc(self.body(x))


def test_kd_from_a_torchvision_style_teacher(pruned_cls, cls_root, tmp_path):
    torch.manual_seed(0)
    whole, script = tmp_path / "teacher.pt", tmp_path / "teacher.torchscript"
    torch.save(_TinyNet(6), whole)
    torch.jit.script(_TinyNet(6)).save(str(script))
    _, pruned = pruned_cls
    pm = PruneModel(pruned, data=cls_root)
    params = pm.info()["params"]
    for teacher in (whole, script):
        out = pm.distill(teacher, save_dir=tmp_path / f"kd_{teacher.suffix[1:]}.pt", epochs=1, batch=8, plots=False,
                         kd_alpha=0.5, kd_tau=2.0)
        header = (pm.run_dir / "results.csv").read_text().splitlines()[0].split(",")
        assert {"train/loss", "train/kd_loss", "val/kd_loss"} <= set(header)
        assert out.is_file() and pm.info()["params"] == params


def test_bad_classification_teachers(pruned_cls, cls_root, tmp_path, tiny_yaml):
    _, pruned = pruned_cls
    pm = PruneModel(pruned, data=cls_root)
    torch.save(_TinyNet(3), tmp_path / "three.pt")
    with pytest.raises(CompressError, match="but the dataset has 6 classes"):
        pm.distill(tmp_path / "three.pt", save_dir=tmp_path / "x.pt", epochs=1)
    torch.save(_TinyNet(6).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CompressError, match="state_dict"):
        pm.distill(tmp_path / "sd.pt", save_dir=tmp_path / "x.pt", epochs=1)
    detector = PruneModel("yolov8n.yaml", data=tiny_yaml)
    from yolo_compress.checkpoint import save_checkpoint

    save_checkpoint(detector.model, tmp_path / "det.pt")
    with pytest.raises(CompressError, match="is a detect model"):
        pm.distill(tmp_path / "det.pt", save_dir=tmp_path / "x.pt", epochs=1)
    with pytest.raises(CompressError, match="classifiers are distilled with logit KD"):
        pm.distill(tmp_path / "three.pt", save_dir=tmp_path / "x.pt", loss="cwd", epochs=1)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "runs").exists()


def test_classifier_pipeline(cls_root, tmp_path):
    from yolo_compress.config import load_config
    from yolo_compress.pipeline import CompressionPipeline

    cfg = load_config(model="yolov8n-cls.yaml", data=str(cls_root), out=str(tmp_path / "o"), epochs=1, batch=8,
                      sparse=True, reference=True)
    result = CompressionPipeline(cfg).run()
    assert result.ran == ["baseline", "sparse", "prune", "finetune", "distill", "compare"]
    names = [r["name"] for r in result.rows]
    assert names == ["baseline", "sparse", "prune", "finetune", "distill"]
    assert {"top1", "top5"} <= set(result.rows[0]) and "mAP50_95" not in result.rows[0]
    assert result.rows[2]["gflops"] < 0.6 * result.rows[0]["gflops"]
