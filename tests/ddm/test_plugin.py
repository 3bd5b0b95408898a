"""The DDM plug-in: the h^p wrapper, one alternating encoder/critic step, Eq. 2.1's terms."""

import numpy as np
import pytest
import torch
from torch import nn

from replens.ddm import DDMPlugin, DomainSplitBackbone, domain_variant_loss, encoder_invariance_loss
from replens.ssl import create_method, momentum_copy


class _Tiny(nn.Module):
    feature_dim = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_wrapper_gives_the_recipe_the_invariant_part_and_records_full_h():
    torch.manual_seed(0)
    enc = _Tiny()
    w = DomainSplitBackbone(enc, 4)
    assert w.feature_dim == 12 and w.full_dim == 16 and w.base_backbone is enc
    teacher = momentum_copy(w)  # made before recording is switched on, as recipes do in __init__
    w.recording = True
    x = torch.randn(3, 3, 8, 8)
    hp = w(x)
    assert torch.equal(hp, enc(x)[:, 4:])
    (full,) = w.take_records()
    assert torch.equal(full, enc(x)) and full.requires_grad and w.take_records() == []
    with torch.no_grad():
        w(x)
    w.eval()
    w(x)
    w.train()
    teacher(x)
    assert w.take_records() == [] and teacher.take_records() == []
    for _ in range(w.max_records + 5):
        w(x)
    assert len(w.take_records()) == w.max_records  # bounded even if nobody consumes them


def test_wrapper_state_dict_is_the_encoders():
    enc = _Tiny()
    w = DomainSplitBackbone(enc, 4)
    assert w.state_dict().keys() == enc.state_dict().keys()
    parent = nn.Module()
    parent.backbone = w
    assert set(parent.state_dict()) == {f"backbone.{k}" for k in enc.state_dict()}
    fresh = nn.Module()
    fresh.backbone = DomainSplitBackbone(_Tiny(), 4)
    fresh.load_state_dict(parent.state_dict())  # strict
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), parent.state_dict().values(),
                                                 strict=True))
    plain = _Tiny()
    plain.load_state_dict(w.state_dict())  # strict: a DDM encoder loads into the plain backbone
    with pytest.raises(ValueError, match="prefix_dim"):
        DomainSplitBackbone(_Tiny(), 16)


