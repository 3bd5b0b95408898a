"""Batched SSL view pipeline that runs where the model runs.

Images travel to the device once as uint8; every view is made there with a few
batched tensor ops. We write our own instead of using torchvision's per-image
transforms (one Python call per image on CPU workers) or kornia's (a generic
module per op with per-op parameter plumbing, measured at 8,327 samples/s for
two views on an H100): here

* random resized crop and horizontal flip are ONE ``affine_grid`` +
  ``grid_sample`` call per batch (the flip is a sign in the affine matrix);
* brightness, saturation and hue are linear in RGB, so they compose into a
  per-sample 3x3 matrix (one ``bmm``); contrast adds a per-sample offset;
* Gaussian blur is two separable grouped convolutions with per-sample kernels;
* grayscale and solarisation are masked blends.

Every random parameter is sampled per sample by :meth:`ViewPipeline.sample`
into a :class:`ViewParams` that :meth:`ViewPipeline.apply` replays exactly
(kornia style), so a test can check the sampled distributions and a view can
be regenerated.

Fourier Domain Augmentations (``replens.augment.fourier``, paper chapter 5)
are an optional stage of the same pipeline: with ``ViewConfig.fda`` set they
act right after the random resized crop and before the other image
augmentations (Figure 5.1), or last (``fda_order="after"``, Table 5.4); with
``output="frequency"`` the view is the frequency image of section 5.6.1
instead of the image. :func:`view_kind` builds the views of Tables 5.3 to 5.5
(raw, image-aug, fda, fda+image-aug, freq, freq-aug, ...) from a recipe's view.

Deviation from torchvision's ColorJitter: the four jitter ops are applied in a
fixed order (brightness, contrast, saturation, hue) rather than a random
permutation per image, and the image is clamped to [0, 1] once after the
colour matrix rather than after every op. Both are standard in batched
implementations and keep the colour transform a single matrix product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from replens.augment.fourier import (
    FDAConfig,
    FourierAugment,
    FourierParams,
    fda_config,
    rfft2,
    spectrum_to_frequency_image,
)
from replens.config import require, require_fraction_range

# ITU-R BT.601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class ViewConfig:
    """Distributions of one view (defaults: SimCLR, Chen et al. 2020, s = 1).

    Attributes:
        size: Output side in pixels.
        crop_scale: Area fraction range of the random resized crop.
        crop_ratio: Aspect-ratio range (sampled log-uniformly).
        hflip_prob: Probability of a horizontal flip.
        jitter_prob: Probability of applying colour jitter.
        brightness, contrast, saturation: Factors drawn from U(1 - v, 1 + v).
        hue: Hue rotation drawn from U(-v, v) (fraction of a full turn).
        gray_prob: Probability of converting to grayscale.
        blur_prob: Probability of a Gaussian blur.
        blur_sigma: Blur sigma range in pixels at ``size``.
        solarize_prob: Probability of solarisation (threshold 0.5).
        mean, std: Normalisation applied last.
        augment: Apply the image augmentations above; False gives the raw view
            ``x`` (the image resized to ``size``, nothing random), keeping the
            distributions so :func:`view_kind` can switch them back on.
        fda: Fourier Domain Augmentations (None: off).
        fda_order: ``"before"``: FDA right after the random resized crop,
            before the other image augmentations (Figure 5.1, the default);
            ``"after"``: FDA on the finished augmented image (Table 5.4,
            ``F^{-1}(A_freq(F(A_im(x))))``).
        output: ``"image"``, or ``"frequency"``: the view is the frequency
            image of the (augmented) view (section 5.6.1); with ``fda_order
            "after"`` the FDA then acts on that spectrum directly
            (``A_freq(f)``), without an inverse transform in between.
        frequency_compress: Rescaling of frequency images (``"log"`` or
            ``"linear"``, see ``spectrum_to_frequency_image``).
    """

    size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    gray_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    augment: bool = True
    fda: FDAConfig | None = None
    fda_order: str = "before"
    output: str = "image"
    frequency_compress: str = "log"

    def __post_init__(self) -> None:
        if self.fda_order not in ("before", "after"):
            raise ValueError(f"ViewConfig.fda_order must be 'before' or 'after', got {self.fda_order!r}")
        if self.output not in ("image", "frequency"):
            raise ValueError(f"ViewConfig.output must be 'image' or 'frequency', got {self.output!r}")
        if self.frequency_compress not in ("log", "linear"):
            raise ValueError(f"ViewConfig.frequency_compress must be 'log' or 'linear', got {self.frequency_compress!r}")
        if isinstance(self.fda, dict):
            self.fda = FDAConfig(**self.fda)
        require(isinstance(self.size, int) and self.size >= 1, "view size", self.size, "a positive integer")
        require_fraction_range("view_args.crop_scale", self.crop_scale)
        ratio = self.crop_ratio
        require(len(ratio) == 2 and 0 < ratio[0] <= ratio[1] and math.isfinite(ratio[1]), "view_args.crop_ratio",
                ratio, "an ordered pair of positive numbers")
        for name in ("hflip_prob", "jitter_prob", "gray_prob", "blur_prob", "solarize_prob"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"view_args.{name}", value, "a probability in [0, 1]")


@dataclass
class ViewParams:
    """Per-sample parameters of one batch of views (all tensors of length B).

    Attributes:
        crop: (B, 4) crop centre x, centre y, width, height as image fractions.
        flip: (B,) bool.
        jitter: (B,) bool, whether colour jitter applies.
        brightness, contrast, saturation, hue: (B,) factors.
        gray: (B,) bool.
        blur_sigma: (B,) sigma in pixels, 0 where no blur.
        solarize: (B,) bool.
        fda: Fourier Domain Augmentation parameters (None when the view has no FDA).
    """

    crop: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    gray: torch.Tensor
    blur_sigma: torch.Tensor
    solarize: torch.Tensor
    fda: FourierParams | None = None

    def to(self, device: torch.device | str) -> ViewParams:
        return ViewParams(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                             for f in fields(self)})


def _uniform(n: int, low: float, high: float, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def sample_crops(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    attempts: int = 10,
) -> torch.Tensor:
    """Random-resized-crop boxes, torchvision's rule, vectorised.

    Like ``torchvision.transforms.RandomResizedCrop.get_params`` on a square
    image: up to ``attempts`` draws of (area fraction, log-uniform aspect
    ratio) per sample, keeping the first that fits; samples with no fitting
    draw fall back to the whole image.

    Returns:
        (n, 4) tensor of (centre x, centre y, width, height) in [0, 1].
    """
    device = torch.device(device)
    area = _uniform(n * attempts, *scale, generator, device).view(attempts, n)
    log_r = _uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    r = log_r.exp().view(attempts, n)
    w = (area * r).sqrt()
    h = (area / r).sqrt()
    ok = (w <= 1) & (h <= 1)
    first = torch.where(ok.any(0), ok.float().argmax(0), torch.full((n,), -1, device=device))
    idx = first.clamp_min(0)
    cols = torch.arange(n, device=device)
    w = torch.where(first >= 0, w[idx, cols], torch.ones(n, device=device))
    h = torch.where(first >= 0, h[idx, cols], torch.ones(n, device=device))
    cx = w / 2 + torch.rand(n, generator=generator, device=device) * (1 - w)
    cy = h / 2 + torch.rand(n, generator=generator, device=device) * (1 - h)
    return torch.stack([cx, cy, w, h], dim=1)


def color_matrix(brightness: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Per-sample 3x3 RGB matrices for brightness * saturation * hue rotation.

    Brightness scales RGB; saturation blends with the luma image
    (``s I + (1 - s) 1 luma^T``); hue rotates chroma in YIQ space by
    ``2 pi hue`` radians. Returns (B, 3, 3) acting on column RGB vectors:
    ``out = M @ rgb``, applied as saturation then hue then brightness (they
    commute with brightness).
    """
    device, dtype = brightness.device, brightness.dtype
    luma = torch.tensor(_LUMA, device=device, dtype=dtype)
    eye = torch.eye(3, device=device, dtype=dtype)
    s = saturation.view(-1, 1, 1)
    sat = s * eye + (1 - s) * luma.view(1, 1, 3).expand(1, 3, 3)
    rgb2yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=device, dtype=dtype
    )
    yiq2rgb = torch.linalg.inv(rgb2yiq)
    theta = hue * 2 * math.pi
    cos, sin = theta.cos(), theta.sin()
    rot = torch.zeros(len(hue), 3, 3, device=device, dtype=dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    hue_m = yiq2rgb @ rot @ rgb2yiq
    return brightness.view(-1, 1, 1) * (hue_m @ sat)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own sigma (0 = unchanged), reflect padding.

    Shape:
        images: (B, C, H, W) float; sigma: (B,).
    """
    b, c, h, w = images.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    radius = min(radius, (min(h, w) - 1) // 2) if min(h, w) > 2 else 1
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.to(images.dtype).clamp_min(1e-3).view(b, 1)
    kernel = torch.exp(-0.5 * (x.view(1, -1) / s) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    identity = torch.zeros_like(kernel)
    identity[:, radius] = 1
    kernel = torch.where(sigma.view(b, 1) > 0, kernel, identity)
    k = kernel.repeat_interleave(c, 0)  # (B*C, K)
    flat = images.reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    flat = F.conv2d(flat, k.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = F.conv2d(flat, k.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


class ViewPipeline:
    """Makes batches of augmented views from uint8 images on any device.

    Args:
        config: The view distributions.

    Example:
        >>> pipe = ViewPipeline(ViewConfig(size=32))
        >>> views = pipe(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8))
    """

    def __init__(self, config: ViewConfig | None = None) -> None:
        self.config = config or ViewConfig()
        self.fourier = FourierAugment(self.config.fda) if self.config.fda is not None else None

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> ViewParams:
        """Draw every per-sample parameter of one batch of views.

        With ``augment=False`` every image augmentation is drawn as the
        identity (whole-image crop, no flip, jitter, grayscale, blur or
        solarisation); FDA parameters are drawn after the image ones, so a
        seed gives the same image augmentations with and without FDA.
        """
        cfg, n, device = self.config, batch_size, torch.device(device)
        if not cfg.augment:
            cfg = replace(cfg, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_prob=0.0, jitter_prob=0.0,
                          gray_prob=0.0, blur_prob=0.0, solarize_prob=0.0)

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=device) < p

        jitter = coin(cfg.jitter_prob)
        blur = coin(cfg.blur_prob)
        return ViewParams(
            crop=sample_crops(n, cfg.crop_scale, cfg.crop_ratio, generator, device),
            flip=coin(cfg.hflip_prob),
            jitter=jitter,
            brightness=_uniform(n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, generator, device),
            contrast=_uniform(n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, generator, device),
            saturation=_uniform(n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, generator, device),
            hue=_uniform(n, -cfg.hue, cfg.hue, generator, device),
            gray=coin(cfg.gray_prob),
            blur_sigma=torch.where(blur, _uniform(n, *cfg.blur_sigma, generator, device), 0.0),
            solarize=coin(cfg.solarize_prob),
            fda=(self.fourier.sample(n, cfg.size, cfg.size, generator, device) if self.fourier is not None else None),
        )

    def apply(self, images: torch.Tensor, params: ViewParams, normalize: bool = True) -> torch.Tensor:
        """Replay ``params`` on a batch.

        Shape:
            images: (B, 3, H, W) uint8 or float in [0, 1].
            returns: (B, 3, size, size) float32 (normalised when ``normalize``).
        """
        cfg = self.config
        if (self.fourier is None) != (params.fda is None):
            raise ValueError("view parameters and pipeline disagree on FDA: sample them with this pipeline")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        b = x.shape[0]
        cx, cy, w, h = params.crop.unbind(1)
        sign = torch.where(params.flip, -1.0, 1.0).to(x)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = w * sign
        theta[:, 0, 2] = 2 * cx - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * cy - 1
        grid = F.affine_grid(theta, [b, 3, cfg.size, cfg.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.fourier is not None and params.fda is not None and cfg.fda_order == "before":
            x = self.fourier.apply(x, params.fda)  # Figure 5.1: right after the crop

        on = params.jitter
        ones = torch.ones_like(params.brightness)
        bri = torch.where(on, params.brightness, ones)
        con = torch.where(on, params.contrast, ones)
        sat = torch.where(on, params.saturation, ones)
        hue = torch.where(on, params.hue, torch.zeros_like(ones))
        luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        # brightness then contrast (blend with the mean gray of the brightened image)
        x = (x * bri.view(b, 1, 1, 1)).clamp(0, 1)
        gray_mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (con.view(b, 1, 1, 1) * x + (1 - con.view(b, 1, 1, 1)) * gray_mean).clamp(0, 1)
        m = color_matrix(ones, sat, hue).to(x.dtype)
        x = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)

        gray = (x * luma).sum(1, keepdim=True).expand_as(x)
        x = torch.where(params.gray.view(b, 1, 1, 1), gray, x)
        if bool((params.blur_sigma > 0).any()):
            x = gaussian_blur(x, params.blur_sigma.to(x.device))
        x = torch.where(params.solarize.view(b, 1, 1, 1) & (x >= 0.5), 1 - x, x)
        fda_last = self.fourier is not None and params.fda is not None and cfg.fda_order == "after"
        if cfg.output == "frequency":
            spectrum = rfft2(x)
            if fda_last:
                spectrum = self.fourier.apply_spectrum(spectrum, params.fda)  # A_freq(f), no inverse
            x = spectrum_to_frequency_image(spectrum, x.shape[-1], cfg.frequency_compress)
        elif fda_last:
            x = self.fourier.apply(x, params.fda)  # Table 5.4: after the image augmentations
        if normalize:
            mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Sample parameters on the images' device and apply them."""
        params = self.sample(images.shape[0], generator, images.device)
        return self.apply(images, params, normalize=normalize)


