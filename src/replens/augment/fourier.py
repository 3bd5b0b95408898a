"""Fourier Domain Augmentations (FDA) and the format transform, batched on any device.

The paper's chapter 5 (section 5.4, Table C.2) perturbs the RFFT2D spectrum
``f = F(x)`` (Eq. 5.1, no shift: bin (0, 0) is the zero frequency) of a
random-resized crop with four stochastic operations and inverts it back to the
image space (Figure 5.1):

* **amplitude rescale**: ``A(f) <- A(f) * p``, ``p ~ U(m, n)`` per frequency
  bin, one noise map shared by the channels (p in R^{H x W});
* **phase shift**: ``P(f) <- P(f) +- theta``, one scalar ``theta ~ U(p, q)``
  per image with a random sign (the paper's "+-"; ``phase_random_sign=False``
  adds +theta only, as lightly);
* **random frequency mask**: ``f <- f * h`` with a binary mask shared by the
  channels dropping each bin with probability ``k ~ U(k_0, k_1)``, the zero
  frequency ``h_{0,0}`` always kept;
* **Gaussian mixture mask**: ``f <- f * prod_o (1 - G(u, v, c_o, sigma_o))``
  over ``o`` Gaussians with random centres and per-axis sigmas.

The values are probability and range of Table C.2 (left view); the result is
clamped to the image range [0, 1] after the inverse transform (lightly does
not clamp, and ``ToPILImage`` then wraps values outside [0, 1]).

Why our own and not lightly's ``AmplitudeRescaleTransform``,
``PhaseShiftTransform``, ``RandomFrequencyMaskTransform`` and
``GaussianMixtureMask``: those take one (C, H, W) image per Python call, draw
from the global numpy/torch random state (not replayable), rebuild a full
meshgrid per Gaussian in a Python loop of 20 per image, and go through
``atan2``/``cos``/``sin``. Here all four operations are written as what they
are, multiplications of the spectrum by a per-sample factor
(``A p e^{iP} = p f``, ``A e^{i(P + theta)} = e^{i theta} f``, ``h f``,
``g f``), so a whole batch is one ``rfft2``, ONE complex multiply by the
product of the factors, and one ``irfft2``; each Gaussian is separable
(an outer product of two 1-D Gaussians) and is only built for the samples
drawn to receive it. Parameters are sampled per sample from an explicit
generator into :class:`FourierParams` and replayed by
:meth:`FourierAugment.apply` (kornia style).

The format transform of section 5.6.1 (:func:`frequency_image`) turns the
complex half spectrum into a real image of the input's shape by interleaving
real and imaginary parts along the width and rescaling to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

#: Table C.2's Gaussian mixture sigmas are in frequency bins of a 224 px crop.
REFERENCE_SIZE = 224

#: Images per CPU chunk of :meth:`FourierAugment.apply` are chosen to fill about this many bytes
#: (their spectra and outputs then stay in the cache between the steps of the round trip).
CPU_CHUNK_BYTES = 2 << 20


def _pair(value: Any, key: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"FDAConfig.{key} must be a (low, high) pair of numbers, got {value!r}") from exc
    if lo > hi:
        raise ValueError(f"FDAConfig.{key} must have low <= high, got {value!r}")
    return lo, hi


@dataclass
class FDAConfig:
    """Distributions of the four Fourier Domain Augmentations (defaults: Table C.2, left view).

    Attributes:
        amplitude_prob: Probability of the amplitude rescale.
        amplitude_range: ``(m, n)``: the per-bin amplitude factor is U(m, n).
        phase_prob: Probability of the phase shift.
        phase_range: ``(p, q)``: the phase shift theta is U(p, q).
        phase_random_sign: Shift by -theta or +theta with equal odds (default:
            the paper's ``P(f) +- theta``, section 5.4); False adds +theta only
            (lightly's ``PhaseShiftTransform``).
        mask_prob: Probability of the random frequency mask.
        mask_range: ``(k_0, k_1)``: each image drops a fraction k ~ U(k_0, k_1) of its bins.
        gmm_prob: Probability of the Gaussian mixture mask.
        gmm_count: Number of Gaussians ``o`` in the mixture.
        gmm_sigma: Range of each Gaussian's per-axis sigma, in frequency bins.
            Table C.2 gives (10, 15) at 224 px; :func:`fda_config` scales it to
            other sizes.
        clamp: Clamp the inverted image to [0, 1].
    """

    amplitude_prob: float = 0.2
    amplitude_range: tuple[float, float] = (0.8, 1.75)
    phase_prob: float = 0.2
    phase_range: tuple[float, float] = (0.4, 0.7)
    phase_random_sign: bool = True
    mask_prob: float = 0.5
    mask_range: tuple[float, float] = (0.01, 0.1)
    gmm_prob: float = 0.2
    gmm_count: int = 20
    gmm_sigma: tuple[float, float] = (10.0, 15.0)
    clamp: bool = True

    def __post_init__(self) -> None:
        for key in ("amplitude_prob", "phase_prob", "mask_prob", "gmm_prob"):
            value = float(getattr(self, key))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FDAConfig.{key} is a probability in [0, 1], got {value}")
            setattr(self, key, value)
        for key in ("amplitude_range", "phase_range", "mask_range", "gmm_sigma"):
            setattr(self, key, _pair(getattr(self, key), key))
        if self.amplitude_range[0] < 0:
            raise ValueError(f"FDAConfig.amplitude_range must be non-negative, got {self.amplitude_range}")
        if not (0.0 <= self.mask_range[0] and self.mask_range[1] <= 1.0):
            raise ValueError(f"FDAConfig.mask_range is a fraction range inside [0, 1], got {self.mask_range}")
        if self.gmm_sigma[0] <= 0:
            raise ValueError(f"FDAConfig.gmm_sigma must be positive, got {self.gmm_sigma}")
        if int(self.gmm_count) != self.gmm_count or self.gmm_count < 0:
            raise ValueError(f"FDAConfig.gmm_count must be a non-negative integer, got {self.gmm_count}")
        self.gmm_count = int(self.gmm_count)


def fda_config(size: int, reference_size: int = REFERENCE_SIZE, **overrides: Any) -> FDAConfig:
    """Table C.2's FDA at ``size`` px.

    The Gaussian mixture sigmas (10 to 15 bins) are set for 224 px crops, whose
    half spectrum has 224 x 113 bins; a 32 px crop has 32 x 17 bins, where 20
    Gaussians of sigma 10 would zero the whole spectrum. The sigma range is
    therefore scaled by ``size / reference_size`` so each Gaussian covers the
    same fraction of the spectrum, as ``recipe_view`` scales the blur sigma.

    Args:
        size: Side of the crop the FDA acts on.
        reference_size: Size at which ``gmm_sigma`` is given (None-like 0 disables scaling).
        **overrides: Any :class:`FDAConfig` field (``gmm_sigma`` given here is scaled too).
    """
    known = {f.name for f in fields(FDAConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KeyError(f"unknown FDA option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = FDAConfig(**overrides)
    if reference_size:
        scale = size / reference_size
        cfg = replace(cfg, gmm_sigma=(cfg.gmm_sigma[0] * scale, cfg.gmm_sigma[1] * scale))
    return cfg


@dataclass
class FourierParams:
    """Per-sample FDA parameters of one batch (replayable).

    Attributes:
        amplitude: (B,) bool, amplitude rescale applied.
        amplitude_scale: (B, H, W//2+1) per-bin amplitude factors (1 where not applied).
        phase: (B,) bool, phase shift applied.
        phase_shift: (B,) signed theta in radians (0 where not applied).
        mask: (B,) bool, random frequency mask applied.
        mask_fraction: (B,) drop probability k of each image (0 where not applied).
        keep: (B, H, W//2+1) bool, bins kept by the random frequency mask.
        gmm: (B,) bool, Gaussian mixture mask applied.
        gmm_centers: (B, o, 2) centres (u, v) in bins.
        gmm_sigmas: (B, o, 2) per-axis sigmas in bins.
    """

    amplitude: torch.Tensor
    amplitude_scale: torch.Tensor
    phase: torch.Tensor
    phase_shift: torch.Tensor
    mask: torch.Tensor
    mask_fraction: torch.Tensor
    keep: torch.Tensor
    gmm: torch.Tensor
    gmm_centers: torch.Tensor
    gmm_sigmas: torch.Tensor

    def to(self, device: torch.device | str) -> FourierParams:
        return FourierParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def active(self) -> torch.Tensor:
        """(B,) bool: at least one operation applies."""
        return self.amplitude | self.phase | self.mask | self.gmm

    @property
    def spectrum_shape(self) -> tuple[int, int]:
        """(H, W//2+1): the half-spectrum shape the parameters were drawn for."""
        return int(self.keep.shape[1]), int(self.keep.shape[2])


# ----------------------------------------------------------------- transforms
def rfft2(images: torch.Tensor) -> torch.Tensor:
    """Orthonormal RFFT2D over the last two axes (Eq. 5.1, no shift), in float32.

    Shape:
        images: (..., H, W) real; returns (..., H, W//2+1) complex64.
    """
    return torch.fft.rfft2(images.float(), norm="ortho")


def irfft2(spectrum: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Inverse of :func:`rfft2` to a real (..., H, W) image (``size = (H, W)``)."""
    return torch.fft.irfft2(spectrum, s=size, norm="ortho")


def amplitude_rescale(spectrum: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``A(f) <- A(f) * p`` with the phase unchanged (section 5.4).

    Since ``A p e^{iP} = p f`` for a real ``p >= 0`` this is one multiply.

    Shape:
        spectrum: (B, C, U, V) complex; scale: (B, U, V) real, shared by the channels.
    """
    return spectrum * scale.unsqueeze(1)


def phase_shift(spectrum: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``P(f) <- P(f) + theta`` per sample (section 5.4): ``f e^{i theta}``.

    Shape:
        spectrum: (B, C, U, V) complex; theta: (B,) radians.
    """
    rot = torch.polar(torch.ones_like(theta), theta).to(spectrum.dtype)
    return spectrum * rot.view(-1, 1, 1, 1)


def frequency_mask(spectrum: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``f <- f * h`` with a binary mask shared by the channels (section 5.4).

    Shape:
        spectrum: (B, C, U, V) complex; keep: (B, U, V) bool.
    """
    return spectrum * keep.unsqueeze(1)


def gaussian_mixture_mask(centers: torch.Tensor, sigmas: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``prod_o (1 - G(u, v, c_o, sigma_o))`` on the half-spectrum grid (section 5.4).

    ``G(u, v, c, sigma) = exp(-((u - c_0)^2 / (2 sigma_0^2) + (v - c_1)^2 / (2 sigma_1^2)))``
    is separable, so each Gaussian is the outer product of two 1-D Gaussians,
    folded into the mask in place one at a time (memory stays O(B U V)).

    Shape:
        centers, sigmas: (B, o, 2); returns (B, U, V) with values in [0, 1].
    """
    b, count, _ = centers.shape
    u_bins, v_bins = shape
    u = torch.arange(u_bins, device=centers.device, dtype=centers.dtype)
    v = torch.arange(v_bins, device=centers.device, dtype=centers.dtype)
    gu = torch.exp(-((u.view(1, 1, -1) - centers[..., 0:1]) ** 2) / (2 * sigmas[..., 0:1] ** 2))  # (B, o, U)
    gv = torch.exp(-((v.view(1, 1, -1) - centers[..., 1:2]) ** 2) / (2 * sigmas[..., 1:2] ** 2))  # (B, o, V)
    mask = torch.ones(b, u_bins, v_bins, device=centers.device, dtype=centers.dtype)
    for k in range(count):
        mask.addcmul_(mask, gu[:, k, :, None] * gv[:, k, None, :], value=-1)  # mask *= 1 - G_k
    return mask


class FourierAugment:
    """Batched Fourier Domain Augmentations with replayable per-sample parameters.

    Args:
        config: The FDA distributions (default: Table C.2 in bins, see :func:`fda_config`).

    Example:
        >>> fda = FourierAugment(fda_config(32))
        >>> params = fda.sample(8, 32, 32, torch.Generator().manual_seed(0))
        >>> out = fda.apply(torch.rand(8, 3, 32, 32), params)
    """

    def __init__(self, config: FDAConfig | None = None) -> None:
        self.config = config or FDAConfig()

    def sample(
        self,
        batch_size: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> FourierParams:
        """Draw every per-sample FDA parameter for images of ``height`` x ``width``.

        On the CPU the per-bin noise maps are drawn only for the samples whose
        operation applies (random numbers cost about as much as the FFTs
        there); on accelerators whole-batch draws avoid a host-device
        synchronisation.
        """
        cfg, n, device = self.config, batch_size, torch.device(device)
        u_bins, v_bins = height, width // 2 + 1

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=device)

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return rand(*shape) * (high - low) + low

        def per_bin(flag: torch.Tensor, draw: Callable[[torch.Tensor | None], torch.Tensor],
                    fill: float | bool) -> torch.Tensor:
            """(n, U, V): ``draw(rows)`` on the flagged rows, ``fill`` elsewhere."""
            if device.type != "cpu":
                return torch.where(flag.view(n, 1, 1), draw(None), fill)
            out = torch.full((n, u_bins, v_bins), fill, device=device)
            rows = flag.nonzero().squeeze(1)
            if rows.numel():
                out[rows] = draw(rows)
            return out

        def count(rows: torch.Tensor | None) -> int:
            return n if rows is None else int(rows.numel())

        amplitude = rand(n) < cfg.amplitude_prob
        scale = per_bin(amplitude, lambda rows: uniform(*cfg.amplitude_range, count(rows), u_bins, v_bins), 1.0)

        phase = rand(n) < cfg.phase_prob
        theta = uniform(*cfg.phase_range, n)
        if cfg.phase_random_sign:
            theta = torch.where(rand(n) < 0.5, -theta, theta)
        theta = torch.where(phase, theta, torch.zeros((), device=device))

        mask = rand(n) < cfg.mask_prob
        k = torch.where(mask, uniform(*cfg.mask_range, n), torch.zeros((), device=device))
        keep = per_bin(mask, lambda rows: rand(count(rows), u_bins, v_bins) >= (k if rows is None else k[rows]).view(-1, 1, 1),
                       True)
        keep[:, 0, 0] = True  # the zero frequency is always kept (section 5.4)

        gmm = rand(n) < cfg.gmm_prob
        o = cfg.gmm_count
        centers = torch.stack(
            [torch.randint(0, u_bins, (n, o), generator=generator, device=device),
             torch.randint(0, v_bins, (n, o), generator=generator, device=device)], dim=2
        ).float()
        sigmas = uniform(*cfg.gmm_sigma, n, o, 2)
        return FourierParams(amplitude=amplitude, amplitude_scale=scale, phase=phase, phase_shift=theta, mask=mask,
                             mask_fraction=k, keep=keep, gmm=gmm, gmm_centers=centers, gmm_sigmas=sigmas)

    def magnitude_factor(self, params: FourierParams) -> torch.Tensor:
        """The real part of the multiplier: amplitude scale x frequency mask x mixture mask, (B, U, V)."""
        real = torch.where(params.keep, params.amplitude_scale, 0.0)
        if bool(params.gmm.any()):
            idx = params.gmm.nonzero().squeeze(1)
            g = gaussian_mixture_mask(params.gmm_centers[idx], params.gmm_sigmas[idx], params.spectrum_shape)
            real = real.index_copy(0, idx, real.index_select(0, idx) * g)
        return real

    def factor(self, params: FourierParams) -> torch.Tensor:
        """The product of the four operations as one complex (B, U, V) multiplier of the spectrum."""
        real = self.magnitude_factor(params)
        return torch.polar(real, params.phase_shift.view(-1, 1, 1).expand_as(real))

    def apply_spectrum(self, spectrum: torch.Tensor, params: FourierParams) -> torch.Tensor:
        """Replay ``params`` on a batch of spectra (no inverse transform).

        Shape:
            spectrum: (B, C, H, W//2+1) complex.
        """
        if tuple(spectrum.shape[-2:]) != params.spectrum_shape or spectrum.shape[0] != params.amplitude.shape[0]:
            raise ValueError(f"spectra of shape {tuple(spectrum.shape)} do not match FDA parameters drawn for "
                             f"{params.amplitude.shape[0]} half spectra of {params.spectrum_shape}")
        return self._apply_spectrum_(spectrum.clone(), params)

    def _apply_spectrum_(self, spectrum: torch.Tensor, params: FourierParams) -> torch.Tensor:
        # the real part of the multiplier for every sample, then the phase rotation only where drawn
        spectrum.mul_(self.magnitude_factor(params).unsqueeze(1))
        if bool(params.phase.any()):
            idx = params.phase.nonzero().squeeze(1)
            rot = torch.polar(torch.ones_like(params.phase_shift[idx]), params.phase_shift[idx])
            spectrum.index_copy_(0, idx, spectrum.index_select(0, idx) * rot.view(-1, 1, 1, 1))
        return spectrum

    def apply(self, images: torch.Tensor, params: FourierParams) -> torch.Tensor:
        """``F^{-1}(A_freq(F(x)))``, clamped to [0, 1] (Figure 5.1).

        Samples with no operation drawn are returned unchanged (no round trip).

        Shape:
            images: (B, C, H, W) uint8 or float in [0, 1]; returns float of the same shape
            (the input's floating dtype, float32 for uint8).
        """
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        if x.ndim != 4:
            raise ValueError(f"FDA expects (B, C, H, W) images, got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        if params.spectrum_shape != (h, w // 2 + 1) or params.amplitude.shape[0] != b:
            raise ValueError(f"FDA parameters drawn for {params.amplitude.shape[0]} images with half spectra of "
                             f"{params.spectrum_shape}, got images of shape {tuple(x.shape)}")
        active = params.active
        if x.device.type != "cpu":  # whole batch, no host-device synchronisation
            out = self._round_trip(x, params)
            return torch.where(active.view(b, 1, 1, 1), out, x)
        return self._apply_cpu(x, params, active)

    def _round_trip(self, x: torch.Tensor, params: FourierParams) -> torch.Tensor:
        out = irfft2(self._apply_spectrum_(rfft2(x), params), x.shape[-2:])
        if self.config.clamp:
            out = out.clamp_(0, 1)
        return out.to(x.dtype)

    def _apply_cpu(self, x: torch.Tensor, params: FourierParams, active: torch.Tensor) -> torch.Tensor:
        """The CPU path: only the samples with an operation drawn, in cache-sized chunks.

        A whole batch of spectra (tens of MB at 32 px) streams through main
        memory once per step of the round trip (copy, forward transform,
        multiply, inverse, clamp, scatter); chunks of about
        :data:`CPU_CHUNK_BYTES` of images stay in the cache between those
        steps. The multiplier's real part is built once for all active
        samples and sliced per chunk; the phase rotation touches only the
        samples that drew it. Same operations and values as the batched path.
        """
        b = x.shape[0]
        rows = active.nonzero().squeeze(1)
        n_active = rows.numel()
        if n_active == 0:
            return x.clone()
        dense = n_active == b
        out = torch.empty_like(x)
        if not dense:  # samples without an operation are copied unchanged
            idle = (~active).nonzero().squeeze(1)
            out.index_copy_(0, idle, x.index_select(0, idle))
        magnitude = self.magnitude_factor(params)  # (B, U, V) real
        turned = params.phase if dense else params.phase.index_select(0, rows)
        turned = turned.nonzero().squeeze(1)  # positions among the active samples
        shift = params.phase_shift if dense else params.phase_shift.index_select(0, rows)
        rot = torch.polar(torch.ones_like(shift), shift)
        if not dense:
            magnitude = magnitude.index_select(0, rows)
        chunk = max(1, CPU_CHUNK_BYTES // max(1, x[0].numel() * x.element_size()))
        size = x.shape[-2:]
        for lo in range(0, n_active, chunk):
            hi = min(lo + chunk, n_active)
            spectrum = rfft2(x[lo:hi] if dense else x.index_select(0, rows[lo:hi]))
            spectrum.mul_(magnitude[lo:hi, None])
            turn = turned[(turned >= lo) & (turned < hi)]
            if turn.numel():
                local = turn - lo
                spectrum.index_copy_(0, local, spectrum.index_select(0, local) * rot[turn].view(-1, 1, 1, 1))
            img = irfft2(spectrum, size)
            if self.config.clamp:
                img = img.clamp_(0, 1)
            if dense:
                out[lo:hi] = img
            else:
                out.index_copy_(0, rows[lo:hi], img.to(x.dtype))
        return out

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample parameters on the images' device and apply them."""
        params = self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator, images.device)
        return self.apply(images, params)


def _select(params: FourierParams, idx: torch.Tensor) -> FourierParams:
    return FourierParams(**{f.name: getattr(params, f.name)[idx] for f in fields(params)})


# ----------------------------------------------------------- format transform
def pack_spectrum(spectrum: torch.Tensor, width: int) -> torch.Tensor:
    """Interleave the real and imaginary parts of a half spectrum into a real (..., H, W) array.

    Section 5.6.1: the RFFT2D output has ``W//2 + 1`` complex columns; its real
    and imaginary parts are interleaved along the width so the frequency image
    has the shape of the image. Columns ``1 .. (W-1)//2`` contribute a
    (real, imaginary) pair each. The zero-frequency column (and, for even W,
    the Nyquist column) is Hermitian in ``u`` (``c(H - u) = conj(c(u))``), so
    it holds only H real numbers: ``Re c(u)`` for ``u <= H//2`` and
    ``Im c(H - r)`` at rows ``r > H//2``. The packing is therefore exactly W
    real columns and lossless for spectra of real images
    (:func:`unpack_spectrum` inverts it); a non-Hermitian part of those two
    columns, which ``irfft2`` would also discard, is dropped.

    Shape:
        spectrum: (..., H, W//2+1) complex; returns (..., H, W) real.
    """
    h, v_bins = spectrum.shape[-2], spectrum.shape[-1]
    if v_bins != width // 2 + 1:
        raise ValueError(f"a half spectrum of width {width} has {width // 2 + 1} columns, got {v_bins}")
    r = torch.arange(h, device=spectrum.device)
    mirror = (h - r) % h

    def hermitian_column(col: torch.Tensor) -> torch.Tensor:
        return torch.where(r <= h // 2, col.real, col.imag[..., mirror])

    parts = [hermitian_column(spectrum[..., 0]).unsqueeze(-1)]
    inner = (width - 1) // 2
    if inner:
        mid = spectrum[..., 1 : 1 + inner]
        parts.append(torch.stack([mid.real, mid.imag], dim=-1).flatten(-2))
    if width % 2 == 0 and width > 1:
        parts.append(hermitian_column(spectrum[..., width // 2]).unsqueeze(-1))
    return torch.cat(parts, dim=-1)


def unpack_spectrum(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_spectrum`.

    Shape:
        packed: (..., H, W) real; returns (..., H, W//2+1) complex64.
    """
    h, width = packed.shape[-2], packed.shape[-1]
    packed = packed.float()
    r = torch.arange(h, device=packed.device)
    low = torch.minimum(r, h - r)  # rows holding Re c(r) (even symmetry)

    def hermitian_column(col: torch.Tensor) -> torch.Tensor:
        re = col[..., low]
        # Im c(r) = packed[H - r] for 1 <= r <= (H-1)//2, odd symmetry above, 0 at r = 0 and r = H/2
        im_low = col[..., (h - r) % h]
        im = torch.where((r >= 1) & (r <= (h - 1) // 2), im_low, torch.zeros_like(im_low))
        im = torch.where(r > h // 2, -col, im)
        return torch.complex(re, im)

    parts = [hermitian_column(packed[..., 0]).unsqueeze(-1)]
    inner = (width - 1) // 2
    if inner:
        pairs = packed[..., 1 : 1 + 2 * inner].unflatten(-1, (inner, 2))
        parts.append(torch.complex(pairs[..., 0], pairs[..., 1]))
    if width % 2 == 0 and width > 1:
        parts.append(hermitian_column(packed[..., width - 1]).unsqueeze(-1))
    return torch.cat(parts, dim=-1)


def spectrum_to_frequency_image(spectrum: torch.Tensor, width: int, compress: str = "log") -> torch.Tensor:
    """The frequency image of a batch of (orthonormal) half spectra (section 5.6.1).

    Real and imaginary parts are interleaved to the image's shape
    (:func:`pack_spectrum`) and rescaled to [0, 1] per sample (min-max over
    channels and pixels). The paper does not say how it rescales; a linear
    min-max leaves every bin but the zero frequency squashed near one value
    (the DC term of a 32 px image is ~100x the median bin), so by default the
    values are first compressed with a signed ``log1p``, which keeps their
    sign and order. ``compress="linear"`` gives the plain min-max.

    Shape:
        spectrum: (B, C, H, W//2+1) complex; returns (B, C, H, W) float32 in [0, 1].
    """
    packed = pack_spectrum(spectrum, width)
    if compress == "log":
        packed = torch.sign(packed) * torch.log1p(packed.abs() * math.sqrt(packed.shape[-2] * packed.shape[-1]))
    elif compress != "linear":
        raise ValueError(f"compress must be 'log' or 'linear', got {compress!r}")
    flat = packed.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
    return ((packed - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def frequency_image(images: torch.Tensor, compress: str = "log") -> torch.Tensor:
    """``f`` as an image: the format transform of section 5.6.1.

    Shape:
        images: (B, C, H, W) uint8 or float in [0, 1]; returns (B, C, H, W) float32 in [0, 1].
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return spectrum_to_frequency_image(rfft2(x), x.shape[-1], compress)
