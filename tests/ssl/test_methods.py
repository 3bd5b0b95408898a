"""Each recipe's loss against a direct implementation of its paper's formula.

The reference functions below are written from the papers (and their official
pseudo-code), not from lightly, and are fed the recipe's own heads, so a wrong
wiring (a missing stop-gradient, a swapped view, a wrong normalisation)
changes the number. :func:`test_every_method_matches_its_paper_formula` runs
over the method registry: a newly registered method without an entry in
``REFERENCES`` (and in ``LIGHTLY``: lightly's loss, or PyTorch's where lightly has none)
fails it.
"""

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss, SwaVLoss, VICRegLoss
from torch import nn

from replens.ssl import METHODS, create_method, ema_update, list_methods, method_class


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


def ref_simclr(m, v, tau=0.5):
    z0, z1 = (m.projection_head(m.backbone(x)) for x in v)
    return nt_xent_reference(z0, z1, tau)


def ref_moco_symmetric(m, v):
    # MoCo v2 symmetrised (official CIFAR demo): (L(q1, k2) + L(q2, k1)) / 2, both against the queue of
    # earlier batches; this batch's keys are enqueued only after both terms
    bank = m.criterion.memory_bank.bank.clone()
    return 0.5 * (ref_moco(m, v, bank) + ref_moco(m, v[::-1], bank))


def ref_dino_state(m, v):
    return ref_dino(m, v, m.criterion.center.clone())


def ref_supervised(m, v, labels):
    # cross-entropy of the linear head: mean over the batch of logsumexp(W h + b) - (W h + b)_y
    logits = m.backbone(v[0]) @ m.head.weight.T + m.head.bias
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(len(labels)), labels]).mean()


def ref_dual_encoder(m, v, tau=0.5):
    # Eq. 5.2: InfoNCE between g_im's projection of the image view and g_freq's projection of the frequency view
    return nt_xent_reference(m.projection_head(m.backbone(v[0])), m.freq_projection_head(m.freq_backbone(v[1])), tau)


def _bank_of(m, loss):
    loss.memory_bank.bank.copy_(m.criterion.memory_bank.bank)
    return loss


def _lightly_moco(m, v):
    q = [m.projection_head(m.backbone(x)) for x in v]
    k = [m.projection_head_momentum(m.backbone_momentum(x)) for x in v]
    loss = _bank_of(m, NTXentLoss(temperature=0.2, memory_bank_size=tuple(m.criterion.memory_bank.bank.shape))).double()
    return 0.5 * (loss(q[0], k[1]) + loss(q[1], k[0]))  # under no_grad: the copied bank is not updated


def _lightly_dino(m, v):
    loss = DINOLoss(output_dim=m.criterion.center.shape[-1], warmup_teacher_temp=0.04, teacher_temp=0.04).double()
    loss.center.copy_(m.criterion.center)
    teacher = [m.teacher_head(m.teacher_backbone(x)) for x in v[:2]]
    return loss(teacher, [m.head(m.backbone(x)) for x in v], epoch=0)


def _lightly_swav(m, v):
    m.prototypes.normalize()
    scores = [m.prototypes(F.normalize(m.projection_head(m.backbone(x)), dim=1)) for x in v]
    return SwaVLoss(temperature=0.1)(scores[:2], scores[2:])


def _lightly_pair(loss, head):
    def compute(m, v):
        za, zb = (head(m, x) for x in v)
        return loss(za, zb)

    return compute


def _lightly_predictor(m, v):
    cos = NegativeCosineSimilarity()
    if hasattr(m, "projection_head_momentum"):  # BYOL: the target is the momentum branch
        z = [m.projection_head_momentum(m.backbone_momentum(x)) for x in v]
    else:  # SimSiam: the target is the same network's projection, stop-gradient
        z = [m.projection_head(m.backbone(x)).detach() for x in v]
    p = [m.prediction_head(m.projection_head(m.backbone(x))) for x in v]
    return 0.5 * (cos(p[0], z[1]) + cos(p[1], z[0]))


def _projection(m, x):
    return m.projection_head(m.backbone(x))


#: method -> (create_method kwargs, reference written from the paper: (method, views, labels) -> loss)
REFERENCES = {
    "barlow_twins": ({}, lambda m, v, y: ref_barlow(m, v)),
    "byol": ({}, lambda m, v, y: ref_byol(m, v)),
    "dino": ({"output_dim": 64, "n_local": 2}, lambda m, v, y: ref_dino_state(m, v)),
    "dual_encoder": ({}, lambda m, v, y: ref_dual_encoder(m, v)),
    "moco": ({"queue_size": 32}, lambda m, v, y: ref_moco_symmetric(m, v)),
    "simclr": ({}, lambda m, v, y: ref_simclr(m, v)),
    "simsiam": ({}, lambda m, v, y: ref_simsiam(m, v)),
    "supervised": ({"num_classes": 3}, ref_supervised),
    "swav": ({"n_prototypes": 32}, lambda m, v, y: ref_swav(m, v)),
    "vicreg": ({}, lambda m, v, y: ref_vicreg(m, v)),
}

#: labels of the test batch (``_setup``), for the methods that need them
_LABELS = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1])

