"""Sparse training: the plan, the shrink schedule, one step under SGD and AdamW, exact pruning after it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from yolo_compress.models import prunable_batchnorms
from yolo_compress.patches.sparse import HISTOGRAM_NAME, Sparsity
from yolo_compress.patches.trainers import ModuleKeepingTrainer
from yolo_compress.prune import PruneSettings, plan_channels, prune_model, swap_c2f_
from yolo_compress.sparse import (
    SparseSettings,
    SparsityPull,
    gamma_stats,
    save_gamma_histogram,
    scale_channels_,
    shrink_factor,
    soft_threshold_,
)

NC = 4


def _tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[1].weight.uniform_(-1, 1)  # gammas of both signs
    return net


def test_shrink_factor_reaches_zero_at_zero_at():
    assert [shrink_factor(p, 0.8) for p in (0.0, 0.4, 0.8, 1.0)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert shrink_factor(1.0, 1.0) == 0.0 and shrink_factor(-1.0, 0.5) == 1.0


def test_scale_channels_touches_only_the_planned_scale_and_shift():
    net = _tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert scale_channels_(net, {"1": [0, 3]}, 0.5) == 2
    w, b = net[1].weight.detach(), net[1].bias.detach()
    assert torch.equal(w[[0, 3]], before["1.weight"][[0, 3]] * 0.5) and torch.equal(w[1:3], before["1.weight"][1:3])
    scale_channels_(net, {"1": [0, 3]}, 0.0)
    assert not w[[0, 3]].any() and not b[[0, 3]].any()  # exactly zero: the channel outputs act(0)
    assert torch.equal(net[0].weight, before["0.weight"])


def test_prunable_batchnorms_skip_only_fixed_head_layers():
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    head = {id(m) for m in model.model[-1].modules()}
    bns = prunable_batchnorms(model)
    all_bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # the v8 Detect head's 3 levels x (2 box + 2 class) Conv+BN blocks are inner layers, prunable; its output
    # convs have no BatchNorm
    assert len(bns) == len(all_bns) and sum(id(b) in head for b in bns) == 12
    cls = ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False)
    cls_head = {id(m) for m in cls.model[-1].modules()}
    assert not any(id(b) in cls_head for b in prunable_batchnorms(cls))  # Classify's conv feeds the fixed linear


def test_stats_and_histogram(tmp_path: Path):
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.001, -0.005, 0.5, 2.0]))
    stats = gamma_stats([bn], threshold=0.01)
    assert (stats.n, stats.share_below) == (4, 0.5)
    assert stats.mean_abs == pytest.approx((0.001 + 0.005 + 0.5 + 2.0) / 4)
    png = save_gamma_histogram([bn], tmp_path / "h.png", threshold=0.01)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_soft_threshold_hand_computed():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.3, -0.3, 0.05, -0.02]))
        bn.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    soft_threshold_([bn], 0.1)
    torch.testing.assert_close(bn.weight.detach(), torch.tensor([0.2, -0.2, 0.0, 0.0]))  # exact zeros, signs kept
    assert torch.equal(bn.bias.detach(), torch.tensor([1.0, 2.0, 3.0, 4.0]))  # L1 is on the scale only


def _optimizer_step(optimizer_name: str, plan: dict, settings: SparseSettings, progress: float) -> torch.Tensor:
    """One real optimizer step on a tiny net, then the sparsity update at ``progress``; the BatchNorm scales."""
    net = _tiny_net()
    opt = (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) if optimizer_name == "SGD"
           else torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0))
    net(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))).square().mean().backward()
    opt.step()
    SparsityPull(settings, plan).step_([net], progress)
    return net[1].weight.detach().clone()


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_one_step_shrinks_the_planned_gammas_under_any_optimizer(optimizer):
    """The pull does not go through the optimizer: after the step, under SGD and AdamW alike (which would rescale an
    L1 subgradient to ~lr), the planned scales are the step's result times the schedule's ratio, the others as
    the step left them."""
    settings = SparseSettings(zero_at=0.5)
    dense = _optimizer_step(optimizer, {}, settings, 0.25)
    sparse = _optimizer_step(optimizer, {"1": [1, 2, 5]}, settings, 0.25)  # a quarter of the run: half kept
    torch.testing.assert_close(sparse[[1, 2, 5]], dense[[1, 2, 5]] * 0.5)
    torch.testing.assert_close(sparse[[0, 3, 4, 6, 7]], dense[[0, 3, 4, 6, 7]])


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_one_l1_step_pulls_every_prunable_gamma_by_its_share_under_any_optimizer(optimizer):
    """``sparse_method="l1"``: after the optimizer step, every scale is soft-thresholded by l1_total x the share of
    the run the step covered, whatever the optimizer did to the gradient (AdamW would cap an L1 subgradient's
    step at ~lr)."""
    dense = _optimizer_step(optimizer, {}, SparseSettings(sparse_method="l1", l1_total=0.0), 0.25)
    pulled = _optimizer_step(optimizer, {}, SparseSettings(sparse_method="l1", l1_total=1.6), 0.25)  # 0.4 now
    torch.testing.assert_close(pulled, dense.sign() * (dense.abs() - 0.4).clamp_min(0))
    assert (pulled == 0).any() and (pulled != 0).any()


def test_the_pull_resumes_where_the_schedule_was():
    pull = SparsityPull(SparseSettings(zero_at=0.5), {})
    pull.resume_at(0.25)
    assert (pull.progress, pull.kept) == (0.25, 0.5)


def test_plan_is_what_pruning_removes():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=NC, verbose=False).eval()
    swap_c2f_(model)
    target = PruneSettings(speed_up=2.0, importance="group_norm")
    plan, result = plan_channels(model, 64, target)
    pruned, again = prune_model(model, 64, target)
    before = sum(b.num_features for b in prunable_batchnorms(model))
    after = sum(b.num_features for b in prunable_batchnorms(pruned))
    modules = dict(model.named_modules())
    assert result.speed_up == again.speed_up >= 2.0
    assert sum(len(c) for n, c in plan.items() if modules[n] in prunable_batchnorms(model)) == before - after
    assert all(max(c) < modules[n].num_features for n, c in plan.items())


@pytest.fixture(scope="module")
def shapes_yaml(tmp_path_factory) -> Path:
    from yolo_compress.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("sp") / "shapes", n_train=8, n_val=4, imgsz=64, seed=0)


def test_sparse_training_frees_channels_and_pruning_them_is_exact(shapes_yaml: Path, tmp_path: Path):
    """After sparse training toward 2x, the default pruning removes exactly the zeroed channels: same outputs."""
    from yolo_compress.checkpoint import load_model
    from yolo_compress.dataset import resolve_data
    from yolo_compress.models import build_from_yaml
    from yolo_compress.sparse.stage import sparse_train
    from yolo_compress.training import train_args

    data = resolve_data(shapes_yaml)
    model = build_from_yaml("yolov8n.yaml", data)
    out = tmp_path / "sparse.pt"
    args = train_args({"epochs": 2, "batch": 4, "plots": False, "val": False, "mosaic": 0.0, "seed": 0}, data, 64, out)
    fitted = sparse_train(model, data, out, SparseSettings(zero_at=0.5), PruneSettings(speed_up=2.0), 64, args)

    sparse = load_model(out).eval()
    g = gamma_stats(sparse, 1e-6)
    assert 0.2 < g.share_below < 0.7  # a real share of the channels is exactly zero
    header, *rows = (fitted.run_dir / "results.csv").read_text().splitlines()
    cols = dict(zip(header.split(","), rows[-1].split(",")))
    assert float(cols["sparse/kept"]) == 0.0 and float(cols["sparse/zero"]) == 1.0
    assert (tmp_path / f"sparse_{HISTOGRAM_NAME}").is_file()

    pruned, result = prune_model(sparse, 64, PruneSettings(speed_up=2.0))
    assert result.importance == "bn_scale" and result.global_pruning and result.speed_up >= 2.0
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x)[0], sparse(x)[0], atol=1e-4, rtol=1e-4)


def test_l1_sparse_training_zeroes_scales_and_pruning_takes_them_globally(shapes_yaml: Path, tmp_path: Path):
    """Classic network slimming: a strong L1 pull leaves exact zero scales, and ``importance="auto"`` then prunes
    by one global |gamma| threshold."""
    from yolo_compress.checkpoint import load_model
    from yolo_compress.dataset import resolve_data
    from yolo_compress.models import build_from_yaml
    from yolo_compress.sparse.stage import sparse_train
    from yolo_compress.training import train_args

    data = resolve_data(shapes_yaml)
    model = build_from_yaml("yolov8n.yaml", data)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in prunable_batchnorms(model):  # spread scales, as a trained network has: 23% below the pull
            bn.weight.copy_(0.2 + 1.3 * torch.rand(bn.num_features, generator=g))
    out = tmp_path / "l1.pt"
    args = train_args({"epochs": 1, "batch": 4, "plots": False, "val": False, "mosaic": 0.0, "seed": 0}, data, 64, out)
    fitted = sparse_train(model, data, out, SparseSettings(sparse_method="l1", l1_total=0.5),
                          PruneSettings(speed_up=2.0), 64, args)
    sparse = load_model(out)
    assert 0.15 < gamma_stats(sparse, 1e-9).share_below < 0.32  # those below 0.5 are exactly zero, the rest not
    assert gamma_stats(sparse, 1.01).share_below > 0.99  # the largest (1.5) ends near 1.0: all pulled by 0.5
    header, *rows = (fitted.run_dir / "results.csv").read_text().splitlines()
    cols = dict(zip(header.split(","), rows[-1].split(",")))
    assert float(cols["sparse/pulled"]) == pytest.approx(0.5) and float(cols["sparse/zero"]) > 0.0
    _, result = prune_model(sparse, 64, PruneSettings(speed_up=2.0))
    assert result.importance == "bn_scale" and result.global_pruning


def test_interrupted_sparse_training_resumes_with_its_own_settings(shapes_yaml, tmp_path, monkeypatch):
    from yolo_compress import PruneModel
    from yolo_compress.checkpoint import load_model

    original, seen = ModuleKeepingTrainer.save_model, []

    def save_then_crash(self):
        original(self)
        raise KeyboardInterrupt

    def record(self):
        sparsity = self.plugin(Sparsity)
        seen.append((self.epoch, sparsity.settings, len(sparsity.plan)))
        return original(self)

    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", save_then_crash)
    pm = PruneModel("yolov8n.yaml", data=shapes_yaml, imgsz=64)
    kw = {"epochs": 2, "batch": 4, "plots": False, "mosaic": 0.0, "zero_at": 0.75, "factor": 0.5}
    with pytest.raises(KeyboardInterrupt):
        pm.sparse_train(save_dir=tmp_path / "sparse.pt", **kw)
    monkeypatch.setattr(ModuleKeepingTrainer, "save_model", record)
    out = pm.sparse_train(save_dir=tmp_path / "sparse.pt", resume=True)  # no settings given: the run's own
    assert [e for e, _, _ in seen] == [1]  # only epoch 2 trained again
    assert seen[0][1] == SparseSettings(zero_at=0.75) and seen[0][2] > 0  # zero_at and the plan came back
    g = gamma_stats(load_model(out), 1e-9)
    assert g.share_below > 0.3  # the freed channels are exactly zero at the end
