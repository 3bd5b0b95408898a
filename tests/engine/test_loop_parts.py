"""The shared training-loop parts that both CLIP trainers use: periodic actions and one CLIP update."""

from __future__ import annotations

import math

import pytest
import torch

from replens.engine.loop import clip_update, due


def test_due_fires_every_n_steps_and_at_the_last() -> None:
    assert [s for s in range(1, 11) if due(s, 4, 10)] == [4, 8, 10]
    assert [s for s in range(1, 11) if due(s, 0, 10)] == [10]  # 0: only at the end
    assert [s for s in range(0, 5) if due(s, 2, 4)] == [0, 2, 4]


def test_clip_update_steps_clamps_and_returns_the_loss() -> None:
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(100) - 1e-3))
    opt = torch.optim.SGD([weight, logit_scale], lr=1.0)
    loss = (weight**2).sum() - 10 * logit_scale  # the step pushes the temperature past its ceiling
    value = clip_update(opt, loss, logit_scale, step=0)
    assert value == pytest.approx(5.0 - 10 * (math.log(100) - 1e-3))
    torch.testing.assert_close(weight.detach(), torch.tensor([-1.0, -2.0]))
    assert float(logit_scale.detach()) == pytest.approx(math.log(100))


def test_clip_update_refuses_a_non_finite_loss() -> None:
    weight = torch.nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD([weight], lr=0.1)
    with pytest.raises(FloatingPointError, match="tiny CLIP loss became nan at step 7"):
        clip_update(opt, weight * float("nan"), torch.zeros(()), step=7, what="tiny CLIP loss")