def _setup(ssl_weight=0.5, **kw):
    torch.manual_seed(0)
    plugin = DDMPlugin(prefix_dim=4, critic_hidden=16, ssl_weight=ssl_weight, **kw)
    backbone = plugin.wrap_backbone(_Tiny())
    method = create_method("simclr", backbone)
    domains = np.array([0, 1] * 8)
    plugin.setup(method, {"num_domains": 2, "domains": domains, "labels": np.zeros(16, dtype=int),
                          "num_samples": 16, "epochs": 1})
    method.plugins = nn.ModuleList([plugin])
    return plugin, backbone, method


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def test_one_step_updates_encoder_then_critic_in_alternation():
    plugin, backbone, method = _setup()
    private = {id(p) for p in plugin.private_parameters()}
    critic_params = list(plugin.critic.parameters())
    assert {id(p) for p in critic_params} == private
    encoder_params = list(backbone.encoder.parameters())
    optimizer = torch.optim.Adam([p for p in method.parameters() if id(p) not in private], lr=1e-2)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(8, 3, 8, 8, generator=g) for _ in range(2)]
    batch = {"domain": torch.tensor([0, 1, 1, 0, 1, 0, 0, 1]), "index": torch.arange(8)}

    sampler = torch.Generator().set_state(plugin.generator.get_state())
    out = method(views)
    terms = plugin.loss(out, batch, 0)
    # Eq. 2.1's terms, recomputed directly from the encoder
    full = backbone.encoder(torch.cat(views))
    y = batch["domain"].repeat(2)
    assert float(terms["d_var"]) == pytest.approx(float(domain_variant_loss(full[:, :4], y, 0.5)), rel=1e-5)
    y_rand = torch.multinomial(torch.tensor([0.5, 0.5]), 16, replacement=True, generator=sampler)
    critic_in = torch.nn.functional.normalize(full[:, 4:], dim=1)  # the critic sees h^p on the unit sphere
    expected_invar = encoder_invariance_loss(plugin.critic, critic_in, y, y_rand)
    assert float(terms["d_invar"]) == pytest.approx(float(expected_invar), rel=1e-5)
    assert float(out["loss"] + terms["ssl_scale"]) == pytest.approx(0.5 * float(out["loss"]))  # lambda = 0.5
    assert out["representation"].shape == (8, 16)  # monitors see the full h

    critic_before, encoder_before = _snapshot(critic_params), _snapshot(encoder_params)
    loss = out["loss"] + sum(terms.values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert _changed(encoder_before, encoder_params)  # encoder step
    assert not _changed(critic_before, critic_params)  # ... leaves the critic alone
    assert all(p.grad is None for p in critic_params)

    encoder_after = _snapshot(encoder_params)
    stats = plugin.after_step(0, 10, out, batch)
    assert _changed(critic_before, critic_params)  # critic step
    assert not _changed(encoder_after, encoder_params)  # ... leaves the encoder alone
    assert stats["critic_lr"] == pytest.approx(0.005) and {"wasserstein", "gp", "critic_loss"} <= set(stats)
    assert plugin._critic_lr(5, 10) == pytest.approx(0.0025) and plugin._critic_lr(10, 10) == pytest.approx(0.0)


def test_critic_ascent_raises_the_wasserstein_estimate_that_the_encoder_descends():
    """Alternating descent-ascent: the critic's updates increase L_d_invar on a fixed batch."""
    plugin, backbone, method = _setup(critic_steps=60)
    h = torch.randn(32, 12) + 2.0 * torch.nn.functional.one_hot(torch.arange(32) % 2, 12).float()
    y = torch.arange(32) % 2
    plugin._cache = {"h": h, "y": y}
    y_rand = 1 - y  # the other domain: twice the expectation over y_rand ~ P(y)
    before = float(encoder_invariance_loss(plugin.critic, h, y, y_rand))
    plugin._critic_update(0, 100)
    after = float(encoder_invariance_loss(plugin.critic, h, y, y_rand))
    assert after > before + 0.15


def test_outliers_are_left_out_of_the_ddm_losses():
    plugin, backbone, method = _setup(num_pseudo_domains=2)
    assert plugin.bank.shape == (16, 16)
    views = [torch.randn(8, 3, 8, 8) for _ in range(2)]
    batch = {"domain": torch.zeros(8, dtype=torch.long), "index": torch.arange(8)}
    terms = plugin.loss(method(views), batch, 0)  # before the first clustering: SSL alone (warm-up)
    assert float(terms["d_var"]) == 0.0 and float(terms["d_invar"]) == 0.0 and plugin._cache == {}
    assert bool(plugin.bank_filled[:8].all()) and not bool(plugin.bank_filled[8:].any())
    # plant a clustering where the first three samples are outliers
    plugin.clustering.centroids = np.zeros((2, 16))
    plugin.clustering.last_epsilon = 0.5
    plugin.pseudo_labels.copy_(torch.tensor([-1, -1, -1, 0, 1, 0, 1, 0] + [-1] * 8))
    plugin.clustered[:8] = True
    out = method(views)
    terms = plugin.loss(out, batch, 1)
    y = torch.tensor([-1, -1, -1, 0, 1, 0, 1, 0]).repeat(2)
    full = backbone.encoder(torch.cat(views))
    assert float(terms["d_var"]) == pytest.approx(float(domain_variant_loss(full[:, :4], y, 0.5)), rel=1e-5)
    assert torch.equal(plugin._cache["y"], y[y >= 0]) and len(plugin._cache["h"]) == 10


def test_ddm_needs_two_domains_or_pseudo_domains():
    plugin = DDMPlugin()
    method = create_method("simclr", plugin.wrap_backbone(_Tiny()))
    with pytest.raises(ValueError, match="--ddm-domains"):
        plugin.setup(method, {"num_domains": 1, "domains": np.zeros(4, dtype=int), "num_samples": 4})
