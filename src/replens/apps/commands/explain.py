"""``replens explain`` (FALCON) and ``replens captions`` (caption banks).

::

    replens explain --model M [--weights W] --data D [--vl MODEL] [--captions BANK]
                    [--failures [--train-data D2] [--failure-data D3]] [--transfer-from RUN]
    replens captions build (--from FILE | --world) [--vl MODEL] --out BANK [--faiss ivf]
    replens captions import --embeddings 'DIR/text_emb_*.npy' --captions FILE... --out BANK
    replens captions index BANK [--kind ivf]

``explain`` writes ``concepts.json``, ``concepts.csv``, ``report.html`` (with
``images/``), ``representations.npy`` and ``rows.json`` into its run folder,
plus ``failures.json``/``.csv`` and ``transfer.json`` when asked; on a world
probe set ``metrics.json`` also holds the ground-truth precision and recall.
"""

from __future__ import annotations

import argparse
import glob
import time
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
from replens.explain import (
    FalconConfig,
    build_bank,
    default_world_bank,
    explain,
    import_embedding_shards,
    is_pattern_world,
    open_bank,
    read_caption_file,
    world_caption_texts,
)
from replens.models import create_backbone
from replens.vl import load_vl_model


def _vl(args: argparse.Namespace) -> Any:
    return load_vl_model(
        args.vl, weights=args.vl_weights, device=args.device, cache_dir=args.cache_dir, progress=not args.quiet
    )


def falcon_config(args: argparse.Namespace) -> Any:
    """The :class:`~replens.explain.FalconConfig` of parsed ``replens explain`` options."""
    return FalconConfig(
        alpha_multiplier=args.alpha_std,
        min_samples=args.min_samples,
        mode=args.mode,
        gamma=args.gamma,  # None: the VL model's threshold (replens.explain.falcon.interpretability_threshold)
        beta=args.beta,
        epsilon=args.epsilon if args.epsilon in ("feature", "global") else float(args.epsilon),
        min_score=args.min_score,
        max_groups=args.max_groups,
        max_images=args.max_images,
        explain_all=args.explain_all,
        gradcam_layer=args.layer,
        cam_threshold=args.cam_threshold,
        discard_words=[w for w in (args.discard or "").split(",") if w],
        batch_size=args.batch_size,
    )


