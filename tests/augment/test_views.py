import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from replens.augment import ViewConfig, ViewPipeline, color_matrix, gaussian_blur, sample_crops

N = 20000


def _plain(**kw):
    base = dict(crop_scale=(1, 1), crop_ratio=(1, 1), hflip_prob=0, jitter_prob=0, gray_prob=0)
    base.update(kw)
    return ViewConfig(**base)


def test_identity_config_reproduces_the_image():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = ViewPipeline(_plain(size=16))(x, normalize=False)
    assert torch.allclose(out * 255, x.float(), atol=1e-2)


def test_flip_matches_torchvision():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = ViewPipeline(_plain(size=16, hflip_prob=1.0))(x, normalize=False)
    assert torch.allclose(out * 255, TF.horizontal_flip(x).float(), atol=1e-2)


def test_crop_distribution_follows_torchvision_rule():
    g = torch.Generator().manual_seed(0)
    boxes = sample_crops(N, (0.08, 1.0), (3 / 4, 4 / 3), g)
    cx, cy, w, h = boxes.unbind(1)
    area, ratio = w * h, w / h
    assert (w <= 1).all() and (h <= 1).all()
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert area.min() >= 0.08 - 1e-6
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    # log-ratio uniform on accepted draws: mean about 0
    assert abs(ratio.log().mean().item()) < 0.01
    # compare area distribution with torchvision's own sampler on a square image
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    tv = np.array([np.prod(RandomResizedCrop.get_params(torch.zeros(3, 100, 100), [0.08, 1.0], [3 / 4, 4 / 3])[2:])
                   for _ in range(4000)]) / 1e4
    assert abs(area.mean().item() - tv.mean()) < 0.02


def test_parameter_probabilities_and_ranges():
    cfg = ViewConfig(size=8, blur_prob=0.5, solarize_prob=0.2)
    p = ViewPipeline(cfg).sample(N, torch.Generator().manual_seed(1))
    tol = 4 / math.sqrt(N)
    assert abs(p.flip.float().mean() - 0.5) < tol
    assert abs(p.jitter.float().mean() - 0.8) < tol
    assert abs(p.gray.float().mean() - 0.2) < tol
    assert abs((p.blur_sigma > 0).float().mean() - 0.5) < tol
    assert abs(p.solarize.float().mean() - 0.2) < tol
    for name, lo, hi in (("brightness", 0.2, 1.8), ("contrast", 0.2, 1.8), ("saturation", 0.2, 1.8), ("hue", -0.2, 0.2)):
        v = getattr(p, name)
        assert v.min() >= lo and v.max() <= hi
        assert abs(v.mean().item() - (lo + hi) / 2) < 0.02  # uniform
    s = p.blur_sigma[p.blur_sigma > 0]
    assert s.min() >= 0.1 and s.max() <= 2.0


def test_params_replay_exactly():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    pipe = ViewPipeline(ViewConfig(size=16, blur_prob=0.5))
    params = pipe.sample(8, torch.Generator().manual_seed(3))
    assert torch.equal(pipe.apply(x, params), pipe.apply(x, params))


@pytest.mark.parametrize("factor", [0.5, 1.7])
def test_saturation_matrix_matches_torchvision(factor):
    x = torch.rand(2, 3, 8, 8)
    m = color_matrix(torch.ones(2), torch.full((2,), factor), torch.zeros(2))
    ours = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
    assert torch.allclose(ours, TF.adjust_saturation(x, factor), atol=1e-4)


def test_contrast_and_brightness_match_torchvision():
    x = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    cfg = _plain(size=8, jitter_prob=1.0)
    pipe = ViewPipeline(cfg)
    p = pipe.sample(1)
    p.brightness[:] = 1.3
    p.contrast[:] = 0.6
    p.saturation[:] = 1.0
    p.hue[:] = 0.0
    ours = pipe.apply(x, p, normalize=False)
    ref = TF.adjust_contrast(TF.adjust_brightness(x.float() / 255, 1.3), 0.6)
    assert torch.allclose(ours, ref, atol=1e-4)


def test_hue_rotation_preserves_luma_and_full_turn_is_identity():
    x = torch.rand(3, 3, 6, 6)
    m = color_matrix(torch.ones(3), torch.ones(3), torch.tensor([0.1, -0.2, 1.0]))
    out = torch.einsum("bij,bjhw->bihw", m, x)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((out * luma).sum(1), (x * luma).sum(1), atol=1e-5)
    assert torch.allclose(out[2], x[2], atol=1e-5)
    assert not torch.allclose(out[0], x[0], atol=1e-2)


def test_blur_matches_torchvision_and_zero_sigma_is_identity():
    x = torch.rand(2, 3, 20, 20)
    out = gaussian_blur(x, torch.tensor([1.0, 0.0]))
    assert torch.allclose(out[1], x[1])
    ref = TF.gaussian_blur(x[:1], kernel_size=[7, 7], sigma=[1.0, 1.0])
    assert torch.allclose(out[:1], ref, atol=1e-4)


def test_grayscale_and_solarize():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = ViewPipeline(_plain(size=8, gray_prob=1.0))(x, normalize=False)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    assert torch.allclose(out, TF.rgb_to_grayscale(x.float() / 255, 3), atol=1e-4)
    sol = ViewPipeline(_plain(size=8, solarize_prob=1.0))(x, normalize=False)
    ref = TF.solarize(x.float() / 255, 0.5)
    assert torch.allclose(sol, ref, atol=1e-5)
