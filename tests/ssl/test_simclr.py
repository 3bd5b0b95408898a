import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replens.ssl import create_method, list_methods


class _TinyBackbone(nn.Module):
    feature_dim = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


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
    method = create_method(name, backbone)
    views = [torch.randn(8, 3, 8, 8) for _ in range(method.n_views)]
    out = method.training_step(views)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert backbone.conv.weight.grad is not None and backbone.conv.weight.grad.abs().sum() > 0
    assert out["representation"].shape == (8, 16)
