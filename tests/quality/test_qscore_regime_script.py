"""scripts/validate_qscore_regime.py: its degradations do what they say, and its AUROC is the library's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "validate_qscore_regime.py"
_spec = importlib.util.spec_from_file_location("validate_qscore_regime", _PATH)
regime = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regime)


def _images(n: int = 6, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(40, 216, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_contrast_cut_scales_deviation_from_the_mean():
    x = _images()
    y = regime.degrade(x, "contrast", 0.8, torch.Generator().manual_seed(1))
    dx = x.float() - x.float().mean(dim=(1, 2, 3), keepdim=True)
    dy = y.float() - x.float().mean(dim=(1, 2, 3), keepdim=True)
    # (x - m) * 0.2, rounded to uint8: within half a grey level
    assert torch.allclose(dy, 0.2 * dx, atol=0.51)


def test_blur_keeps_a_flat_image_and_smooths_a_noisy_one():
    flat = torch.full((2, 3, 32, 32), 117, dtype=torch.uint8)
    assert torch.equal(regime.degrade(flat, "blur", 5, torch.Generator()), flat)
    x = _images()
    y = regime.degrade(x, "blur", 5, torch.Generator())
    assert y.float().std() < 0.5 * x.float().std()
    # a 5 x 5 box mean at an interior pixel
    assert abs(float(y[0, 0, 10, 10]) - float(x[0, 0, 8:13, 8:13].float().mean())) <= 0.5


def test_occluder_is_one_flat_square_and_leaves_the_rest():
    x = _images(n=4)
    y = regime.degrade(x, "occlude", 0.45, torch.Generator().manual_seed(3))
    side = int(0.45 * 32)
    for i in range(4):
        changed = (y[i] != x[i]).any(dim=0)
        rows, cols = torch.nonzero(changed, as_tuple=True)
        assert 0 < changed.sum() <= side * side
        box = y[i][:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == box[:, :1, :1]).all()  # one colour over the box


def test_noise_has_the_stated_sigma():
    x = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    y = regime.degrade(x, "noise", 0.25, torch.Generator().manual_seed(0))
    assert (y.float() - 128).std() / 255 == pytest.approx(0.25, rel=0.05)


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown degradation 'rain'"):
        regime.degrade(_images(), "rain", 1.0, torch.Generator())


def test_auroc_matches_the_rank_definition():
    rng = np.random.default_rng(0)
    scores, positive = rng.normal(size=200), rng.random(200) < 0.6
    pairs = (scores[positive][:, None] > scores[~positive][None, :]).mean()
    assert regime.auroc(scores, positive) == pytest.approx(100 * pairs)
