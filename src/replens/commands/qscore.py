"""``replens qscore``: discriminative features, per-sample Q-Scores and their report (seed chapter 3).

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
import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

from replens.commands import add_common_options, args_as_config, run_dir_from_args
from replens.runs import atomic_write, atomic_write_json, atomic_write_text


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
    src.add_argument("--image-size", type=int, default=None, help="resize + center-crop images to this side")
    src.add_argument("--batch-size", type=int, default=256)
    src.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    src.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    src.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    q = p.add_argument_group("Q-Score")
    q.add_argument("--eps", type=float, default=4.0, help="L_i threshold mean + eps * std (default 4)")
    q.add_argument("--band", default="50,95", help="percentile band of A for D, LOWER,UPPER (default 50,95)")
    q.add_argument("--features", type=Path, default=None, help="feature_sets.json fixing D instead of the band")
    q.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="per-sample scores file format")
    q.add_argument("--top-failures", type=int, default=100, help="rows of failures.csv (0: all)")
    ev = p.add_argument_group("with labels")
    ev.add_argument("--labels", action="store_true", help="use labels: failure prediction and compression")
    ev.add_argument("--holdout", type=float, default=0.2, help="test fraction when there is no second split")
    ev.add_argument("--probe-samples", type=int, default=50_000, help="max probe training samples (seeded subset)")
    ev.add_argument("--weight-decay", type=float, default=1e-4, help="linear probe L2 penalty")
    ev.add_argument("--no-compression", action="store_true", help="skip the compression curve")
    ev.add_argument("--fractions", default=None, help="kept fractions for compression, e.g. 0.1,0.3,0.45,0.7")
    ev.add_argument("--seeds", type=int, default=4, help="random subsets per size (default 4)")
    ev.add_argument("--spectrum-samples", type=int, default=25_600, help="rows for RankMe / alpha-ReQ")
    sal = p.add_argument_group("saliency IoU (section 3.5)")
    sal.add_argument("--saliency", type=int, default=0, metavar="N", help="Grad-CAM IoU on N images (needs --model)")
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


def _write_table(path: Path, columns: dict[str, list[Any] | Any], fmt: str) -> Path:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(columns)
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    names = list(columns)
    rows = zip(*(list(columns[k]) for k in names), strict=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def cmd_qscore(args: argparse.Namespace) -> int:
    from replens.models import EmbeddingsError

    try:
        return _run(args)
    except EmbeddingsError as exc:
        print(f"replens qscore: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from replens.quality import (
        compression_curve,
        failure_prediction,
        load_feature_sets,
        qscore_embeddings,
        rank_failures,
        spectrum_metrics,
    )
    from replens.quality.plots import plot_activation_percentages, plot_compression, plot_pr, plot_roc

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    band = _band(args.band)
    if args.embeddings is None and not (args.model and args.data):
        raise ValueError("give --model and --data, or --embeddings")
    if args.embeddings is not None and (args.data or args.test_data):
        raise ValueError("--embeddings replaces --data/--test-data; give one or the other")
    if args.test_embeddings is not None and args.embeddings is None:
        raise ValueError("--test-embeddings needs --embeddings")
    if args.saliency and not (args.model and (args.data or args.salient_masks)):
        raise ValueError("--saliency needs --model with --data or --salient-masks (Grad-CAM runs the network)")
    run = run_dir_from_args(args, "qscore")
    run.write_config({"command": "qscore", **args_as_config(args)})
    progress = not args.quiet
    fixed = load_feature_sets(args.features) if args.features else None
    timings: dict[str, float] = {}

    backbone = sources = None
    if args.saliency and args.embeddings is not None:
        from replens.models import create_backbone

        backbone = create_backbone(args.model, weights=args.weights, pretrained=args.pretrained).eval()
    if args.embeddings is None:
        from replens.data import open_source
        from replens.models import create_backbone, extract_features

        backbone = create_backbone(args.model, weights=args.weights, pretrained=args.pretrained).eval()
        sources = {"train": open_source(args.data, image_size=args.image_size)}
        if args.test_data:
            sources["test"] = open_source(args.test_data, image_size=args.image_size)
        folders = {}
        for split, source in sources.items():
            t0 = time.perf_counter()
            folders[split] = extract_features(
                backbone, source, run / f"embeddings-{split}", layer=args.layer, normalize=False,
                batch_size=args.batch_size, device=args.device, num_workers=args.workers, progress=progress,
            )
            timings[f"embed_{split}_s"] = time.perf_counter() - t0
    else:
        folders = {"train": args.embeddings}
        if args.test_embeddings is not None:
            folders["test"] = args.test_embeddings

    t0 = time.perf_counter()
    train, train_chunks = qscore_embeddings(folders["train"], eps=args.eps, band=band, discriminative=fixed,
                                            spill_dir=run.path, progress=progress)
    results, chunks = {"train": train}, {"train": train_chunks}
    if "test" in folders:
        results["test"], chunks["test"] = qscore_embeddings(
            folders["test"], eps=args.eps, discriminative=train.discriminative, spill_dir=run.path, progress=progress
        )
        if chunks["test"].dim != train_chunks.dim:
            raise ValueError(f"the splits have {train_chunks.dim} and {chunks['test'].dim} features")
    timings["qscore_s"] = time.perf_counter() - t0
    feature_sets = train.feature_sets()
    atomic_write_json(run / "feature_sets.json", feature_sets)
    plot_activation_percentages(train, run / "activation.png")
    metrics: dict[str, Any] = {
        "qscore": {split: res.summary() for split, res in results.items()},
        "discriminative_features": len(train.discriminative),
    }

    # the split whose samples are judged: the second split, or a seeded holdout of the first
    rng = np.random.default_rng(args.seed)
    n_train = len(train_chunks)
    eval_split = "test" if "test" in results else "train"
    eval_rows = np.arange(len(chunks[eval_split]))
    fit_rows = np.arange(n_train)
    if eval_split == "train" and args.labels:
        if not 0.0 < args.holdout < 1.0:
            raise ValueError(f"--holdout must lie in (0, 1), got {args.holdout}")
        perm = rng.permutation(n_train)
        n_eval = max(1, int(round(args.holdout * n_train)))
        eval_rows, fit_rows = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    correct = predictions = None
    reports = {}
    if args.labels:
        from replens.evaluate import fit_linear_probe

        for split in chunks:
            unknown = int((chunks[split].labels < 0).sum())
            if unknown:
                raise ValueError(f"--labels: {unknown} samples of the {split} split have no label")
        if len(fit_rows) > args.probe_samples:
            fit_rows = np.sort(rng.choice(fit_rows, size=args.probe_samples, replace=False))
        t0 = time.perf_counter()
        fit_x = train_chunks.rows(fit_rows)
        probe = fit_linear_probe(fit_x, train_chunks.labels[fit_rows], weight_decay=args.weight_decay,
                                 device=args.device)
        ev_chunks = chunks[eval_split]
        predictions = np.empty(len(eval_rows), dtype=np.int64)
        for start in range(0, len(eval_rows), 8192):
            rows = eval_rows[start : start + 8192]
            predictions[start : start + len(rows)] = probe.predict(ev_chunks.rows(rows))
        correct = predictions == ev_chunks.labels[eval_rows]
        timings["probe_s"] = time.perf_counter() - t0
        report = failure_prediction(results[eval_split].scores[eval_rows], correct)
        reports[args.model or Path(folders["train"]).name] = report
        metrics["probe"] = {"top1": float(100 * correct.mean()), "train_samples": int(len(fit_rows)),
                            "eval_split": eval_split, "eval_samples": int(len(eval_rows))}
        metrics["failure_prediction"] = report.as_dict()
        plot_roc(reports, run / "roc.png")
        plot_pr(reports, run / "pr.png")
        if not args.no_compression:
            t0 = time.perf_counter()
            comp_rows = eval_rows
            if len(comp_rows) > args.probe_samples:
                comp_rows = np.sort(rng.choice(comp_rows, size=args.probe_samples, replace=False))
            kwargs = {}
            if args.fractions:
                kwargs["fractions"] = [float(v) for v in args.fractions.split(",")]
            curve = compression_curve(
                fit_x, train_chunks.labels[fit_rows], ev_chunks.rows(comp_rows), ev_chunks.labels[comp_rows],
                train.percentages, reference_band=band, seeds=args.seeds, weight_decay=args.weight_decay,
                device=args.device, progress=progress, **kwargs,
            )
            metrics["compression"] = curve
            plot_compression(curve, run / "compression.png")
            timings["compression_s"] = time.perf_counter() - t0
    spec_rows = np.arange(n_train)
    if n_train > args.spectrum_samples:
        spec_rows = np.sort(rng.choice(n_train, size=args.spectrum_samples, replace=False))
    metrics["spectrum"] = spectrum_metrics(train_chunks.rows(spec_rows), max_samples=args.spectrum_samples,
                                           seed=args.seed)

    # per-sample table and the ranked list of likely failures
    columns: dict[str, list[Any]] = {k: [] for k in ("split", "row", "index", "name", "label", "domain", "qscore",
                                                      "n_highly", "n_discriminative", "prediction", "correct")}
    eval_pos = {int(r): k for k, r in enumerate(eval_rows)}
    for split, res in results.items():
        ch = chunks[split]
        n = len(ch)
        columns["split"] += [split] * n
        columns["row"] += list(range(n))
        columns["index"] += ch.index.tolist()
        columns["name"] += list(ch.names)
        columns["label"] += ch.labels.tolist()
        columns["domain"] += ch.domains.tolist()
        columns["qscore"] += res.scores.tolist()
        columns["n_highly"] += res.n_highly.tolist()
        columns["n_discriminative"] += res.n_discriminative.tolist()
        for r in range(n):
            k = eval_pos.get(r) if split == eval_split and correct is not None else None
            columns["prediction"].append(int(predictions[k]) if k is not None else None)
            columns["correct"].append(bool(correct[k]) if k is not None else None)
    scores_path = run / f"scores.{args.format}"
    _write_table(scores_path, columns, args.format)
    ev_chunks = chunks[eval_split]
    ranked = rank_failures(results[eval_split].scores[eval_rows], [ev_chunks.names[r] for r in eval_rows],
                           top=args.top_failures or None)
    fail_cols: dict[str, list[Any]] = {"rank": [], "split": [], "row": [], "name": [], "qscore": [], "label": []}
    if correct is not None:
        fail_cols.update(prediction=[], correct=[])
    for item in ranked:
        row = int(eval_rows[item["row"]])
        fail_cols["rank"].append(item["rank"])
        fail_cols["split"].append(eval_split)
        fail_cols["row"].append(row)
        fail_cols["name"].append(item["name"])
        fail_cols["qscore"].append(item["qscore"])
        fail_cols["label"].append(int(ev_chunks.labels[row]))
        if correct is not None:
            fail_cols["prediction"].append(int(predictions[item["row"]]))
            fail_cols["correct"].append(bool(correct[item["row"]]))
    _write_table(run / "failures.csv", fail_cols, "csv")
    if correct is not None and args.top_failures:
        top = np.array(fail_cols["correct"], dtype=bool)
        metrics["failures_top_k"] = {"k": int(len(top)), "misclassified": int((~top).sum()),
                                     "misclassified_rate": float((~top).mean()) if len(top) else float("nan"),
                                     "base_misclassified_rate": float(1 - correct.mean())}

    if args.saliency:
        metrics["saliency"] = _saliency(args, backbone, sources, eval_split, chunks[eval_split].index[eval_rows],
                                        correct, train.discriminative, rng, progress)
    metrics["timings"] = timings
    metrics["outputs"] = sorted(p.name for p in run.path.iterdir() if p.is_file() and not p.name.startswith("."))
    run.write_metrics(metrics)
    _print_summary(metrics, run.path)
    return 0


def _saliency(args: argparse.Namespace, backbone: Any, sources: Any, eval_split: str, eval_index: Any,
              correct: Any, discriminative: Any, rng: Any, progress: bool) -> dict[str, Any]:
    """mIoU of Grad-CAMs with core/spurious masks on ``--saliency`` images of the judged split.

    ``eval_index`` holds the source positions of the judged rows (the embeddings' stored index, so
    skipped unreadable images do not shift them).
    """
    import numpy as np

    from replens.quality import SalientImageNetSource, saliency_iou

    if args.salient_masks is not None:
        if args.salient_images is None:
            raise ValueError("--salient-masks needs --salient-images (the ImageNet image folder)")
        source = SalientImageNetSource(args.salient_masks, args.salient_images, args.salient_csv,
                                       image_size=args.image_size or 224)
        rows = np.sort(rng.choice(len(source), size=min(args.saliency, len(source)), replace=False))
        split_correct = None
    else:
        if sources is None:
            raise ValueError("--saliency with --embeddings needs --salient-masks (or use --data)")
        source = sources[eval_split]
        take = np.sort(rng.choice(len(eval_index), size=min(args.saliency, len(eval_index)), replace=False))
        rows = eval_index[take]
        split_correct = correct[take] if correct is not None else None
    result = saliency_iou(backbone, source, discriminative, rows, eps=args.eps, layer=args.cam_layer,
                          threshold=args.saliency_threshold, batch_size=min(64, args.batch_size),
                          device=args.device, progress=progress)
    return result.summary(split_correct)


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