#: method -> a peer library's implementation of the same loss on the method's heads: lightly's, or
#: PyTorch's own where lightly has none (supervised: ``F.cross_entropy``)
LIGHTLY = {
    "barlow_twins": _lightly_pair(BarlowTwinsLoss(lambda_param=0.0051), _projection),
    "byol": _lightly_predictor,
    "dino": _lightly_dino,
    "dual_encoder": lambda m, v: NTXentLoss(temperature=0.5)(
        _projection(m, v[0]), m.freq_projection_head(m.freq_backbone(v[1]))
    ),
    "moco": _lightly_moco,
    "simclr": _lightly_pair(NTXentLoss(temperature=0.5), _projection),
    "simsiam": _lightly_predictor,
    "supervised": lambda m, v: torch.nn.functional.cross_entropy(m.head(m.backbone(v[0])), _LABELS),
    "swav": _lightly_swav,
    "vicreg": _lightly_pair(VICRegLoss(), _projection),
}


def _setup(name):
    """The recipe in float64 and eval mode (batch norm as a fixed affine map), its views and labels."""
    torch.manual_seed(0)
    kwargs, _ = REFERENCES[name]
    m = create_method(name, _TinyBackbone(), **kwargs).double().eval()
    m.on_step_start(0, 10, 0)
    v = [x.double() for x in _views(m.n_views)]
    return m, v, _LABELS


def _our_loss(m, v, y):
    return (m(v, y) if m.needs_labels else m(v))["loss"]


def _grads(m, loss):
    params = [p for p in m.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_matches_its_paper_formula(name):
    """Loss and gradients (so also every stop-gradient) equal the paper's formula to 1e-5 relative."""
    if name not in REFERENCES or name not in LIGHTLY:
        pytest.fail(f"SSL method {name!r} is registered but has no reference loss in tests/ssl/test_methods.py "
                    "(add it to REFERENCES, and to LIGHTLY: lightly's loss, or PyTorch's where lightly has none)")
    m, v, y = _setup(name)
    ref = REFERENCES[name][1](m, v, y)  # before our step: it reads the pre-step queue / centre
    ref_grads = _grads(m, ref)
    ours = _our_loss(m, v, y)
    # supervised takes the cross-entropy in float32 (autocast-safe); every other loss stays in float64
    assert torch.allclose(ours, ref.detach().to(ours.dtype), rtol=1e-5, atol=0), (name, float(ours), float(ref))
    for ours_g, ref_g in zip(_grads(m, ours), ref_grads, strict=True):
        # 1e-5 of each gradient tensor's scale (lightly's DINO divides by a float32 temperature: ~2e-8 relative)
        scale = float(ref_g.abs().max())
        assert torch.allclose(ours_g, ref_g.to(ours_g.dtype), rtol=1e-5, atol=1e-5 * scale + 1e-12), name


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_matches_lightly(name):
    if name not in LIGHTLY:
        pytest.fail(f"SSL method {name!r} is registered but missing from LIGHTLY in tests/ssl/test_methods.py")
    m, v, y = _setup(name)
    with torch.no_grad():
        theirs = LIGHTLY[name](m, v)
    ours = _our_loss(m, v, y)
    assert torch.allclose(ours.detach().double(), theirs.double(), rtol=1e-5, atol=0), (name, float(ours), float(theirs))


def test_reference_tables_list_exactly_the_registered_methods():
    assert sorted(REFERENCES) == sorted(LIGHTLY) == METHODS.names() == sorted(list_methods())


def test_symmetric_moco_enqueues_both_keys_after_the_step():
    m, v, _ = _setup("moco")
    with torch.no_grad():
        keys = [m.projection_head_momentum(m.backbone_momentum(x)) for x in v]
    before = m.criterion.memory_bank.bank.clone()
    m(v)["loss"].backward()
    bank = m.criterion.memory_bank.bank
    assert torch.allclose(bank[:16], F.normalize(torch.cat([keys[1], keys[0]]), dim=1), rtol=1e-6, atol=1e-9)
    assert torch.equal(bank[16:], before[16:])


def test_moco_queue_is_in_the_state_dict_so_a_resumed_step_is_the_same():
    m, v, _ = _setup("moco")
    m(v)["loss"].backward()  # the queue now holds this batch's keys
    assert {"criterion.memory_bank.bank", "criterion.memory_bank.bank_ptr"} <= set(m.state_dict())
    torch.manual_seed(1)
    resumed = create_method("moco", _TinyBackbone(), **REFERENCES["moco"][0]).double().eval()
    resumed.load_state_dict(m.state_dict())
    assert int(resumed.criterion.memory_bank.bank_ptr) == 16
    assert torch.equal(resumed(v)["loss"], m(v)["loss"])


def test_dino_centre_moves_by_the_teacher_batch_mean_with_momentum_0_9():
    m, v, _ = _setup("dino")
    center = m.criterion.center.clone()
    with torch.no_grad():
        teacher = torch.cat([m.teacher_head(m.teacher_backbone(x)) for x in v[:2]])
        m(v)
    assert torch.allclose(m.criterion.center, 0.9 * center + 0.1 * teacher.mean(0), rtol=1e-6, atol=1e-9)


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