def explain_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`replens.explain.explain` that parsed options set (besides the config)."""
    return {
        "failures": args.failures, "train_data": args.train_data, "failure_data": args.failure_data,
        "top_features": args.top_features,
        "max_failures": args.max_failures, "transfer": args.transfer_from, "transfer_method": args.transfer_method,
        "transfer_std": args.transfer_std, "image_size": args.image_size, "cache_dir": args.cache_dir,
        "device": args.device, "seed": args.seed,
    }


def parse_options(options: Sequence[str], **given: Any) -> argparse.Namespace:
    """``replens explain`` options parsed onto ``given`` values (by argparse name), as on the command line.

    For apps whose users pass extra explain options (``["--alpha-std", "4"]``).
    """
    return parse_command_options(add_parser, "explain", options, given)


def cmd_explain(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    source = open_source(args.data, image_size=args.image_size)
    backbone = create_backbone(args.model, weights=args.weights, pretrained=args.pretrained).eval()
    backbone.require_layers([args.layer])  # before the VL model, which may train for minutes
    run = open_run_from_args(args, "explain")
    vl = _vl(args)
    bank = (
        open_bank(args.captions) if args.captions
        else default_world_bank(vl, args.cache_dir, progress=not args.quiet, patterns=is_pattern_world(source))
    )
    found = explain(backbone, source, vl, bank, falcon_config(args), model_name=args.model, data_name=args.data,
                    progress=not args.quiet, **explain_options(args))
    found.metrics["seconds"] = time.perf_counter() - t0
    found.save(run.path)
    _print_summary(found, run.path)
    return 0


def _print_summary(found: Any, path: Path) -> None:
    s = found.metrics["falcon"]
    print(
        f"FALCON: {s['interpretable_groups']} interpretable of {s['candidate_groups']} feature groups "
        f"(alpha {s['alpha']:.4f}); {s['features_in_interpretable_groups']}/{s['feature_dim']} features explained"
    )
    for g in found.result.explained[:10]:
        print(f"  group {g.name} ({len(g.highly)} images): {', '.join(g.concepts(5)) or '-'}")
    if "ground_truth" in found.metrics:
        pk = found.metrics["ground_truth"]["top_k"]["precision"]
        print(f"ground truth: precision@1 {pk[1]:.1f}%, precision@6 {pk[6]:.1f}%")
    if found.failure_records:
        print(f"failures: {len(found.failure_records)} explained (accuracy {found.metrics['failures']['accuracy']:.2f}%)")
    print(f"report: {path / 'report.html'}")


# ----------------------------------------------------------------------------- captions
def cmd_captions_build(args: argparse.Namespace) -> int:
    if bool(args.source) == bool(args.world):
        raise ValueError("pass exactly one of --from FILE or --world")
    run = open_run_from_args(args, "captions build", folder_name="captions")
    texts = world_caption_texts() if args.world else read_caption_file(args.source, args.column)
    vl = _vl(args)
    t0 = time.perf_counter()
    bank = build_bank(
        texts,
        vl,
        run.path,
        shard_size=args.shard_size,
        progress=not args.quiet,
        extra={"source": "world grammar" if args.world else str(args.source)},
    )
    metrics: dict[str, Any] = {
        "captions": len(bank),
        "dim": bank.dim,
        "vl": vl.name,
        "seconds": time.perf_counter() - t0,
    }
    if args.faiss:
        metrics["faiss"] = bank.build_faiss_index(args.faiss, nprobe=args.nprobe)
    run.write_metrics(metrics)
    print(f"caption bank: {run.path} ({len(bank)} captions, {bank.dim}-d, {len(bank.manifest['shards'])} shards)")
    if args.faiss:
        print(f"faiss {args.faiss}: recall@5 {metrics['faiss']['recall_at_5']:.3f}")
    return 0


def cmd_captions_import(args: argparse.Namespace) -> int:
    files = sorted(p for pattern in args.embeddings for p in glob.glob(pattern)) or list(args.embeddings)
    captions: Any = args.captions[0] if len(args.captions) == 1 else args.captions
    run = open_run_from_args(args, "captions import", folder_name="captions")
    bank = import_embedding_shards(files, captions, run.path, column=args.column, model=args.model_name)
    run.write_metrics({"captions": len(bank), "dim": bank.dim, "shards": len(files)})
    print(f"caption bank: {run.path} ({len(bank)} captions in {len(files)} shards, used in place)")
    return 0


def cmd_captions_index(args: argparse.Namespace) -> int:
    bank = open_bank(args.bank)
    entry = bank.build_faiss_index(args.kind, nprobe=args.nprobe, candidates=args.candidates)
    print(
        f"faiss {args.kind} index: recall@5 {entry['recall_at_5']:.3f}, "
        f"mean |p - p_exact| {entry['prob_abs_error']:.4f}, built in {entry['build_seconds']:.1f} s"
    )
    return 0


def _vl_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vl",
        default=None,
        help="VL model: tiny-clip (default; trained on demand), a checkpoint from `replens vl train`, "
        "an open_clip NAME:TAG (e.g. ViT-B-32:openai) or hf-hub:ORG/REPO (downloaded on first use)",
    )
    p.add_argument("--vl-weights", default=None, help="full CLIP checkpoint for an open_clip model name")
    p.add_argument("--cache-dir", default="runs/cache", help="cache of the default tiny CLIP and caption bank")
    p.add_argument("--device", default="cpu")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``replens explain`` and ``replens captions {build,import,index}``."""
    _add_explain(sub)
    c = sub.add_parser("captions", help="caption banks for FALCON: build, import LAION-style shards, faiss index")
    actions = c.add_subparsers(dest="captions_action", required=True, metavar="ACTION")
    _add_captions_build(actions)
    _add_captions_import(actions)
    _add_captions_index(actions)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="FALCON: explain features and feature groups in words",
        description="Explain the interpretable feature groups of an encoder's representation with "
        "concepts (FALCON, paper chapter 4); optionally explain mis-classifications and "
        "transfer concepts from another model's explain run.",
    )
    p.add_argument("--model", required=True, help="backbone name (replens list)")
    p.add_argument("--weights", default=None, help="weights file of the backbone")
    p.add_argument("--pretrained", action="store_true", help="the library's cached pretrained weights")
    p.add_argument("--data", required=True, help="probe data spec, e.g. world:DIR?split=test")
    p.add_argument("--image-size", type=positive_int, default=None, help="resize + center-crop images to this side")
    p.add_argument("--captions", default=None,
                   help="caption bank folder, or laion400m:I[,J] (LAION-400M shards, downloaded on first use; "
                        "use with --vl ViT-B-32:openai) (default: the world grammar bank)")
    _vl_options(p)
    _falcon_options(p)
    _failure_options(p)
    _transfer_options(p)
    add_common_options(p)
    p.set_defaults(handler=cmd_explain)


