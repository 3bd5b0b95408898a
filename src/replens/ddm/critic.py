"""The domain critic D(h^p, y) and its Wasserstein losses (paper section 2.4, Eq. 2.1).

h^p must carry no domain information: the joint distribution of (h^p, y)
must equal the product of its marginals. The paper measures the gap with the
Wasserstein distance in its dual form (Arjovsky et al. 2017),

    W = max_{D 1-Lipschitz} E[D(h^p_i, y_i)] - E[D(h^p_i, y_rand)],  y_rand ~ P(y),

so the per-view term is L_i_d_invar = D(h^p_i, y_i) - D(h^p_i, y_rand). The
critic D ascends it, with the gradient penalty of Gulrajani et al. (2017) in
place of weight clipping; the encoder descends it (alternating gradient
descent-ascent, section 2.4). The paper's D is an MLP with LeakyReLU
activations (section 2.4.1); the domain label enters as a one-hot vector
concatenated to h^p.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class DomainCritic(nn.Module):
    """D(h^p, y): an MLP with LeakyReLU activations on ``[h^p, onehot(y)]`` (section 2.4.1).

    Args:
        feature_dim: Size of h^p (r - k).
        num_domains: Number of (pseudo-)domains M.
        hidden_dim: Width of the hidden layers.
        num_layers: Number of hidden layers.
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, feature_dim: int, num_domains: int, hidden_dim: int = 256, num_layers: int = 2,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        if num_domains < 2:
            raise ValueError(f"the domain critic needs at least 2 domains, got {num_domains}")
        if num_layers < 1 or hidden_dim < 1:
            raise ValueError(f"num_layers and hidden_dim must be positive, got {num_layers} and {hidden_dim}")
        self.feature_dim, self.num_domains = int(feature_dim), int(num_domains)
        layers: list[nn.Module] = []
        width = self.feature_dim + self.num_domains
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.LeakyReLU(negative_slope)]
            width = hidden_dim
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def joint_input(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[h, onehot(y)]`` for integer labels, or ``[h, y]`` for (soft) label vectors.

        Shape:
            h: (N, D); y: (N,) int or (N, M) float -> (N, D + M).
        """
        if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if bool(((y < 0) | (y >= self.num_domains)).any()):
                raise ValueError(f"domain labels must be in [0, {self.num_domains - 1}], got {y.unique().tolist()}")
            y = F.one_hot(y.long(), self.num_domains)
        return torch.cat([h, y.to(h.dtype)], dim=1)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Critic scores.

        Shape:
            h: (N, D); y: (N,) or (N, M) -> (N,).
        """
        return self.net(self.joint_input(h, y)).squeeze(1)


def gradient_penalty(critic: DomainCritic, h: torch.Tensor, y_real: torch.Tensor, y_fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): ``E[(||grad_x D(x)||_2 - 1)^2]`` at interpolates.

    The "real" samples are the joint inputs ``[h^p_i, onehot(y_i)]`` and the
    "fake" ones ``[h^p_i, onehot(y_rand)]``; ``x = alpha real + (1 - alpha) fake``
    and the gradient is taken w.r.t. the whole joint input. The graph is kept
    (``create_graph``) so the penalty trains the critic.

    Shape:
        h: (N, D); y_real, y_fake: (N,); alpha: (N,) in [0, 1] -> scalar.
    """
    real = critic.joint_input(h, y_real)
    fake = critic.joint_input(h, y_fake)
    mix = alpha.to(real.dtype).view(-1, 1)
    x = (mix * real + (1 - mix) * fake).detach().requires_grad_(True)
    scores = critic.net(x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return (grad.norm(2, dim=1) - 1).pow(2).mean()


def invariance_terms(critic: DomainCritic, h: torch.Tensor, y: torch.Tensor, y_rand: torch.Tensor) -> torch.Tensor:
    """Per-view L_i_d_invar = D(h^p_i, y_i) - D(h^p_i, y_rand) (section 2.4).

    Shape:
        h: (N, D); y, y_rand: (N,) -> (N,).
    """
    return critic(h, y) - critic(h, y_rand)


def encoder_invariance_loss(critic: DomainCritic, h: torch.Tensor, y: torch.Tensor, y_rand: torch.Tensor) -> torch.Tensor:
    """The encoder's side of Eq. 2.1: ``mean_i L_i_d_invar`` with the critic held fixed.

    The critic's parameters enter detached (``torch.func.functional_call``), so
    the encoder's backward pass leaves the critic's gradients untouched.

    Shape:
        h: (N, D) with grad; y, y_rand: (N,) -> scalar.
    """
    frozen = {name: p.detach() for name, p in critic.named_parameters()}
    real = functional_call(critic, frozen, (h, y))
    fake = functional_call(critic, frozen, (h, y_rand))
    return (real - fake).mean()


def critic_loss(critic: DomainCritic, h: torch.Tensor, y: torch.Tensor, y_rand: torch.Tensor, alpha: torch.Tensor,
                gp_weight: float = 10.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's loss: ``-mean_i L_i_d_invar + gp_weight * GP`` on detached h^p.

    Returns:
        ``(loss, parts)`` with parts ``wasserstein`` (the dual estimate) and ``gp``.

    Shape:
        h: (N, D); y, y_rand, alpha: (N,) -> scalar.
    """
    h = h.detach()
    wasserstein = invariance_terms(critic, h, y, y_rand).mean()
    gp = gradient_penalty(critic, h, y, y_rand, alpha)
    return -wasserstein + gp_weight * gp, {"wasserstein": wasserstein.detach(), "gp": gp.detach()}
