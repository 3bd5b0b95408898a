"""Each recipe's loss against a direct implementation of its paper's formula.

The reference functions below are written from the papers (and their official
pseudo-code), not from lightly, and are fed the recipe's own heads, so a wrong
wiring (a missing stop-gradient, a swapped view, a wrong normalisation)
changes the number.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replens.ssl import create_method, ema_update, list_methods, method_class


class _TinyBackbone(nn.Module):
    feature_dim = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def _views(n_views, b=8, size=8, local=4):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, 3, size if i < 2 else local, size if i < 2 else local, generator=g) for i in range(n_views)]


def neg_cos(p, z):
    return -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1).mean()


def ref_byol(m, v):
    def online(x):
        return m.prediction_head(m.projection_head(m.backbone(x)))

    def target(x):
        return m.projection_head_momentum(m.backbone_momentum(x))

    return 0.5 * (neg_cos(online(v[0]), target(v[1])) + neg_cos(online(v[1]), target(v[0])))


def ref_simsiam(m, v):
    z = [m.projection_head(m.backbone(x)) for x in v]
    p = [m.prediction_head(zz) for zz in z]
    return 0.5 * (neg_cos(p[0], z[1].detach()) + neg_cos(p[1], z[0].detach()))


def ref_barlow(m, v, lam=0.0051):
    za, zb = (m.projection_head(m.backbone(x)) for x in v)
    # batch-normalised along the batch (the official code's BatchNorm1d(affine=False): biased variance)
    za = (za - za.mean(0)) / torch.sqrt(za.var(0, unbiased=False) + 1e-5)
    zb = (zb - zb.mean(0)) / torch.sqrt(zb.var(0, unbiased=False) + 1e-5)
    c = za.T @ zb / len(za)
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return on + lam * off


def ref_vicreg(m, v):
    # official VICReg pseudo-code (Bardes et al. 2022, Algorithm 1)
    x, y = (m.projection_head(m.backbone(t)) for t in v)
    n, d = x.shape
    repr_loss = F.mse_loss(x, y)
    x, y = x - x.mean(0), y - y.mean(0)
    std_x, std_y = torch.sqrt(x.var(0) + 1e-4), torch.sqrt(y.var(0) + 1e-4)
    std_loss = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2
    cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool)
    cov_loss = cov_x[off].pow(2).sum() / d + cov_y[off].pow(2).sum() / d
    return 25 * repr_loss + 25 * std_loss + 1 * cov_loss


def ref_moco(m, v, bank):
    q = F.normalize(m.projection_head(m.backbone(v[0])), dim=1)
    k = F.normalize(m.projection_head_momentum(m.backbone_momentum(v[1])), dim=1)
    neg = F.normalize(bank, dim=1) if bank.shape[0] != q.shape[1] else F.normalize(bank.T, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ neg.T], 1) / 0.2
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def ref_dino(m, v, center, tt=0.04, st=0.1):
    teacher = [m.teacher_head(m.teacher_backbone(x)) for x in v[:2]]
    student = [m.head(m.backbone(x)) for x in v]
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        p = F.softmax((t - center.reshape(1, -1)) / tt, dim=1)
        for j, s in enumerate(student):
            if i == j:
                continue
            total = total + (-p * F.log_softmax(s / st, dim=1)).sum(1).mean()
            pairs += 1
    return total / pairs


def sinkhorn(scores, eps=0.05, iters=3):
    # SwaV Algorithm (Caron et al. 2020, appendix A.1): Q = exp(C^T Z / eps), alternate row/column normalisation
    q = torch.exp(scores / eps).T  # K x B
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iters):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / b
    return (q * b).T


def ref_swav(m, v, temp=0.1):
    m.prototypes.normalize()
    scores = [m.prototypes(F.normalize(m.projection_head(m.backbone(x)), dim=1)) for x in v]
    total = 0.0
    for i in range(2):
        q = sinkhorn(scores[i].detach())
        sub = 0.0
        for j, s in enumerate(scores):
            if j != i:
                sub = sub - (q * F.log_softmax(s / temp, dim=1)).sum(1).mean()
        total = total + sub / (len(scores) - 1)
    return total / 2


REFERENCES = {
    "byol": ref_byol,
    "simsiam": ref_simsiam,
    "barlow_twins": ref_barlow,
    "vicreg": ref_vicreg,
    "swav": ref_swav,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_loss_matches_paper_formula(name):
    torch.manual_seed(0)
    m = create_method(name, _TinyBackbone()).eval()
    v = _views(m.n_views)
    with torch.no_grad():
        ours = m.training_step(v)["loss"]
        ref = REFERENCES[name](m, v)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5), (ours, ref)


def test_moco_loss_matches_infonce_with_queue():
    torch.manual_seed(0)
    m = create_method("moco", _TinyBackbone(), queue_size=32, symmetric=False).eval()
    v = _views(2)
    bank = m.criterion.memory_bank.bank.clone()
    with torch.no_grad():
        ref = ref_moco(m, v, bank)
    ours = m.training_step(v)["loss"]
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_dino_loss_matches_centred_cross_entropy_over_view_pairs():
    torch.manual_seed(0)
    m = create_method("dino", _TinyBackbone(), output_dim=64, n_local=2).eval()
    m.on_step_start(0, 10, 0)
    v = _views(m.n_views)
    center = m.criterion.center.clone()
    with torch.no_grad():
        ref = ref_dino(m, v, center)
        ours = m.training_step(v)["loss"]
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5)
    assert not torch.equal(m.criterion.center, center)  # centre moved with momentum


@pytest.mark.parametrize("name", ["byol", "moco", "dino"])
def test_momentum_branch_follows_ema_and_is_not_trained(name):
    torch.manual_seed(0)
    m = create_method(name, _TinyBackbone())
    online, target = (m.backbone, m.teacher_backbone) if name == "dino" else (m.backbone, m.backbone_momentum)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.conv.weight.add_(1.0)
    before = target.conv.weight.clone()
    m.on_step_start(0, 100, 0)
    m.on_step_end(0, 100)
    mom = m.momentum(0.996, 1.0) if name != "moco" else 0.999
    assert torch.allclose(target.conv.weight, mom * before + (1 - mom) * online.conv.weight, atol=1e-6)


def test_ema_update_and_cosine_momentum_schedule():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    expected = 0.9 * b.weight.detach() + 0.1 * a.weight.detach()
    ema_update(a, b, 0.9)
    assert torch.allclose(b.weight, expected)
    m = create_method("byol", _TinyBackbone())
    m.on_step_start(0, 100, 0)
    assert m.momentum(0.996) == pytest.approx(0.996)
    m.on_step_start(50, 100, 0)
    assert m.momentum(0.996) == pytest.approx(0.998)
    m.on_step_start(100, 100, 0)
    assert m.momentum(0.996) == pytest.approx(1.0)


def nt_xent_reference(z0, z1, tau):
    """Chen et al. 2020, eq. 1: l(i,j) = -log exp(sim(z_i,z_j)/tau) / sum_{k != i} exp(sim(z_i,z_k)/tau)."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = len(z0)
    sim = z @ z.T / tau
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(torch.exp(sim[i, k]) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(sim[i, j]) / denom)
    return total / (2 * n)


def test_simclr_loss_matches_paper_formula():
    torch.manual_seed(0)
    method = create_method("simclr", _TinyBackbone(), temperature=0.3)
    z0, z1 = torch.randn(6, 8), torch.randn(6, 8)
    assert torch.allclose(method.criterion(z0, z1), nt_xent_reference(z0, z1, 0.3), atol=1e-5)


@pytest.mark.parametrize("name", sorted(list_methods()))
def test_training_step_reaches_backbone(name):
    torch.manual_seed(0)
    backbone = _TinyBackbone()
    labelled = method_class(name).needs_labels  # the loop passes num_classes and the batch labels
    method = create_method(name, backbone, **({"num_classes": 3} if labelled else {}))
    views = [torch.randn(8, 3, 8, 8) for _ in range(method.n_views)]
    out = method(views, torch.arange(8) % 3) if labelled else method(views)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert backbone.conv.weight.grad is not None and backbone.conv.weight.grad.abs().sum() > 0
    assert out["representation"].shape == (8, 16)