class ViewFeed:
    """Batches with their views made on the device, optionally one step ahead on a CUDA side stream.

    ``take(step)`` returns the batch of ``step`` with its images on the
    device and its views; ``prepare(step + 1)``, called once the current
    step's model work is queued, fetches the next batch and queues its
    host-to-device copy and view pipeline on a second CUDA stream, so they
    run while the model step does. Views are made by ``make_views(images,
    step)``, so whatever seeds it uses (the training loop's depend only on
    ``(seed, step)``) the views are the same with and without overlap.
    Tensors made on the side stream are handed to the consumer's stream with
    ``wait_stream`` and ``record_stream`` (the caching allocator then keeps
    their memory until the consumer is done).

    Without overlap (or on a device without streams) ``prepare`` does the
    same work at once on the current stream; with ``overlap=False``
    ``take`` makes the views only when asked, as a plain loop would.

    Args:
        batches: Iterator of dict batches holding uint8 ``"image"`` tensors.
        make_views: ``(images on the device, step) -> list of views``.
        device: Where images and views go.
        overlap: Prepare the next step's views ahead (on a side stream on CUDA).
    """

    def __init__(
        self,
        batches: Iterator[dict[str, Any]],
        make_views: Callable[[torch.Tensor, int], list[torch.Tensor]],
        device: torch.device | str,
        overlap: bool = False,
    ) -> None:
        self.batches = batches
        self.make_views = make_views
        self.device = torch.device(device)
        self.overlap = bool(overlap)
        self.stream = torch.cuda.Stream(self.device) if self.overlap and self.device.type == "cuda" else None
        self._ready: tuple[int, dict[str, Any], torch.Tensor, list[torch.Tensor]] | None = None

    def prepare(self, step: int) -> None:
        """Fetch the batch of ``step`` and queue its copy and views (on the side stream when there is one)."""
        batch = next(self.batches)
        if self.stream is None:
            images = batch["image"].to(self.device, non_blocking=True)
            self._ready = (step, batch, images, self.make_views(images, step))
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # e.g. generator or model state set before
        with torch.cuda.stream(self.stream):
            images = batch["image"].to(self.device, non_blocking=True)
            views = self.make_views(images, step)
        self._ready = (step, batch, images, views)

    def take(self, step: int) -> tuple[dict[str, Any], torch.Tensor, list[torch.Tensor]]:
        """The batch of ``step``, its images on the device and its views, ready for the current stream."""
        if self._ready is None or self._ready[0] != step:
            if self._ready is not None:
                raise RuntimeError(f"views were prepared for step {self._ready[0]}, not {step}")
            self.prepare(step)
        assert self._ready is not None
        _, batch, images, views = self._ready
        self._ready = None
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for tensor in (images, *views):
                tensor.record_stream(current)
        return batch, images, views


