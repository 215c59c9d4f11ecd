"""Distillation losses and connectors: values against hand-written references, zeros, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from yolo_compress.distill.connectors import CWDConnector, MGDConnector
from yolo_compress.distill.losses import ChannelWiseDivergence, DetectKD, LogitKD, MaskKD, MGDLoss


def cwd_reference(s: torch.Tensor, t: torch.Tensor, tau: float) -> float:
    """CWD written as a loop over (image, channel) pairs, straight from the paper's formula."""
    n, c = s.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(c):
            p_t = torch.softmax(t[i, j].flatten() / tau, 0)
            p_s = torch.softmax(s[i, j].flatten() / tau, 0)
            total += float((p_t * (p_t.log() - p_s.log())).sum())
    return tau**2 * total / (n * c)


def bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)


# ---- CWD ----------------------------------------------------------------------------------------------------------
def test_cwd_hand_computed_2x2():
    # teacher uniform over the 4 positions, student softmax [1, 1, 1, 5] / 8
    s = torch.tensor([0.0, 0.0, 0.0, math.log(5)]).view(1, 1, 2, 2)
    t = torch.zeros(1, 1, 2, 2)
    expected = 0.75 * math.log(2) + 0.25 * math.log(0.4)  # sum 1/4 * log((1/4) / s_i) = 0.290788
    assert float(ChannelWiseDivergence(tau=1.0)(s, t)) == pytest.approx(expected, abs=1e-6)
    assert float(ChannelWiseDivergence(tau=2.0)(s * 2, t)) == pytest.approx(4 * expected, abs=1e-6)  # tau^2


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_cwd_matches_reference(pair, tau):
    s, t = pair
    assert float(ChannelWiseDivergence(tau)(s, t)) == pytest.approx(cwd_reference(s, t, tau), rel=1e-5)


def test_cwd_zero_on_equal_positive_otherwise(pair):
    s, t = pair
    assert float(ChannelWiseDivergence()(t.clone(), t)) == pytest.approx(0.0, abs=1e-7)
    assert float(ChannelWiseDivergence()(s, t)) > 0


def test_cwd_shape_mismatch():
    with pytest.raises(ValueError, match="equal"):
        ChannelWiseDivergence()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))


# ---- MGD ----------------------------------------------------------------------------------------------------------
def test_mgd_hand_computed():
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    t = torch.zeros(2, 1, 2, 2)
    # sum of squares = 2 * (1 + 4 + 9 + 16) = 60, over N = 2 -> 30, times alpha
    assert float(MGDLoss(alpha_mgd=1.0)(g, t)) == pytest.approx(30.0)
    assert float(MGDLoss()(g, t)) == pytest.approx(30.0 * 2e-5)


def test_mgd_matches_reference(pair):
    s, t = pair
    ref = 2e-5 * float(F.mse_loss(s, t, reduction="sum")) / s.shape[0]
    assert float(MGDLoss()(s, t)) == pytest.approx(ref, rel=1e-6)
    assert float(MGDLoss()(t, t)) == 0.0


# ---- logit KD -----------------------------------------------------------------------------------------------------
def test_kd_softmax_hand_computed():
    s = torch.tensor([[0.0, math.log(3)]])  # softmax [1/4, 3/4]
    t = torch.tensor([[0.0, 0.0]])  # softmax [1/2, 1/2]
    expected = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    assert float(LogitKD(tau=1.0, mode="softmax", dim=1)(s, t)) == pytest.approx(expected, abs=1e-6)


def test_kd_softmax_temperature_matches_hinton(pair):
    s, t = pair
    tau = 3.0
    ref = F.kl_div(F.log_softmax(s / tau, 1), F.softmax(t / tau, 1), reduction="none").sum(1).mean() * tau**2
    assert float(LogitKD(tau=tau, mode="softmax", dim=1)(s, t)) == pytest.approx(float(ref), rel=1e-5)


def test_kd_sigmoid_hand_computed():
    s, t = torch.tensor([[math.log(3)]]), torch.tensor([[0.0]])  # q = 0.75, p = 0.5
    assert float(LogitKD(mode="sigmoid")(s, t)) == pytest.approx(bernoulli_kl(0.5, 0.75), abs=1e-6)
    # two classes: per-anchor sum over classes; two anchors: mean
    s2 = torch.tensor([[[math.log(3), 0.0], [0.0, 0.0]]])  # (N=1, K=2, A=2)
    t2 = torch.zeros(1, 2, 2)
    assert float(LogitKD(mode="sigmoid", dim=1)(s2, t2)) == pytest.approx(bernoulli_kl(0.5, 0.75) / 2, abs=1e-6)


