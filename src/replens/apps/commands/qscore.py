"""``replens qscore``: discriminative features, per-sample Q-Scores and their report (paper chapter 3).

A thin caller of :func:`replens.quality.score` (the pipeline) and :meth:`replens.quality.QScoreReport.save`.

Two ways in:

* ``--model M [--weights W] --data D [--test-data D2]``: the representations
  are streamed to ``OUT/embeddings-train`` (and ``-test``), resumably;
* ``--embeddings DIR [--test-embeddings DIR2]``: folders of ``replens embed``.

Discriminative features come from the first (training) split; the second
split, when given, is scored with them (section 3.4.1). ``--labels`` adds
failure prediction (a linear probe fitted on the training split, its
correctness on the test split, or on a seeded ``--holdout`` of the one
split; AUROC/AUPRC, ROC and PR plots) and the compression curve. Always
written: ``scores.parquet`` (or ``.csv``), ``failures.csv`` (most likely
failures first), ``feature_sets.json``, ``metrics.json`` (with RankMe and
alpha-ReQ) and ``activation.png``. ``--saliency N`` adds Grad-CAM IoU with
core/spurious masks (a world source, or ``--salient-masks``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from replens.apps.commands import (
    add_common_options,
    non_negative_int,
    open_run_from_args,
    parse_command_options,
    positive_int,
)
from replens.data import open_source
from replens.models import EmbeddingsError, create_backbone, load_embeddings
from replens.quality import QScoreConfig, score
from replens.quality.pipeline import check_inputs


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "qscore",
        help="per-sample Q-Score, discriminative features, failure prediction and compression (chapter 3)",
        description=__doc__.split("\n\n")[0],
    )
    src = p.add_argument_group("representations")
    src.add_argument("--model", help="backbone name (replens list)")
    src.add_argument("--weights", default=None, help="weights file (safetensors or torch state dict)")
    src.add_argument("--pretrained", action="store_true", help="use the library's cached pretrained weights")
    src.add_argument("--data", help="data spec of the split that defines D (e.g. world:DIR?split=train)")
    src.add_argument("--test-data", help="data spec of a second split scored with the first split's D")
    src.add_argument("--embeddings", type=Path, help="embeddings folder (replens embed) instead of --model/--data")
    src.add_argument("--test-embeddings", type=Path, help="embeddings folder of the second split")
    src.add_argument("--layer", default=None, help="named layer to read (default: the representation)")
    src.add_argument("--image-size", type=positive_int, default=None, help="resize + center-crop images to this side")
    src.add_argument("--batch-size", type=positive_int, default=256)
    src.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader workers")
    src.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    src.add_argument("--threads", type=non_negative_int, default=None, help="torch CPU threads (default: torch's choice)")
    q = p.add_argument_group("Q-Score")
    q.add_argument("--eps", type=float, default=4.0, help="L_i threshold mean + eps * std (default 4)")
    q.add_argument("--band", default="50,95", help="percentile band of A for D, LOWER,UPPER (default 50,95)")
    q.add_argument("--features", type=Path, default=None, help="feature_sets.json fixing D instead of the band")
    q.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="per-sample scores file format")
    q.add_argument("--top-failures", type=non_negative_int, default=100, help="rows of failures.csv (0: all)")
    ev = p.add_argument_group("with labels")
    ev.add_argument("--labels", action="store_true", help="use labels: failure prediction and compression")
    ev.add_argument("--holdout", type=float, default=0.2, help="test fraction when there is no second split")
    ev.add_argument("--probe-samples", type=int, default=50_000, help="max probe training samples (seeded subset)")
    ev.add_argument("--weight-decay", type=float, default=1e-4, help="linear probe L2 penalty")
    ev.add_argument("--no-compression", action="store_true", help="skip the compression curve")
    ev.add_argument("--fractions", default=None, help="kept fractions for compression, e.g. 0.1,0.3,0.45,0.7")
    ev.add_argument("--seeds", type=int, default=4, help="random subsets per size (default 4)")
    ev.add_argument("--spectrum-samples", type=positive_int, default=25_600, help="rows for RankMe / alpha-ReQ")
    sal = p.add_argument_group("saliency IoU (section 3.5)")
    sal.add_argument("--saliency", type=non_negative_int, default=0, metavar="N", help="Grad-CAM IoU on N images (needs --model)")
    sal.add_argument("--saliency-threshold", type=float, default=0.5, help="heatmap area threshold")
    sal.add_argument("--cam-layer", default=None, help="Grad-CAM layer (default: the backbone's last stage)")
    sal.add_argument("--salient-masks", type=Path, default=None, help="Salient ImageNet mask folder")
    sal.add_argument("--salient-images", type=Path, default=None, help="ImageNet images (<wnid>/<name>.JPEG)")
    sal.add_argument("--salient-csv", type=Path, default=None, help="discover_spurious_features.csv")
    add_common_options(p)
    p.set_defaults(handler=cmd_qscore)


def _band(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lower, upper = (float(v) for v in parts)
    except ValueError:
        raise ValueError(f"--band wants LOWER,UPPER percentiles, got {text!r}") from None
    if not 0 <= lower <= upper <= 100:
        raise ValueError(f"--band needs 0 <= LOWER <= UPPER <= 100, got {text!r}")
    return lower, upper


def qscore_config(args: argparse.Namespace) -> Any:
    """The :class:`~replens.quality.QScoreConfig` of parsed ``replens qscore`` options."""
    return QScoreConfig(
        eps=args.eps, band=_band(args.band), features=args.features, labels=args.labels, holdout=args.holdout,
        probe_samples=args.probe_samples, weight_decay=args.weight_decay, compression=not args.no_compression,
        fractions=[float(v) for v in args.fractions.split(",")] if args.fractions else None, seeds=args.seeds,
        spectrum_samples=args.spectrum_samples, top_failures=args.top_failures, saliency=args.saliency,
        saliency_threshold=args.saliency_threshold, cam_layer=args.cam_layer, salient_masks=args.salient_masks,
        salient_images=args.salient_images, salient_csv=args.salient_csv, layer=args.layer,
        image_size=args.image_size, batch_size=args.batch_size, workers=args.workers, device=args.device,
        seed=args.seed,
    )


def parse_options(options: Sequence[str], **given: Any) -> Any:
    """A :class:`~replens.quality.QScoreConfig` from ``replens qscore`` options (``["--band", "40,95"]``).

    ``given`` sets option values first, by their argparse names (``eps=2.0, labels=True``); ``options``
    then override them, as they would on the command line. For apps whose users pass extra qscore options.
    """
    return qscore_config(parse_command_options(add_parser, "qscore", options, given))


def cmd_qscore(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except EmbeddingsError as exc:
        print(f"replens qscore: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = qscore_config(args)  # validates --band and --holdout
    check_inputs(config, embeddings=args.embeddings is not None, model=bool(args.model),
                 data=bool(args.data or args.test_data))
    if args.test_embeddings is not None and args.embeddings is None:
        raise ValueError("--test-embeddings needs --embeddings")
    backbone = None
    if args.model and (args.saliency or args.embeddings is None):
        backbone = create_backbone(args.model, weights=args.weights, pretrained=args.pretrained).eval()
        backbone.require_layers([args.layer, args.cam_layer])
    if args.embeddings is None:
        data: Any = open_source(args.data, image_size=args.image_size)
        test: Any = open_source(args.test_data, image_size=args.image_size) if args.test_data else None
    else:
        for folder in (args.embeddings, args.test_embeddings):
            if folder is not None:
                load_embeddings(folder)  # complete and readable, before the run folder is touched
    run = open_run_from_args(args, "qscore")
    if args.embeddings is None:
        report = score(backbone, data, test=test, config=config, work_dir=run.path, progress=not args.quiet)
    else:
        report = score(args.embeddings, test=args.test_embeddings, config=config, saliency_model=backbone,
                       work_dir=run.path, progress=not args.quiet)
    report.save(run.path, table_format=args.format)
    _print_summary(report.metrics, run.path)
    return 0


def _print_summary(metrics: dict[str, Any], path: Path) -> None:
    for split, summary in metrics["qscore"].items():
        print(f"{split}: {summary['samples']} samples, |D| = {summary['discriminative_features']} of "
              f"{summary['dim']}, mean Q = {summary['qscore_mean']:.4f}, "
              f"{summary['samples_without_discriminative']} without a discriminative feature")
    if "failure_prediction" in metrics:
        fp = metrics["failure_prediction"]
        print(f"probe top-1 {metrics['probe']['top1']:.2f}%  AUROC {100 * fp['auroc']:.2f}  "
              f"AUPRC {100 * fp['auprc']:.2f} (chance {100 * fp['correct_rate']:.2f})")
    spec = metrics["spectrum"]
    print(f"RankMe {spec['rankme']:.2f}  alpha-ReQ {spec['alpha_req']:.3f}")
    if "saliency" in metrics:
        s = metrics["saliency"]
        print(f"mIoU core {s['miou_core']:.2f}%  mIoU spurious {s['miou_spurious']:.2f}% ({s['images']} images)")
    print(f"run folder: {path}")
