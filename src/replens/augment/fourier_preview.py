"""Each Fourier Domain Augmentation at several strengths (paper Figure 5.3), as data and as a figure.

One row per operation (amplitude rescale, phase shift, random frequency mask,
Gaussian mixture mask) and image, one column per strength, the original in
the first column and the Table C.2 strength marked with ``*``; the last row of
each image shows the frequency image of the format transform (section 5.6.1)
next to Table C.2's whole FDA drawn a few times. Every operation is applied
with probability 1 and a fixed seed, so the grid is reproducible. The mean
absolute pixel change per operation and strength is a number to tune
strengths by ("perturbed sufficiently without hiding the core attributes",
section 5.4)::

    from replens.augment.fourier_preview import fda_preview

    preview = fda_preview("world:runs/world?split=test", images=3)
    preview.mean_abs_change["phase shift"]["theta=0.55"]
    preview.save("fda.png")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from replens.augment.fourier import FourierAugment, fda_config, frequency_image
from replens.data import open_source
from replens.data.base import resize_center_crop, to_chw_tensor
from replens.plotting import new_figure, save_figure

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

#: (label, FDAConfig overrides) per operation and strength; the second entry is Table C.2's.
STRENGTHS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "amplitude rescale": [
        ("m,n=0.9,1.2", {"amplitude_range": (0.9, 1.2)}),
        ("m,n=0.8,1.75*", {"amplitude_range": (0.8, 1.75)}),
        ("m,n=0.5,2.5", {"amplitude_range": (0.5, 2.5)}),
        ("m,n=0.2,4", {"amplitude_range": (0.2, 4.0)}),
    ],
    "phase shift": [
        ("theta=0.2", {"phase_range": (0.2, 0.2)}),
        ("theta=0.55*", {"phase_range": (0.55, 0.55)}),
        ("theta=1.0", {"phase_range": (1.0, 1.0)}),
        ("theta=1.5", {"phase_range": (1.5, 1.5)}),
    ],
    "random frequency mask": [
        ("k=0.01", {"mask_range": (0.01, 0.01)}),
        ("k=0.055*", {"mask_range": (0.055, 0.055)}),
        ("k=0.2", {"mask_range": (0.2, 0.2)}),
        ("k=0.5", {"mask_range": (0.5, 0.5)}),
    ],
    "Gaussian mixture mask": [
        ("o=5", {"gmm_count": 5}),
        ("o=20*", {"gmm_count": 20}),
        ("o=40", {"gmm_count": 40}),
        ("o=80", {"gmm_count": 80}),
    ],
}
_ONLY = {"amplitude rescale": "amplitude_prob", "phase shift": "phase_prob",
         "random frequency mask": "mask_prob", "Gaussian mixture mask": "gmm_prob"}


def load_preview_images(source: str, count: int, size: int | None) -> torch.Tensor:
    """(N, 3, S, S) uint8 images: an image file, or ``count`` evenly spaced images of a data spec."""
    import numpy as np
    import torch
    from PIL import Image

    path = Path(source)
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"image {source} does not exist")
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
        side = size or min(224, *array.shape[:2])
        return to_chw_tensor(resize_center_crop(array, side)).unsqueeze(0)
    src = open_source(source, image_size=size)
    if len(src) == 0:
        raise ValueError(f"{source}: the data source is empty")
    picks = np.linspace(0, len(src) - 1, num=min(count, len(src))).round().astype(int)
    images = [src[int(i)]["image"] for i in picks]
    if any(im is None for im in images):
        raise ValueError(f"{source}: an image could not be decoded")
    if size is None and len({tuple(im.shape) for im in images}) > 1:
        raise ValueError(f"{source}: images differ in size; give --size")
    batch = torch.stack(images)
    if batch.shape[-1] != batch.shape[-2]:
        side = min(batch.shape[-2:])
        batch = torch.stack([to_chw_tensor(resize_center_crop(im.permute(1, 2, 0).numpy(), side)) for im in batch])
    return batch


def preview_grid(images: Any, seed: int = 0, progress: bool = True) -> tuple[list[list[Any]], list[str], dict[str, Any]]:
    """Tiles (rows of (3, H, W) float images), row labels and the mean absolute pixel change per strength.

    Args:
        images: (N, 3, H, W) uint8 square images.
        seed: Seed of every draw.
        progress: Show a progress bar.
    """
    import torch
    from tqdm.auto import tqdm

    x = images.float() / 255.0
    size = x.shape[-1]
    off = {key: 0.0 for key in _ONLY.values()}
    rows: list[list[Any]] = [[] for _ in range(len(x) * (len(STRENGTHS) + 1))]
    row_labels: list[str] = []
    changes: dict[str, Any] = {}
    bar = tqdm(total=len(STRENGTHS) + 1, disable=not progress, desc="fda preview", unit="op")
    for k, (op, levels) in enumerate(STRENGTHS.items()):
        changes[op] = {}
        for label, overrides in levels:
            cfg = fda_config(size, **{**off, _ONLY[op]: 1.0, **overrides})
            fda = FourierAugment(cfg)
            out = fda(x, torch.Generator().manual_seed(seed))
            changes[op][label.rstrip("*")] = float((out - x).abs().mean())
            for i in range(len(x)):
                rows[i * (len(STRENGTHS) + 1) + k].append(out[i])
        bar.update(1)
    table = FourierAugment(fda_config(size, **{key: 1.0 for key in _ONLY.values()}))
    freq = frequency_image(x)
    draws = [table(x, torch.Generator().manual_seed(seed + j)) for j in range(len(next(iter(STRENGTHS.values()))))]
    bar.update(1)
    bar.close()
    for i in range(len(x)):
        for k, op in enumerate(STRENGTHS):
            rows[i * (len(STRENGTHS) + 1) + k].insert(0, x[i])
            row_labels.append(f"{op}" if len(x) == 1 else f"image {i}: {op}")
        rows[i * (len(STRENGTHS) + 1) + len(STRENGTHS)] = [freq[i]] + [d[i] for d in draws]
        row_labels.append("frequency image f | all four FDA ops" if len(x) == 1 else f"image {i}: f | all four ops")
    changes["all four (Table C.2 ranges, p=1)"] = float(torch.stack([(d - x).abs().mean() for d in draws]).mean())
    return rows, row_labels, changes


@dataclass
class FDAPreview:
    """The Figure 5.3 grid as data.

    Attributes:
        tiles: Rows of (3, H, W) float images in [0, 1].
        row_labels: One label per row.
        mean_abs_change: ``{operation: {strength: change}}`` plus the whole Table C.2 FDA's change.
        images: How many images the grid shows.
        size: Their side in pixels.
    """

    tiles: list[list[torch.Tensor]]
    row_labels: list[str]
    mean_abs_change: dict[str, Any]
    images: int
    size: int

    def save(self, path: str | Path) -> Path:
        """Draw the grid (titles: the strengths, ``*`` = Table C.2) and write it to ``path`` (PNG)."""
        rows, row_labels = self.tiles, self.row_labels
        n_rows, n_cols = len(rows), len(rows[0])
        fig = new_figure(1.6 * n_cols + 1.6, 1.6 * n_rows, dpi=100)
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for r, row in enumerate(rows):
            for c, tile in enumerate(row):
                ax = axes[r][c]
                ax.imshow(tile.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
        for r, levels in enumerate(STRENGTHS.values()):
            for c, (label, _) in enumerate(levels):
                axes[r][c + 1].set_title(label, fontsize=7)
        axes[0][0].set_title("original", fontsize=7)
        fig.suptitle("Fourier Domain Augmentations (* = Table C.2)", fontsize=9)
        return save_figure(fig, path, dpi=100)


def fda_preview(source: str | torch.Tensor, *, images: int = 3, size: int | None = None, seed: int = 0,
                progress: bool = False) -> FDAPreview:
    """Every FDA operation at several strengths on a few images (Figure 5.3).

    Args:
        source: An image file, a data spec, or (N, 3, S, S) uint8 images.
        images: Images taken from a data spec.
        size: Resize + centre-crop side (default: the data's size; at most 224 for an image file).
        seed: Seed of every draw.
        progress: Show a progress bar.
    """
    batch = source if isinstance(source, torch.Tensor) else load_preview_images(source, images, size)
    tiles, row_labels, changes = preview_grid(batch, seed=seed, progress=progress)
    return FDAPreview(tiles=tiles, row_labels=row_labels, mean_abs_change=changes, images=int(batch.shape[0]),
                      size=int(batch.shape[-1]))