def _falcon_options(p: argparse.ArgumentParser) -> None:
    """FALCON's thresholds and limits: which features or groups are explained, and with which concepts."""
    p.add_argument(
        "--mode",
        choices=("groups", "features"),
        default="groups",
        help="feature groups of Algorithm 1 (default) or single features",
    )
    p.add_argument("--alpha-std", type=float, default=None,
                   help="alpha = mean(H) + ALPHA_STD * std(H) (default 16 for --mode features, appendix B.3; "
                        "5 for groups, the authors' code)")
    p.add_argument("--min-samples", type=non_negative_int, default=10, help="groups need more samples than this (default 10)")
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="interpretability threshold (default 0.8, the authors' value for CLIP; 0.5 with the tiny CLIP)",
    )
    p.add_argument("--beta", type=float, default=0.7,
                   help="lowly activating score threshold of Eq. 4.2 (default the paper's 0.7; the authors' code 0.3)")
    p.add_argument("--epsilon", default="feature",
                   help="lowly activating bound of Eq. 4.2: feature (each feature's mean, the paper's text; default), "
                        "global (the authors' code) or a number")
    p.add_argument("--min-score", type=float, default=0.08,
                   help="lowest reported Word Score (default the paper's 0.08, section 4.2.2; 0: the authors' code)")
    p.add_argument("--layer", default=None, help="stage whose blocks Grad-CAM hooks (default: the last)")
    p.add_argument("--cam-threshold", type=float, default=0.6,
                   help="Grad-CAM binarisation threshold of the crops (default 0.6, the authors' code)")
    p.add_argument("--max-groups", type=positive_int, default=None, help="examine at most this many groups")
    p.add_argument("--max-images", type=positive_int, default=None, help="highly activating images per group (default all)")
    p.add_argument("--explain-all", action="store_true", help="also extract concepts of non-interpretable groups")
    p.add_argument("--discard", default=None, help="extra comma-separated discard words")
    p.add_argument("--batch-size", type=positive_int, default=64)


def _failure_options(p: argparse.ArgumentParser) -> None:
    """``--failures`` (section 4.5) and its options."""
    p.add_argument("--failures", action="store_true", help="explain mis-classified probe samples (section 4.5)")
    p.add_argument("--train-data", default=None, help="data spec to fit the linear probe for --failures")
    p.add_argument("--failure-data", default=None,
                   help="data spec whose mis-classified samples --failures explains (default: --data, the probe "
                        "set the groups come from)")
    p.add_argument("--top-features", type=positive_int, default=1, help="most contributing features per failure (default 1)")
    p.add_argument("--max-failures", type=positive_int, default=200, help="failures explained at most (default 200)")


def _transfer_options(p: argparse.ArgumentParser) -> None:
    """``--transfer-from`` (section 4.6) and its options."""
    p.add_argument(
        "--transfer-from",
        default=None,
        metavar="RUN",
        help="an explain run of another model on the same --data: transfer its concepts (section 4.6)",
    )
    p.add_argument(
        "--transfer-method", choices=("lstsq", "sgd"), default="lstsq", help="how Z is fitted (default lstsq)"
    )
    p.add_argument("--transfer-std", type=float, default=4.0, help="map weights above mean + N std (default 4)")


def _add_captions_build(actions: argparse._SubParsersAction) -> None:
    b = actions.add_parser("build", help="encode captions (text/parquet file, or the world grammar) into a bank")
    b.add_argument("--from", dest="source", default=None, help="captions: .txt (one per line) or .parquet")
    b.add_argument("--world", action="store_true", help="the world's caption grammar with distractors")
    b.add_argument("--column", default="caption", help="parquet column (default caption)")
    b.add_argument("--shard-size", type=positive_int, default=100_000, help="captions per shard (default 100000)")
    b.add_argument("--faiss", choices=("ivf", "hnsw", "flat"), default=None, help="also build a faiss index")
    b.add_argument("--nprobe", type=positive_int, default=8, help="IVF lists visited per query (default 8)")
    _vl_options(b)
    add_common_options(b, "bank folder (default: runs/captions-<time>)")
    b.set_defaults(handler=cmd_captions_build)


def _add_captions_import(actions: argparse._SubParsersAction) -> None:
    i = actions.add_parser("import", help="use precomputed text-embedding .npy shards (LAION style) as a bank")
    i.add_argument("--embeddings", nargs="+", required=True, help="npy files or globs, e.g. 'emb/text_emb_*.npy'")
    i.add_argument(
        "--captions",
        nargs="+",
        required=True,
        help="one .txt for all shards, or one .parquet/.txt per shard (in shard order)",
    )
    i.add_argument("--column", default="caption", help="parquet column (default caption)")
    i.add_argument("--model-name", default=None, help="VL model of the embeddings, e.g. open_clip:ViT-B-32:openai")
    add_common_options(i, "bank folder (default: runs/captions-<time>)")
    i.set_defaults(handler=cmd_captions_import)


def _add_captions_index(actions: argparse._SubParsersAction) -> None:
    x = actions.add_parser("index", help="build an approximate faiss index for a bank and measure its recall")
    x.add_argument("bank", help="bank folder")
    x.add_argument("--kind", choices=("ivf", "hnsw", "flat"), default="ivf")
    x.add_argument("--nprobe", type=positive_int, default=8)
    x.add_argument("--candidates", type=positive_int, default=64, help="neighbours retrieved per query (default 64)")
    add_common_options(x)
    x.set_defaults(handler=cmd_captions_index)
