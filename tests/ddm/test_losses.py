"""L_d_var (paper section 2.4) against a direct transcription of the equation."""

import math

import pytest
import torch

from replens.ddm import domain_variant_loss, domain_variant_terms, split_representation


def l_d_var_reference(h_d: torch.Tensor, y: torch.Tensor, tau: float) -> list[float | None]:
    """L_i = log( sum_j 1[j!=i] 1[y_i=y_j] sim(h_i,h_j) / sum_j 1[y_i!=y_j] sim(h_i,h_j) ),
    sim(a,b) = exp(a.b / (tau |a| |b|)); views with y < 0 take no part; None where undefined."""
    n = len(y)

    def sim(a, b):
        return math.exp(float(a @ b) / (tau * float(a.norm()) * float(b.norm())))

    out = []
    for i in range(n):
        if y[i] < 0:
            out.append(None)
            continue
        num = sum(sim(h_d[i], h_d[j]) for j in range(n) if j != i and y[j] >= 0 and y[j] == y[i])
        den = sum(sim(h_d[i], h_d[j]) for j in range(n) if y[j] >= 0 and y[j] != y[i])
        out.append(math.log(num / den) if num > 0 and den > 0 else None)
    return out


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_l_d_var_matches_the_equation(tau):
    g = torch.Generator().manual_seed(0)
    h_d = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, -1, 0, 1, 2])  # one outlier (-1)
    ref = l_d_var_reference(h_d, y, tau)
    terms, defined = domain_variant_terms(h_d, y, tau)
    assert defined.tolist() == [r is not None for r in ref]
    for t, r in zip(terms.tolist(), ref, strict=True):
        if r is not None:
            assert t == pytest.approx(r, rel=1e-5, abs=1e-6)
    loss = domain_variant_loss(h_d, y, tau)
    assert float(loss) == pytest.approx(-sum(r for r in ref if r is not None) / sum(r is not None for r in ref),
                                        rel=1e-5)


def test_undefined_views_are_left_out():
    h_d = torch.randn(6, 3, dtype=torch.float64)
    # domain 2 has a single view: no other view of its domain -> undefined; the outlier is ignored as a partner too
    y = torch.tensor([0, 0, 1, 1, 2, -1])
    ref = l_d_var_reference(h_d, y, 0.2)
    terms, defined = domain_variant_terms(h_d, y, 0.2)
    assert defined.tolist() == [True, True, True, True, False, False]
    assert terms[:4].tolist() == pytest.approx([r for r in ref[:4]], rel=1e-6)


def test_single_domain_batch_gives_a_differentiable_zero():
    h_d = torch.randn(4, 3, requires_grad=True)
    loss = domain_variant_loss(h_d, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert float(loss) == 0.0 and h_d.grad is not None and float(h_d.grad.abs().sum()) == 0.0


def test_minimising_the_loss_separates_the_domains():
    """The property L_d_var exists for: descending -L_d_var makes prefixes of one domain alike, of two unlike."""
    torch.manual_seed(0)
    y = torch.tensor([0, 1] * 8)
    h_d = torch.randn(16, 4, requires_grad=True)
    opt = torch.optim.SGD([h_d], lr=0.5)
    first = float(domain_variant_loss(h_d, y, 0.5))
    for _ in range(100):
        opt.zero_grad()
        domain_variant_loss(h_d, y, 0.5).backward()
        opt.step()
    z = torch.nn.functional.normalize(h_d.detach(), dim=1)
    cos = z @ z.T
    same = (y[:, None] == y[None, :]) & ~torch.eye(16, dtype=torch.bool)
    assert float(domain_variant_loss(h_d, y, 0.5)) < first - 1.0
    assert float(cos[same].mean()) > 0.9 and float(cos[y[:, None] != y[None, :]].mean()) < -0.5


def test_small_temperature_does_not_overflow():
    h_d = torch.randn(8, 4)
    loss = domain_variant_loss(h_d, torch.tensor([0, 1] * 4), temperature=1e-3)
    assert torch.isfinite(loss)


def test_split_representation_and_bad_prefix():
    h = torch.arange(12.0).view(2, 6)
    d, p = split_representation(h, 2)
    assert d.tolist() == [[0, 1], [6, 7]] and p.shape == (2, 4)
    with pytest.raises(ValueError, match="prefix_dim"):
        split_representation(h, 6)
