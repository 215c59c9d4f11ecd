"""BN-L1 sparsity: the subgradient math, the AMP-independent optimizer step, and a short sparse training."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from yolo_compress.patches.sparse import HISTOGRAM_NAME, SparseTrainer
from yolo_compress.pruning.sparsity import (
    bn_l1_,
    gamma_stats,
    linear_sr,
    prunable_batchnorms,
    save_gamma_histogram,
)


def _tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[1].weight.uniform_(-1, 1)  # gammas of both signs
    return net


def test_bn_l1_adds_sign_term_once():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -2.0, 0.0, 1.0]))
    assert bn_l1_([bn], 0.1) == 1  # no grad yet: the term alone
    assert torch.equal(bn.weight.grad, torch.tensor([0.1, -0.1, 0.0, 0.1]))
    bn.weight.grad = torch.tensor([1.0, 1.0, 1.0, 1.0])
    bn_l1_([bn], 0.25)
    assert torch.equal(bn.weight.grad, torch.tensor([1.25, 0.75, 1.0, 1.25]))
    assert torch.equal(bn.bias.grad if bn.bias.grad is not None else torch.zeros(4), torch.zeros(4))
    bn.weight.requires_grad_(False)
    assert bn_l1_([bn], 0.25) == 0  # frozen scales are left alone
    assert bn_l1_([nn.BatchNorm2d(2)], 0.0) == 0


def test_prunable_batchnorms_skip_detect_head():
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    head = {id(m) for m in model.model[-1].modules()}
    bns = prunable_batchnorms(model)
    all_bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(id(b) in head for b in bns)
    assert len(all_bns) - len(bns) == 12  # 3 levels x (2 box + 2 class) Conv+BN blocks in the v8 Detect head


def test_linear_sr_and_stats(tmp_path: Path):
    assert linear_sr(1e-2, None, 5, 10) == 1e-2
    assert linear_sr(1e-2, 0.0, 0, 11) == pytest.approx(1e-2)
    assert linear_sr(1e-2, 0.0, 5, 11) == pytest.approx(5e-3)
    assert linear_sr(1e-2, 0.0, 10, 11) == pytest.approx(0.0)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.001, -0.005, 0.5, 2.0]))
    stats = gamma_stats([bn], threshold=0.01)
    assert (stats.n, stats.share_below) == (4, 0.5)
    assert stats.mean_abs == pytest.approx((0.001 + 0.005 + 0.5 + 2.0) / 4)
    png = save_gamma_histogram([bn], tmp_path / "h.png", threshold=0.01)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _stub_trainer(net: nn.Module, scaler: torch.amp.GradScaler, sr: float) -> SparseTrainer:
    """A SparseTrainer with only what ``optimizer_step`` reads: the real method on a hand-built object."""
    trainer = SparseTrainer.__new__(SparseTrainer)
    trainer.args = SimpleNamespace(sr=sr, sr_final=None, sr_threshold=1e-2)
    trainer.model, trainer.scaler, trainer.ema = net, scaler, None
    trainer.optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trainer.device, trainer.epoch, trainer.epochs = torch.device("cpu"), 0, 1
    trainer._bns, trainer._bns_of = None, None
    return trainer


def _one_step(amp: bool, sr: float) -> dict[str, torch.Tensor]:
    net = _tiny_net()
    trainer = _stub_trainer(net, torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=amp), sr)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = net(x).square().mean() * 0.01  # small: clip_grad_norm_(10) must not act
    trainer.scaler.scale(loss).backward()
    if amp:
        assert trainer.scaler.get_scale() == 2.0**12 and net[1].weight.grad.abs().max() > 1  # really scaled
    trainer.optimizer_step()
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())  # zero_grad ran
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_sparsity_step_identical_with_and_without_amp_scaler():
    sr = 0.05
    plain, scaled = _one_step(amp=False, sr=sr), _one_step(amp=True, sr=sr)
    for k in plain:
        assert torch.equal(plain[k], scaled[k]), k  # power-of-two scale: unscaling is exact
    # and the term is really there, in unscaled units: gamma moved by exactly lr * sr * sign(gamma) more
    dense = _one_step(amp=True, sr=0.0)
    gamma0 = _tiny_net().state_dict()["1.weight"]
    torch.testing.assert_close(dense["1.weight"] - plain["1.weight"], 0.1 * sr * torch.sign(gamma0))
    assert torch.equal(dense["0.weight"], plain["0.weight"])  # only BN scales get the term


@pytest.fixture(scope="module")
def shapes_yaml(tmp_path_factory) -> Path:
    from yolo_compress.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("sp") / "shapes", n_train=8, n_val=4, imgsz=64, seed=0)


def _train(data: Path, project: Path, name: str, sr: float):
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    model.train(
        trainer=SparseTrainer, data=str(data), epochs=1, imgsz=64, batch=4, nbs=4, workers=0, device="cpu",
        optimizer="SGD", lr0=0.01, warmup_epochs=0, mosaic=0.0, amp=False, plots=False, val=False, seed=0,
        deterministic=True, project=str(project), name=name, exist_ok=True, verbose=False, sr=sr, sr_threshold=0.999,
    )
    return model.trainer


def test_short_sparse_training_shrinks_gammas(shapes_yaml: Path, tmp_path: Path):
    dense = _train(shapes_yaml, tmp_path, "dense", sr=0.0)
    sparse = _train(shapes_yaml, tmp_path, "sparse", sr=0.05)
    g_dense = gamma_stats(prunable_batchnorms(dense.model), 0.999)
    g_sparse = gamma_stats(prunable_batchnorms(sparse.model), 0.999)
    # 2 Nesterov SGD steps at lr 0.01 from gamma = 1: the L1 pull moves every scale by ~2e-3, the loss ~1e-5
    assert g_sparse.mean_abs < g_dense.mean_abs - 5e-4
    assert g_sparse.share_below > g_dense.share_below
    header, row = (sparse.save_dir / "results.csv").read_text().splitlines()[:2]
    cols = dict(zip(header.split(","), row.split(",")))
    assert float(cols["sparse/sr"]) == pytest.approx(0.05)
    assert float(cols["sparse/gamma_below"]) == pytest.approx(g_sparse.share_below, abs=1e-5)
    assert (sparse.save_dir / HISTOGRAM_NAME).is_file()
    assert vars(sparse.args)["sr"] == 0.05  # kept in args: checkpoints during training and DDP carry it
