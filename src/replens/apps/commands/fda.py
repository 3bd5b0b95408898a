"""``replens fda preview``: each Fourier Domain Augmentation at several strengths (paper Figure 5.3).

A thin caller of :func:`replens.augment.fourier_preview.fda_preview`.

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

from replens.apps.commands import add_common_options, args_as_config, positive_int
from replens.augment.fourier_preview import fda_preview, load_preview_images
from replens.runs import RunFolderError, default_run_dir, open_run


def cmd_fda_preview(args: argparse.Namespace) -> int:
    images = load_preview_images(args.source, args.images, args.size)
    out = Path(args.out) if args.out is not None else default_run_dir("fda-preview")
    # --out FILE.png writes that file and nothing else; a folder is a run folder with grid.png in it
    run = None if out.suffix.lower() == ".png" else open_run(
        out, {"command": "fda preview", **args_as_config(args)}, overwrite=args.overwrite)
    png = out if run is None else run / "grid.png"
    if run is None and png.is_dir():
        raise RunFolderError(f"--out {png} is a folder; give a .png file path or a folder without the .png suffix")
    preview = fda_preview(images, seed=args.seed, progress=not args.quiet)
    preview.save(png)
    if run is not None:
        run.write_metrics({"grid": str(png), "images": preview.images, "size": preview.size,
                           "mean_abs_change": preview.mean_abs_change})
    print(f"grid: {png}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fda", help="Fourier Domain Augmentations (chapter 5): preview",
                       description="Fourier Domain Augmentations (paper chapter 5).")
    actions = p.add_subparsers(dest="fda_command", required=True, metavar="ACTION")
    q = actions.add_parser("preview", help="grid of each FDA operation at several strengths (Figure 5.3)",
                           description=__doc__)
    q.add_argument("source", metavar="IMAGE_OR_DATA", help="an image file, or a data spec (world:DIR, wds:...)")
    q.add_argument("--images", type=positive_int, default=3, help="images taken from a data spec (default 3)")
    q.add_argument("--size", type=positive_int, default=None,
                   help="resize + centre-crop side (default: the data's size; at most 224 for an image file)")
    add_common_options(q, "PNG path (only that file is written), or a run folder for grid.png, config.yaml and "
                          "metrics.json (default: runs/fda-preview-<time>/)")
    q.set_defaults(handler=cmd_fda_preview)
