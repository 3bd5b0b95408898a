"""Fourier Domain Augmentations (paper section 5.4, Table C.2) and the format transform (section 5.6.1)."""

import math

import numpy as np
import pytest
import torch

from replens.augment import (
    VIEW_KINDS,
    FDAConfig,
    FourierAugment,
    ViewConfig,
    ViewPipeline,
    amplitude_rescale,
    fda_config,
    frequency_image,
    frequency_mask,
    gaussian_mixture_mask,
    irfft2,
    pack_spectrum,
    phase_shift,
    rfft2,
    spectrum_to_frequency_image,
    unpack_spectrum,
    view_kind,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OFF = dict(amplitude_prob=0.0, phase_prob=0.0, mask_prob=0.0, gmm_prob=0.0)


def _only(op, **kw):
    return FDAConfig(**{**OFF, op: 1.0, **kw})


def _images(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth blobs plus texture, so every frequency band carries energy
    base = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return (0.7 * x + 0.3 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def _angle_diff(a, b):
    """Phase of a relative to b, in (-pi, pi]."""
    return torch.angle(a * b.conj())


# ------------------------------------------------------------- transforms
@pytest.mark.parametrize("hw", [(16, 16), (15, 9), (32, 20), (1, 1)])
def test_inverse_transform_is_the_identity(hw):
    x = torch.rand(3, 3, *hw)
    torch.testing.assert_close(irfft2(rfft2(x), hw), x, atol=1e-5, rtol=0)
    # rfft2 is Eq. 5.1 without a shift (bin (0, 0) is the zero frequency), orthonormal
    ref = torch.from_numpy(np.fft.rfft2(x.double().numpy()) / math.sqrt(hw[0] * hw[1]))
    torch.testing.assert_close(rfft2(x).to(torch.complex128), ref, atol=1e-5, rtol=1e-5)
    # with no operation drawn the pipeline returns the image untouched
    assert torch.equal(FourierAugment(FDAConfig(**OFF))(x), x)


def test_amplitude_rescale_scales_amplitude_and_leaves_phase_unchanged():
    x = _images()
    fda = FourierAugment(_only("amplitude_prob", clamp=False))
    p = fda.sample(len(x), 16, 16, torch.Generator().manual_seed(0))
    f = rfft2(x)
    out = fda.apply_spectrum(f, p)
    strong = f.abs() > 1e-4
    # A(f) <- A(f) * p with p shared by the channels
    torch.testing.assert_close(out.abs(), f.abs() * p.amplitude_scale.unsqueeze(1), atol=1e-5, rtol=1e-5)
    assert _angle_diff(out, f)[strong].abs().max() < 1e-4
    # also after the inverse transform: the spectrum of the augmented image keeps the phase
    back = rfft2(fda.apply(x, p))
    assert _angle_diff(back, f)[strong].abs().max() < 1e-3
    assert not torch.allclose(back.abs(), f.abs())


def test_phase_shift_adds_theta_and_keeps_amplitude():
    x = _images()
    fda = FourierAugment(_only("phase_prob", phase_random_sign=True, clamp=False))
    p = fda.sample(len(x), 16, 16, torch.Generator().manual_seed(1))
    f = rfft2(x)
    out = fda.apply_spectrum(f, p)
    torch.testing.assert_close(out.abs(), f.abs(), atol=1e-5, rtol=1e-5)
    theta = p.phase_shift.view(-1, 1, 1, 1).expand_as(f)
    strong = f.abs() > 1e-4
    wrapped = torch.remainder(_angle_diff(out, f) - theta + math.pi, 2 * math.pi) - math.pi
    assert wrapped[strong].abs().max() < 1e-4


def test_frequency_mask_keeps_dc_and_drops_the_expected_fraction():
    n, h, w = 4000, 32, 32
    fda = FourierAugment(FDAConfig())  # Table C.2: p = 0.5, k ~ U(0.01, 0.1)
    p = fda.sample(n, h, w, torch.Generator().manual_seed(2))
    assert p.keep[:, 0, 0].all()
    bins = h * (w // 2 + 1) - 1  # DC excluded
    dropped = (~p.keep).flatten(1).sum(1).float() / bins
    on = p.mask
    assert abs(on.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)
    assert (dropped[~on] == 0).all()
    k = p.mask_fraction[on]
    # each image drops Binomial(bins, k) / bins: within 5 standard deviations of its own k
    assert ((dropped[on] - k).abs() <= 5 * torch.sqrt(k * (1 - k) / bins) + 1e-6).all()
    # and on average the expected fraction E[k] = 0.055
    assert abs(dropped[on].mean().item() - 0.055) < 0.003
    # applying it zeroes exactly the dropped bins and keeps the zero frequency
    x = _images(n=8)
    fda_on = FourierAugment(_only("mask_prob"))
    q = fda_on.sample(8, 16, 16, torch.Generator().manual_seed(3))
    out = fda_on.apply_spectrum(rfft2(x), q)
    dropped_bins = (~q.keep).unsqueeze(1).expand_as(out)
    assert (out[dropped_bins] == 0).all()
    torch.testing.assert_close(out[..., 0, 0], rfft2(x)[..., 0, 0])


def test_gaussian_mixture_mask_matches_the_formula_and_lies_in_unit_interval():
    g = torch.Generator().manual_seed(4)
    centers = torch.stack([torch.randint(0, 12, (3, 5), generator=g), torch.randint(0, 7, (3, 5), generator=g)], 2)
    sigmas = torch.rand(3, 5, 2, generator=g) * 2 + 0.5
    mask = gaussian_mixture_mask(centers.float(), sigmas, (12, 7))
    u = torch.arange(12.0).view(-1, 1)
    v = torch.arange(7.0).view(1, -1)
    for b in range(3):
        ref = torch.ones(12, 7)
        for o in range(5):
            (u0, v0), (s0, s1) = centers[b, o].float(), sigmas[b, o]
            ref *= 1 - torch.exp(-((u - u0) ** 2 / (2 * s0**2) + (v - v0) ** 2 / (2 * s1**2)))
        torch.testing.assert_close(mask[b], ref, atol=1e-6, rtol=1e-5)
        assert mask[b][tuple(centers[b, 0].tolist())] < 1e-6  # a centre is fully masked
    assert mask.min() >= 0 and mask.max() <= 1
    # at Table C.2 sizes too, including the binary frequency mask
    p = FourierAugment(fda_config(64, gmm_prob=1.0)).sample(50, 64, 64, g)
    full = FourierAugment(fda_config(64)).magnitude_factor(p) / p.amplitude_scale
    assert full.min() >= 0 and full.max() <= 1 + 1e-6


def test_fused_multiplier_equals_the_four_operations_in_turn():
    """The batch applies ONE complex multiply; it must equal the operations of section 5.4 one after another."""
    x = _images(n=16, size=16)
    cfg = fda_config(16, amplitude_prob=0.5, phase_prob=0.5, mask_prob=0.5, gmm_prob=0.5)
    fda = FourierAugment(cfg)
    p = fda.sample(16, 16, 16, torch.Generator().manual_seed(14))
    f = rfft2(x)
    stepwise = amplitude_rescale(f, p.amplitude_scale)
    stepwise = phase_shift(stepwise, p.phase_shift)
    stepwise = frequency_mask(stepwise, p.keep)
    g = torch.where(p.gmm.view(-1, 1, 1), gaussian_mixture_mask(p.gmm_centers, p.gmm_sigmas, (16, 9)), 1.0)
    stepwise = stepwise * g.unsqueeze(1)
    torch.testing.assert_close(fda.apply_spectrum(f, p), stepwise, atol=1e-5, rtol=1e-5)
    # lightly's route through amplitude and phase (atan2, cos, sin) gives the same spectrum
    amp, ph = f.abs() * p.amplitude_scale.unsqueeze(1), torch.atan2(f.imag, f.real) + p.phase_shift.view(-1, 1, 1, 1)
    polar = torch.complex(amp * torch.cos(ph), amp * torch.sin(ph)) * p.keep.unsqueeze(1) * g.unsqueeze(1)
    torch.testing.assert_close(fda.apply_spectrum(f, p), polar, atol=1e-5, rtol=1e-4)


def test_sampled_parameters_follow_their_ranges_and_probabilities():
    n = 20000
    cfg = fda_config(224)
    p = FourierAugment(cfg).sample(n, 8, 8, torch.Generator().manual_seed(5))
    tol = 4 / math.sqrt(n)
    for flag, prob in (("amplitude", 0.2), ("phase", 0.2), ("mask", 0.5), ("gmm", 0.2)):
        assert abs(getattr(p, flag).float().mean().item() - prob) < tol, flag
    a = p.amplitude_scale[p.amplitude]
    assert a.min() >= 0.8 and a.max() < 1.75 and abs(a.mean().item() - 1.275) < 0.01
    assert (p.amplitude_scale[~p.amplitude] == 1).all()
    t = p.phase_shift[p.phase].abs()  # the paper's +-theta: |theta| ~ U(0.4, 0.7)
    assert t.min() >= 0.4 and t.max() < 0.7 and abs(t.mean().item() - 0.55) < 0.01
    assert (p.phase_shift[~p.phase] == 0).all()
    k = p.mask_fraction[p.mask]
    assert k.min() >= 0.01 and k.max() < 0.1 and abs(k.mean().item() - 0.055) < 0.002
    assert p.gmm_centers.shape == (n, 20, 2)
    assert p.gmm_centers[..., 0].min() == 0 and p.gmm_centers[..., 0].max() == 7  # u in [0, H)
    assert p.gmm_centers[..., 1].max() == 4  # v in [0, W//2 + 1)
    assert torch.equal(p.gmm_centers, p.gmm_centers.round())
    assert p.gmm_sigmas.min() >= 10 and p.gmm_sigmas.max() < 15  # Table C.2 at 224 px: sigma in [10, 15) bins
    # random sign by default (the paper's +-theta): both signs, equally often; lightly's +theta only on request
    q = FourierAugment(FDAConfig(phase_prob=1.0)).sample(n, 8, 8, torch.Generator())
    assert abs((q.phase_shift > 0).float().mean().item() - 0.5) < tol
    plus = FourierAugment(FDAConfig(phase_prob=1.0, phase_random_sign=False)).sample(n, 8, 8, torch.Generator())
    assert (plus.phase_shift > 0).all()
    # the mixture sigmas scale with the crop size
    assert fda_config(32).gmm_sigma == pytest.approx((10 * 32 / 224, 15 * 32 / 224))


def test_bad_configuration_names_the_key():
    with pytest.raises(ValueError, match="mask_prob"):
        FDAConfig(mask_prob=1.5)
    with pytest.raises(ValueError, match="amplitude_range"):
        FDAConfig(amplitude_range=(2.0, 1.0))
    with pytest.raises(KeyError, match="amplitude_rnage"):
        fda_config(32, amplitude_rnage=(1, 2))
    fda = FourierAugment()
    p = fda.sample(2, 16, 16)
    with pytest.raises(ValueError, match="half spectra"):
        fda.apply(torch.rand(2, 3, 8, 8), p)


@pytest.mark.parametrize("device", DEVICES)
def test_output_is_clamped_replayable_and_per_sample(device):
    x = _images(n=64, size=32).to(device)
    cfg = fda_config(32, amplitude_prob=1.0, amplitude_range=(0.2, 4.0), phase_prob=1.0, mask_prob=1.0, gmm_prob=1.0)
    fda = FourierAugment(cfg)
    p = fda.sample(64, 32, 32, torch.Generator(device=device).manual_seed(6), device)
    out = fda.apply(x, p)
    assert out.device.type == device and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, fda.apply(x, p))  # replay
    raw = FourierAugment(FDAConfig(**{**cfg.__dict__, "clamp": False})).apply(x, p)
    assert raw.min() < 0 or raw.max() > 1  # without the clamp the values leave the image range
    torch.testing.assert_close(out, raw.clamp(0, 1))
    # per-sample parameters: two copies of one image are augmented differently
    same = x[:1].expand(8, -1, -1, -1)
    outs = fda(same, torch.Generator(device=device).manual_seed(7))
    assert (outs[1:] - outs[:1]).abs().flatten(1).amax(1).min() > 1e-3
    # uint8 input is read as [0, 1]
    u8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(fda.apply(u8, p), fda.apply(u8.float() / 255, p))


def test_subset_apply_matches_whole_batch():
    """Samples with no op drawn skip the round trip; the others equal a whole-batch application."""
    x = _images(n=32, size=16)
    fda = FourierAugment(fda_config(16))
    p = fda.sample(32, 16, 16, torch.Generator().manual_seed(8))
    assert 0 < p.active.sum() < 32
    out = fda.apply(x, p)
    assert torch.equal(out[~p.active], x[~p.active])
    whole = irfft2(fda.apply_spectrum(rfft2(x), p), (16, 16)).clamp(0, 1)
    torch.testing.assert_close(out[p.active], whole[p.active], atol=1e-6, rtol=0)



@pytest.mark.parametrize("all_active", [False, True])
def test_cpu_chunks_match_whole_batch(monkeypatch, all_active):
    """The CPU path in cache-sized chunks (phase shifts on both sides of chunk borders) equals one batched pass."""
    import replens.augment.fourier as fourier

    x = _images(n=40, size=16)
    cfg = fda_config(16, phase_prob=0.5, **({"mask_prob": 1.0} if all_active else {}))
    fda = FourierAugment(cfg)
    p = fda.sample(40, 16, 16, torch.Generator().manual_seed(3))
    assert bool(p.active.all()) == all_active and 0 < p.phase.sum() < 40
    whole = torch.where(p.active.view(-1, 1, 1, 1), irfft2(fda.apply_spectrum(rfft2(x), p), (16, 16)).clamp(0, 1), x)
    monkeypatch.setattr(fourier, "CPU_CHUNK_BYTES", 7 * 3 * 16 * 16 * 4)  # 7 images per chunk
    chunked = fda.apply(x, p)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    monkeypatch.setattr(fourier, "CPU_CHUNK_BYTES", 1 << 30)  # one chunk
    torch.testing.assert_close(fda.apply(x, p), chunked, atol=1e-6, rtol=0)


# -------------------------------------------------------- agreement with lightly
def _lightly_ops(cfg):
    """lightly's per-image transforms with the same distributions (they take an unshifted rfft2 spectrum)."""
    from lightly.transforms.amplitude_rescale_transform import AmplitudeRescaleTransform
    from lightly.transforms.gaussian_mixture_masks_transform import GaussianMixtureMask
    from lightly.transforms.phase_shift_transform import PhaseShiftTransform
    from lightly.transforms.random_frequency_mask_transform import RandomFrequencyMaskTransform
    from torchvision import transforms as T

    return T.Compose([
        T.RandomApply([AmplitudeRescaleTransform(range=cfg.amplitude_range)], p=cfg.amplitude_prob),
        T.RandomApply([PhaseShiftTransform(range=cfg.phase_range)], p=cfg.phase_prob),
        T.RandomApply([RandomFrequencyMaskTransform(k=cfg.mask_range)], p=cfg.mask_prob),
        T.RandomApply([GaussianMixtureMask(num_gaussians=cfg.gmm_count, std_range=cfg.gmm_sigma)], p=cfg.gmm_prob),
    ])


def _stats(spec_in, spec_out):
    """Per-sample statistics of a spectral augmentation: kept energy, DC factor, mean phase change."""
    energy = spec_out.abs().pow(2).flatten(1).sum(1) / spec_in.abs().pow(2).flatten(1).sum(1)
    dc = (spec_out[..., 0, 0] / spec_in[..., 0, 0]).real.mean(-1)
    phase = _angle_diff(spec_out[..., 3, 2], spec_in[..., 3, 2]).mean(-1)
    # rounded: lightly's atan2/cos/sin round trip leaves ~1e-8 noise on untouched samples, which KS would see
    return tuple(np.round(t.numpy().astype(np.float64), 4) for t in (energy, dc, phase))


@pytest.mark.parametrize(
    "case",
    ["amplitude_prob", "phase_prob", "mask_prob", "gmm_prob", "table_c2"],
)
def test_distribution_agrees_with_lightly_per_image_transforms(case):
    from scipy.stats import ks_2samp

    n, size = 600, 16
    lightly_sign = {"phase_random_sign": False}  # lightly's PhaseShiftTransform adds +theta only
    cfg = fda_config(size, **lightly_sign) if case == "table_c2" else fda_config(size, **{**OFF, case: 1.0},
                                                                                 **lightly_sign)
    x = _images(n=1, size=size).expand(n, -1, -1, -1).contiguous()  # the same input, n draws
    spec = torch.fft.rfft2(x)  # lightly's convention (unnormalised); the statistics are scale-free
    ours = FourierAugment(cfg)
    p = ours.sample(n, size, size, torch.Generator().manual_seed(9))
    spec_ours = ours.apply_spectrum(spec, p)
    torch.manual_seed(9)
    np.random.seed(9)
    import random

    random.seed(9)
    tf = _lightly_ops(cfg)
    spec_lightly = torch.stack([tf(spec[i]) for i in range(n)])
    for name, a, b in zip(("energy", "dc", "phase"), _stats(spec, spec_ours), _stats(spec, spec_lightly), strict=True):
        if np.ptp(a) < 1e-6 and np.ptp(b) < 1e-6:  # a constant statistic (e.g. energy under a phase shift)
            assert abs(a.mean() - b.mean()) < 1e-4, (case, name)
            continue
        assert ks_2samp(a, b).pvalue > 1e-3, (case, name, a.mean(), b.mean())
    # power check: a slightly wrong range is detected by the same test
    if case in ("amplitude_prob", "mask_prob"):
        wrong = fda_config(size, **{**OFF, case: 1.0}, amplitude_range=(0.9, 1.9), mask_range=(0.02, 0.12))
        bad = FourierAugment(wrong)
        spec_bad = bad.apply_spectrum(spec, bad.sample(n, size, size, torch.Generator().manual_seed(10)))
        assert ks_2samp(_stats(spec, spec_bad)[0], _stats(spec, spec_lightly)[0]).pvalue < 1e-3


# ------------------------------------------------------------ format transform
@pytest.mark.parametrize("hw", [(16, 16), (15, 9), (8, 11), (2, 2)])
def test_frequency_packing_is_lossless_and_image_shaped(hw):
    x = torch.rand(2, 3, *hw)
    f = rfft2(x)
    packed = pack_spectrum(f, hw[1])
    assert packed.shape == x.shape and packed.dtype == torch.float32
    torch.testing.assert_close(unpack_spectrum(packed), f, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(irfft2(unpack_spectrum(packed), hw), x, atol=1e-5, rtol=0)
    # interleaving: columns 1, 2 hold Re and Im of the first non-zero horizontal frequency
    if hw[1] >= 4:
        torch.testing.assert_close(packed[..., 1], f[..., 1].real)
        torch.testing.assert_close(packed[..., 2], f[..., 1].imag)


def test_frequency_image_lies_in_unit_interval_and_is_a_monotone_rescale():
    x = _images(n=4, size=16)
    img = frequency_image(x)
    assert img.shape == x.shape
    flat = img.flatten(1)
    assert torch.allclose(flat.amin(1), torch.zeros(4)) and torch.allclose(flat.amax(1), torch.ones(4))
    packed = pack_spectrum(rfft2(x), 16).flatten(1)
    for b in range(4):  # a strictly increasing map of the packed spectrum: the order of the values is kept
        assert (flat[b][packed[b].argsort()].diff() >= -1e-7).all()
    linear = spectrum_to_frequency_image(rfft2(x), 16, compress="linear").flatten(1)
    lo, hi = packed.amin(1, keepdim=True), packed.amax(1, keepdim=True)
    torch.testing.assert_close(linear, (packed - lo) / (hi - lo))


# -------------------------------------------------------------- view pipeline
def _plain(**kw):
    base = dict(crop_scale=(1, 1), crop_ratio=(1, 1), hflip_prob=0, jitter_prob=0, gray_prob=0)
    base.update(kw)
    return ViewConfig(**base)


@pytest.mark.parametrize("order", ["before", "after"])
def test_fda_stage_order_in_the_view_pipeline(order):
    """Figure 5.1: crop -> FDA -> other augmentations; Table 5.4: augmentations -> FDA."""
    x = _images(n=6, size=16)
    fda_cfg = fda_config(16, amplitude_prob=1.0, phase_prob=1.0, mask_prob=1.0)
    pipe = ViewPipeline(_plain(size=16, solarize_prob=1.0, fda=fda_cfg, fda_order=order))
    params = pipe.sample(6, torch.Generator().manual_seed(11))
    out = pipe.apply(x, params, normalize=False)

    def solarize(t):
        return torch.where(t >= 0.5, 1 - t, t)

    fourier = FourierAugment(fda_cfg)
    expected = solarize(fourier.apply(x, params.fda)) if order == "before" else fourier.apply(solarize(x), params.fda)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_fda_does_not_change_the_image_augmentation_draws():
    base = ViewConfig(size=16, blur_prob=0.5)
    a = ViewPipeline(base).sample(32, torch.Generator().manual_seed(12))
    b = ViewPipeline(view_kind("fda+image-aug", base)).sample(32, torch.Generator().manual_seed(12))
    for name in ("crop", "flip", "jitter", "brightness", "hue", "gray", "blur_sigma", "solarize"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.fda is None and b.fda is not None
    assert b.to("cpu").fda.keep.shape == (32, 16, 9)


def test_view_kinds_build_the_views_of_tables_5_3_to_5_5():
    x = _images(n=4, size=16)
    u8 = (x * 255).round().to(torch.uint8)
    xf = u8.float() / 255
    base = ViewConfig(size=16)  # SimCLR-like image augmentations
    g = torch.Generator().manual_seed(13)

    def run(kind):
        pipe = ViewPipeline(view_kind(kind, base))
        params = pipe.sample(4, g)
        return pipe, params, pipe.apply(u8, params, normalize=False)

    _, _, raw = run("raw")
    torch.testing.assert_close(raw, xf, atol=1e-5, rtol=0)  # x: nothing random
    _, _, f = run("freq")
    torch.testing.assert_close(f, frequency_image(u8), atol=1e-5, rtol=0)  # f
    pipe, params, fa = run("freq-aug")
    ref = spectrum_to_frequency_image(pipe.fourier.apply_spectrum(rfft2(xf), params.fda), 16)
    torch.testing.assert_close(fa, ref, atol=1e-5, rtol=0)  # A_freq(f), no inverse in between
    pipe, params, fd = run("fda")
    torch.testing.assert_close(fd, pipe.fourier.apply(xf, params.fda), atol=1e-5, rtol=0)  # F^-1(A_freq(f))
    expect = {  # kind: (augment, has fda, order, output)
        "image-aug": (True, False, "before", "image"),
        "fda+image-aug": (True, True, "before", "image"),
        "image-aug+fda": (True, True, "after", "image"),
        "image-aug+freq": (True, False, "before", "frequency"),
        "freq-aug": (False, True, "after", "frequency"),
    }
    for kind, (augment, has_fda, order, output) in expect.items():
        v = view_kind(kind, base)
        assert (v.augment, v.fda is not None, v.fda_order, v.output) == (augment, has_fda, order, output), kind
    assert view_kind("method", base) is base
    assert view_kind("method+fda", view_kind("raw", base)).augment is False
    assert set(VIEW_KINDS) >= {"raw", "image-aug", "fda", "fda+image-aug", "freq", "freq-aug"}
    with pytest.raises(KeyError, match="view kind"):
        view_kind("fourier", base)