def detect_kd_reference(scores_s, scores_t, boxes_s, boxes_t, tau, reg_max, q_min):
    """DetectKD written out with loops over anchors, straight from the docstring's formula."""
    n, nc, a = scores_s.shape
    q = torch.sigmoid(scores_t).amax(1)  # (N, A)
    cls = 0.0
    for i in range(n):
        for j in range(a):
            for k in range(nc):
                p_t, p_s = float(torch.sigmoid(scores_t[i, k, j] / tau)), float(torch.sigmoid(scores_s[i, k, j] / tau))
                cls += bernoulli_kl(p_t, p_s)
    cls /= max(float(q.sum()), 1.0)
    num = den = 0.0
    for i in range(n):
        for j in range(a):
            if q[i, j] < q_min:
                continue
            kl = 0.0
            for side in range(4):
                pt = F.softmax(boxes_t[i, side * reg_max:(side + 1) * reg_max, j] / tau, 0)
                ps = F.softmax(boxes_s[i, side * reg_max:(side + 1) * reg_max, j] / tau, 0)
                kl += float((pt * (pt / ps).log()).sum()) / 4
            num, den = num + float(q[i, j]) * kl, den + float(q[i, j])
    return tau**2 * (cls + (num / den if den else 0.0))


def test_detect_kd_zero_on_equal_and_reference():
    g = torch.Generator().manual_seed(1)
    scores_s, scores_t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g) * 2
    boxes_s, boxes_t = torch.randn(2, 16, 7, generator=g), torch.randn(2, 16, 7, generator=g)
    kd = DetectKD(tau=2.0, reg_max=4, box_min_score=0.6)
    assert float(kd(scores_t, scores_t, boxes_t, boxes_t)) == pytest.approx(0.0, abs=1e-6)
    q = torch.sigmoid(scores_t).amax(1)
    assert 0 < int((q >= 0.6).sum()) < q.numel()  # the box mask really selects some anchors and drops others
    expected = detect_kd_reference(scores_s, scores_t, boxes_s, boxes_t, tau=2.0, reg_max=4, q_min=0.6)
    assert float(kd(scores_s, scores_t, boxes_s, boxes_t)) == pytest.approx(expected, rel=1e-5)
    no_box = detect_kd_reference(scores_s, scores_t, boxes_s, boxes_t * 0 + boxes_s, tau=2.0, reg_max=4, q_min=0.6)
    assert float(DetectKD(tau=2.0, reg_max=4, box=False)(scores_s, scores_t, boxes_s, boxes_t)) == pytest.approx(
        no_box, rel=1e-5)


def test_detect_kd_class_term_is_normalised_by_teacher_score_mass():
    """Doubling the background (anchors the teacher scores ~0, student agrees) must not dilute the class term."""
    g = torch.Generator().manual_seed(2)
    fg_s, fg_t = torch.randn(1, 2, 5, generator=g), torch.randn(1, 2, 5, generator=g) + 3
    bg = torch.full((1, 2, 500), -12.0)
    kd = DetectKD(box=False)
    small = kd(torch.cat([fg_s, bg], 2), torch.cat([fg_t, bg], 2))
    large = kd(torch.cat([fg_s, bg, bg], 2), torch.cat([fg_t, bg, bg], 2))
    assert float(large) == pytest.approx(float(small), rel=1e-3)


def mask_kd_reference(cs, ps, ct, pt, scores_t, boxes, q_min: float, top_k: int) -> float:
    """MaskKD as loops over images and their top-k anchors: each mask assembled, cropped to the box, binary KL."""
    num = den = 0.0
    for n in range(cs.shape[0]):
        q = torch.sigmoid(scores_t[n]).amax(0)
        for a in q.topk(top_k).indices.tolist():
            if q[a] < q_min:
                continue
            s, t = torch.einsum("c,chw->hw", cs[n, :, a], ps[n]), torch.einsum("c,chw->hw", ct[n, :, a], pt[n])
            x1, y1, x2, y2 = boxes[n, a].tolist()
            kl = [float(t.sigmoid()[i, j] * (F.logsigmoid(t[i, j]) - F.logsigmoid(s[i, j]))
                        + (1 - t.sigmoid()[i, j]) * (F.logsigmoid(-t[i, j]) - F.logsigmoid(-s[i, j])))
                  for i in range(s.shape[0]) for j in range(s.shape[1]) if x1 <= j < x2 and y1 <= i < y2]
            num, den = num + float(q[a]) * (sum(kl) / max(len(kl), 1)), den + float(q[a])
    return num / den if den else 0.0


