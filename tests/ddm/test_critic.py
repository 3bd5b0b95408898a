"""The domain critic, the Wasserstein dual terms and the gradient penalty (paper section 2.4, Gulrajani et al.)."""

import pytest
import torch
import torch.nn.functional as F

from replens.ddm import DomainCritic, critic_loss, encoder_invariance_loss, gradient_penalty, invariance_terms


def test_critic_is_an_mlp_with_leaky_relu_on_h_and_onehot_y():
    critic = DomainCritic(5, 3, hidden_dim=7, num_layers=2)
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in critic.modules()) == 2
    h, y = torch.randn(4, 5), torch.tensor([0, 2, 1, 2])
    expected = critic.net(torch.cat([h, F.one_hot(y, 3).float()], 1)).squeeze(1)
    assert torch.allclose(critic(h, y), expected)
    with pytest.raises(ValueError, match="domain labels"):
        critic(h, torch.tensor([0, 3, 1, 2]))


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    critic = DomainCritic(4, 2, num_layers=1)
    # make D linear: one hidden layer with identity-like weights and slope 1 is a linear map overall
    critic.net[1].negative_slope = 1.0
    w = (critic.net[2].weight @ critic.net[0].weight).squeeze(0)
    h = torch.randn(10, 4)
    y, y_rand = torch.randint(0, 2, (10,)), torch.randint(0, 2, (10,))
    gp = gradient_penalty(critic, h, y, y_rand, torch.rand(10))
    assert float(gp) == pytest.approx(float((w.norm() - 1) ** 2), rel=1e-5)


def test_gradient_penalty_matches_a_direct_computation_at_the_interpolates():
    torch.manual_seed(1)
    critic = DomainCritic(3, 3, hidden_dim=8)
    h = torch.randn(6, 3)
    y, y_rand, alpha = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 2, 0, 1, 0, 1]), torch.rand(6)
    real = torch.cat([h, F.one_hot(y, 3).float()], 1)
    fake = torch.cat([h, F.one_hot(y_rand, 3).float()], 1)
    total = 0.0
    for i in range(6):
        x = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i]).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic.net(x[None]).sum(), x)
        total += (g.norm() - 1) ** 2
    gp = gradient_penalty(critic, h, y, y_rand, alpha)
    assert float(gp) == pytest.approx(float(total / 6), rel=1e-5)
    gp.backward()  # create_graph: the penalty trains the critic
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters() if p.dim() == 2)


def test_encoder_side_leaves_the_critic_gradients_alone():
    critic = DomainCritic(4, 2)
    h = torch.randn(8, 4, requires_grad=True)
    y, y_rand = torch.randint(0, 2, (8,)), torch.randint(0, 2, (8,))
    loss = encoder_invariance_loss(critic, h, y, y_rand)
    assert float(loss) == pytest.approx(float(invariance_terms(critic, h, y, y_rand).mean()), rel=1e-6)
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())


def test_critic_ascent_detects_domain_information_and_not_its_absence():
    """Trained on (h, y) vs (h, y_rand), the Wasserstein estimate is large when h encodes y and ~0 when not."""

    def train(h, y):
        torch.manual_seed(0)
        critic = DomainCritic(h.shape[1], 2, hidden_dim=32)
        opt = torch.optim.Adam(critic.parameters(), lr=5e-3)
        for _ in range(150):
            y_rand = torch.randint(0, 2, y.shape)
            loss, _ = critic_loss(critic, h, y, y_rand, torch.rand(len(y)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        y_rand = torch.randint(0, 2, y.shape)
        return float(invariance_terms(critic, h, y, y_rand).mean())

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    informative = torch.randn(256, 4, generator=g) + 3.0 * F.one_hot(y, 4).float()
    independent = torch.randn(256, 4, generator=g)
    assert train(informative, y) > 0.3
    assert abs(train(independent, y)) < 0.1