def recipe_view(
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    blur_prob: float = 0.0,
    **overrides: object,
) -> ViewConfig:
    """A view of an SSL recipe at ``size`` px.

    Recipes are written for 224 px ImageNet crops; at smaller sizes the blur
    sigma range (0.1, 2.0) px is scaled by ``size / 224`` and blur is dropped
    below 96 px, as SimCLR does for CIFAR-10 (Chen et al. 2020, appendix B.9).
    """
    scale = size / 224
    return ViewConfig(
        size=size,
        blur_prob=blur_prob if size >= 96 else 0.0,
        blur_sigma=(0.1 * scale, 2.0 * scale),
        mean=tuple(mean),  # type: ignore[arg-type]
        std=tuple(std),  # type: ignore[arg-type]
        **overrides,  # type: ignore[arg-type]
    )


def override_view(view: ViewConfig, overrides: dict[str, object]) -> ViewConfig:
    """``view`` with some distributions replaced (e.g. ``{"crop_scale": [0.3, 1.0]}``).

    Lists become tuples (YAML has no tuples); an unknown field raises a
    ``ValueError`` naming it and the valid fields.
    """
    if not overrides:
        return view
    names = {f.name for f in fields(ViewConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"view_args: unknown view field(s) {unknown}; valid: {sorted(names)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(view, **values)  # type: ignore[arg-type]


def simclr_view_config(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> ViewConfig:
    """SimCLR's view recipe at ``size`` px (strength s = 1, blur 0.5 at >= 96 px)."""
    return recipe_view(size, mean, std, blur_prob=0.5)


#: View kinds of the paper's Tables 5.3 to 5.5 (``x`` the image, ``f = F(x)`` its spectrum).
VIEW_KINDS: dict[str, str] = {
    "raw": "x: the image, only resized to the view size",
    "image-aug": "A_im(x): the recipe's image augmentations",
    "fda": "F^-1(A_freq(f)): Fourier Domain Augmentations only",
    "fda+image-aug": "A_im(F^-1(A_freq(f))): FDA right after the crop, then the image augmentations (Figure 5.1)",
    "image-aug+fda": "F^-1(A_freq(F(A_im(x)))): FDA after the image augmentations (Table 5.4)",
    "freq": "f: the frequency image of x (section 5.6.1)",
    "freq-aug": "A_freq(f): FDA on the spectrum, given as a frequency image",
    "image-aug+freq": "F(A_im(x)): the frequency image of the augmented image (Table 5.5)",
    "method": "the recipe's own view, unchanged",
    "method+fda": "the recipe's own view with FDA right after the crop",
}


def view_kind(kind: str, base: ViewConfig, fda: FDAConfig | None = None) -> ViewConfig:
    """The view ``kind`` (see :data:`VIEW_KINDS`) built from a recipe's view ``base``.

    The view pairs of Tables 5.3, 5.4 and 5.5 are then configuration: e.g.
    ``("fda+image-aug", "image-aug")`` is SimCLR + FDA on the left view (the
    paper's best, 70.5%) and ``("raw", "freq")`` the dual encoder's ``(x, f)``.

    Args:
        kind: A key of :data:`VIEW_KINDS`.
        base: The recipe's view (its image augmentations and size).
        fda: FDA distributions (default: Table C.2 at ``base.size``, :func:`fda_config`).
    """
    if kind not in VIEW_KINDS:
        raise KeyError(f"unknown view kind {kind!r}; choose one of {', '.join(VIEW_KINDS)}")
    if kind == "method":
        return base
    fda = fda if fda is not None else fda_config(base.size)
    if kind == "method+fda":
        return replace(base, fda=fda, fda_order="before")
    augment = kind.startswith("image-aug") or kind.endswith("image-aug")
    with_fda = kind in ("fda", "fda+image-aug", "image-aug+fda", "freq-aug")
    order = "after" if kind in ("image-aug+fda", "freq-aug") else "before"
    output = "frequency" if kind in ("freq", "freq-aug", "image-aug+freq") else "image"
    return replace(base, augment=augment, fda=fda if with_fda else None, fda_order=order, output=output)