def test_mask_kd_zero_on_equal_and_reference():
    g = torch.Generator().manual_seed(3)
    cs, ct = torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)
    ps, pt = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    scores_t = torch.randn(2, 3, 9, generator=g) * 2
    xy = torch.rand(2, 9, 2, generator=g) * 4
    boxes = torch.cat([xy, xy + 1 + torch.rand(2, 9, 2, generator=g) * 3], 2)
    kd = MaskKD(min_score=0.5, top_k=5)
    assert float(kd(ct, pt, ct, pt, scores_t, boxes)) == pytest.approx(0.0, abs=1e-6)
    expected = mask_kd_reference(cs, ps, ct, pt, scores_t, boxes, q_min=0.5, top_k=5)
    assert expected > 0 and float(kd(cs, ps, ct, pt, scores_t, boxes)) == pytest.approx(expected, rel=1e-5)
    above = boxes.clone()
    above[..., 3] = above[..., 3].clamp(max=5.0)  # every box ends above the last row (y < 5)
    changed = pt.clone()
    changed[..., 5, :] += 9.0  # the teacher's masks differ only outside every box: nothing to learn there
    assert float(kd(cs, ps, ct, changed, scores_t, above)) == pytest.approx(float(kd(cs, ps, ct, pt, scores_t, above)))


def test_kd_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        LogitKD(mode="softplus")


# ---- gradients: to the student and the adapters, never to the teacher ---------------------------------------------
@pytest.mark.parametrize("kind", ["cwd", "mgd"])
def test_gradient_reaches_student_and_adapter_not_teacher(kind):
    torch.manual_seed(0)
    feat_s = torch.randn(2, 4, 6, 6, requires_grad=True)
    feat_t = torch.randn(2, 8, 6, 6, requires_grad=True)
    connector = CWDConnector(4, 8) if kind == "cwd" else MGDConnector(4, 8)
    loss_fn = ChannelWiseDivergence() if kind == "cwd" else MGDLoss(alpha_mgd=1.0)
    loss = loss_fn(*connector(feat_s, feat_t))
    assert float(loss.detach()) > 0
    loss.backward()
    assert feat_s.grad is not None and feat_s.grad.abs().sum() > 0
    assert connector.align.weight.grad is not None and connector.align.weight.grad.abs().sum() > 0
    assert feat_t.grad is None


def test_kd_gradient_student_only():
    s, t = torch.randn(2, 3, 5, requires_grad=True), torch.randn(2, 3, 5, requires_grad=True)
    LogitKD(mode="sigmoid")(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


# ---- connectors ---------------------------------------------------------------------------------------------------
def test_cwd_connector_identity_when_widths_match():
    assert isinstance(CWDConnector(8, 8).align, torch.nn.Identity)
    assert list(CWDConnector(8, 8).parameters()) == []  # BatchNorm2d(affine=False) has no parameters
    out_s, out_t = CWDConnector(4, 8)(torch.randn(2, 4, 3, 3), torch.randn(2, 8, 3, 3))
    assert out_s.shape == out_t.shape == (2, 8, 3, 3)


def test_mgd_connector_mask_ratio():
    torch.manual_seed(0)
    conn = MGDConnector(4, 4, lambda_mgd=0.65)
    seen = {}
    conn.generation.register_forward_hook(lambda m, i, o: seen.__setitem__("x", i[0]))
    conn(torch.randn(64, 4, 16, 16) + 10, torch.randn(64, 4, 16, 16))
    masked = (seen["x"][:, 0] == 0).float().mean()  # one mask per image, shared by channels
    assert float(masked) == pytest.approx(0.65, abs=0.02)
    assert torch.equal(seen["x"][:, 0] == 0, seen["x"][:, 3] == 0)
    conn.eval()
    conn(torch.randn(2, 4, 16, 16) + 10, torch.randn(2, 4, 16, 16))
    assert float((seen["x"] == 0).float().mean()) == 0.0  # no masking in eval
    with pytest.raises(ValueError, match="lambda_mgd"):
        MGDConnector(4, 4, lambda_mgd=1.0)
