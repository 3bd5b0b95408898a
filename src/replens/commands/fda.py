"""``replens fda preview``: each Fourier Domain Augmentation at several strengths (seed Figure 5.3).

One row per operation (amplitude rescale, phase shift, random frequency mask,
Gaussian mixture mask) and image, one column per strength, the original in
the first column and the Table C.2 strength marked with ``*``; the last row of
each image shows the frequency image of the format transform (section 5.6.1)
next to Table C.2's whole FDA drawn a few times. Every operation is applied
with probability 1 and a fixed seed, so the grid is reproducible.
``metrics.json`` records, per operation and strength, the mean absolute pixel
change, a number to tune strengths by ("perturbed sufficiently without hiding
the core attributes", section 5.4).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from replens.commands import add_common_options, args_as_config
from replens.plotting import save_figure
from replens.runs import RunDir, default_run_dir

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


def _load_images(source: str, count: int, size: int | None) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    from replens.data import open_source
    from replens.data.base import resize_center_crop, to_chw_tensor

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

    from replens.augment.fourier import FourierAugment, fda_config, frequency_image

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


def cmd_fda_preview(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out) if args.out is not None else default_run_dir("fda-preview") / "grid.png"
    png = out if out.suffix.lower() == ".png" else out / "grid.png"
    run = RunDir(png.parent)
    run.write_config({"command": "fda preview", **args_as_config(args), "grid": str(png)})
    images = _load_images(args.source, args.images, args.size)
    rows, row_labels, changes = preview_grid(images, seed=args.seed, progress=not args.quiet)
    n_rows, n_cols = len(rows), len(rows[0])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols + 1.6, 1.6 * n_rows), squeeze=False)
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
    save_figure(fig, png, dpi=100)
    run.write_metrics({"grid": str(png), "images": int(images.shape[0]), "size": int(images.shape[-1]),
                       "mean_abs_change": changes})
    print(f"grid: {png}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fda", help="Fourier Domain Augmentations (chapter 5): preview",
                       description="Fourier Domain Augmentations (seed chapter 5).")
    actions = p.add_subparsers(dest="fda_command", required=True, metavar="ACTION")
    q = actions.add_parser("preview", help="grid of each FDA operation at several strengths (Figure 5.3)",
                           description=__doc__)
    q.add_argument("source", metavar="IMAGE_OR_DATA", help="an image file, or a data spec (world:DIR, wds:...)")
    q.add_argument("--images", type=int, default=3, help="images taken from a data spec (default 3)")
    q.add_argument("--size", type=int, default=None,
                   help="resize + centre-crop side (default: the data's size; at most 224 for an image file)")
    add_common_options(q, "PNG path, or a run folder for grid.png (default: runs/fda-preview-<time>/grid.png)")
    q.set_defaults(handler=cmd_fda_preview)
