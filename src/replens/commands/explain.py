"""``replens explain`` (FALCON) and ``replens captions`` (caption banks).

::

    replens explain --model M [--weights W] --data D [--vl MODEL] [--captions BANK]
                    [--failures [--train-data D2]] [--transfer-from RUN]
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
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from replens.commands import add_common_options, args_as_config, run_dir_from_args

#: Interpretability threshold used with the embedded tiny CLIP (scripts/validate_falcon.py: its crops' mean
#: similarities spread over 0.2-0.75 where CLIP ViT-B/32's sit near the authors' 0.8).
TINY_CLIP_GAMMA = 0.5


def _vl(args: argparse.Namespace) -> Any:
    from replens.vl import load_vl_model

    return load_vl_model(
        args.vl, weights=args.vl_weights, device=args.device, cache_dir=args.cache_dir, progress=not args.quiet
    )


def _failures(args: argparse.Namespace, falcon: Any, result: Any, source: Any, backbone: Any) -> tuple[list, dict]:
    from replens.data import open_source
    from replens.evaluate import fit_linear_probe
    from replens.explain import (
        compute_representations,
        explain_failures,
        failure_spurious_report,
        linear_head_from_probe,
        normalize_rows,
    )

    labels = np.asarray(source.labels)[falcon.index]
    if args.train_data:
        train = open_source(args.train_data, image_size=args.image_size)
        raw, index, _ = compute_representations(backbone, train, device=args.device, progress=not args.quiet)
        probe = fit_linear_probe(normalize_rows(raw), np.asarray(train.labels)[index])
        weight, bias = linear_head_from_probe(probe)
        features = falcon.features.astype(np.float64)
        head = f"linear probe fitted on {args.train_data} (L2-normalised representations)"
    elif getattr(backbone, "classifier", None) is not None and hasattr(backbone.classifier, "weight"):
        weight = backbone.classifier.weight.detach().cpu().double().numpy()
        bias = backbone.classifier.bias.detach().cpu().double().numpy()
        features = falcon.raw.astype(np.float64)
        head = f"the model's classifier ({backbone.classifier_name})"
    else:
        raise ValueError(
            "--failures needs a linear head: pass --train-data SPEC (a probe is fitted) or a model with a classifier"
        )
    predictions = (features @ weight.T + bias).argmax(1)
    failures = explain_failures(
        features,
        weight,
        predictions,
        labels,
        result.groups,
        names=falcon.names,
        top_features=args.top_features,
        explain_feature=lambda f: falcon.explain_group(f),
        max_samples=args.max_failures,
    )
    valid = labels >= 0
    metrics: dict[str, Any] = {
        "head": head,
        "accuracy": float(100 * (predictions[valid] == labels[valid]).mean()) if valid.any() else float("nan"),
        "misclassified": int(((predictions != labels) & valid).sum()),
        "explained": len(failures),
        "with_concepts": sum(1 for f in failures if f.words),
    }
    spurious = failure_spurious_report(failures, source)
    if spurious is not None:
        metrics["spurious"] = spurious
    return failures, metrics


def _transfer(args: argparse.Namespace, falcon: Any, run: Any) -> tuple[list, dict]:
    from replens.explain import GroupExplanation, learn_transfer, normalize_rows, transfer_concepts

    src = Path(args.transfer_from)
    for name in ("representations.npy", "rows.json", "concepts.json"):
        if not (src / name).is_file():
            raise FileNotFoundError(
                f"--transfer-from {src}: missing {name} (pass the run folder of a `replens explain`)"
            )
    source_h = normalize_rows(np.load(src / "representations.npy"))
    rows = json.loads((src / "rows.json").read_text())
    if list(rows["names"]) != list(falcon.names):
        raise ValueError(f"--transfer-from {src} explained another probe set: its sample names differ from --data's")
    row_of = {name: k for k, name in enumerate(rows["names"])}
    groups = [GroupExplanation.from_dict(g, row_of) for g in json.loads((src / "concepts.json").read_text())["groups"]]
    z = learn_transfer(falcon.features, source_h, method=args.transfer_method, seed=args.seed)
    transfers = transfer_concepts(
        z,
        groups,
        falcon.features,
        falcon.alpha,
        std_multiplier=args.transfer_std,
        image_terms=lambda r, feats: falcon.caption_terms(r, feats),
        min_samples=falcon.config.min_samples,
        seed=args.seed,
    )
    carry = [t.carry for t in transfers if t.carry == t.carry]
    rand = [t.carry_random for t in transfers if t.carry_random == t.carry_random]
    metrics = {
        "source_run": str(src),
        "source_groups_with_concepts": sum(1 for g in groups if g.words),
        "mapped_groups": len(transfers),
        "carry_rate": float(np.mean(carry)) if carry else float("nan"),
        "carry_rate_random_features": float(np.mean(rand)) if rand else float("nan"),
        "fit_mse": float(((falcon.features @ z - source_h) ** 2).mean()),
    }
    from replens.runs import atomic_write_json

    atomic_write_json(run / "transfer.json", {**metrics, "groups": [t.to_dict(falcon.names) for t in transfers]})
    return transfers, metrics


def cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from replens.data import open_source
    from replens.explain import (
        Falcon,
        FalconConfig,
        contrastive_filter_report,
        default_world_bank,
        open_bank,
        precision_recall_at_k,
        source_concepts,
        write_failures,
        write_falcon_outputs,
        write_html_report,
    )
    from replens.models import create_backbone
    from replens.runs import atomic_write, atomic_write_json
    from replens.vl import TINY_CLIP_NAME

    torch.manual_seed(args.seed)
    run = run_dir_from_args(args, "explain")
    run.write_config({"command": "explain", **args_as_config(args)})
    t0 = time.perf_counter()
    source = open_source(args.data, image_size=args.image_size)
    backbone = create_backbone(args.model, weights=args.weights, pretrained=args.pretrained).eval()
    vl = _vl(args)
    bank = (
        open_bank(args.captions) if args.captions else default_world_bank(vl, args.cache_dir, progress=not args.quiet)
    )
    if args.gamma is None:  # 0.8 is calibrated for CLIP ViT-B/32; the tiny CLIP's crop similarities run lower
        args.gamma = TINY_CLIP_GAMMA if vl.name == TINY_CLIP_NAME else 0.8
    config = FalconConfig(
        alpha_multiplier=args.alpha_std,
        min_samples=args.min_samples,
        mode=args.mode,
        gamma=args.gamma,
        beta=args.beta,
        max_groups=args.max_groups,
        max_images=args.max_images,
        explain_all=args.explain_all,
        gradcam_layer=args.layer,
        discard_words=[w for w in (args.discard or "").split(",") if w],
        batch_size=args.batch_size,
    )
    falcon = Falcon(backbone, source, vl, bank, config, device=args.device, progress=not args.quiet)
    result = falcon.run()

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, falcon.raw)

    atomic_write(run / "representations.npy", save_npy)
    atomic_write_json(run / "rows.json", {"data": args.data, "names": falcon.names, "index": falcon.index})
    metrics: dict[str, Any] = {
        "falcon": result.summary(),
        "vl": vl.name,
        "bank": str(bank.root),
        "bank_captions": len(bank),
        "gamma": config.gamma,
    }
    truth = source_concepts(source)
    if truth is not None:
        concepts = [truth[int(i)] for i in falcon.index]
        explained = result.explained
        metrics["ground_truth"] = {
            "top_k": precision_recall_at_k(explained, concepts),
            "contrastive_filter": contrastive_filter_report(explained, concepts),
        }
    failures: list = []
    if args.failures:
        failures, metrics["failures"] = _failures(args, falcon, result, source, backbone)
        write_failures(run / "failures.json", failures, list(source.classes), {"head": metrics["failures"]["head"]})
    transfers: list = []
    if args.transfer_from:
        transfers, metrics["transfer"] = _transfer(args, falcon, run)
    write_falcon_outputs(run.path, result, {"model": args.model, "data": args.data, "vl": vl.name})
    write_html_report(
        run.path,
        result,
        falcon.images,
        title=f"FALCON: {args.model} on {args.data}",
        summary={"model": args.model, "vl model": vl.name, "caption bank": str(bank.root)},
        failures=failures,
        classes=list(source.classes),
        transfers=transfers,
    )
    metrics["seconds"] = time.perf_counter() - t0
    run.write_metrics(metrics)
    s = result.summary()
    print(
        f"FALCON: {s['interpretable_groups']} interpretable of {s['candidate_groups']} feature groups "
        f"(alpha {s['alpha']:.4f}); {s['features_in_interpretable_groups']}/{s['feature_dim']} features explained"
    )
    for g in result.explained[:10]:
        print(f"  group {g.name} ({len(g.highly)} images): {', '.join(g.concepts(5)) or '-'}")
    if "ground_truth" in metrics:
        pk = metrics["ground_truth"]["top_k"]["precision"]
        print(f"ground truth: precision@1 {pk[1]:.1f}%, precision@6 {pk[6]:.1f}%")
    if failures:
        print(f"failures: {len(failures)} explained (accuracy {metrics['failures']['accuracy']:.2f}%)")
    print(f"report: {run / 'report.html'}")
    return 0


# ----------------------------------------------------------------------------- captions
def cmd_captions_build(args: argparse.Namespace) -> int:
    from replens.explain import build_bank, read_caption_file, world_caption_texts

    if bool(args.source) == bool(args.world):
        raise ValueError("pass exactly one of --from FILE or --world")
    run = run_dir_from_args(args, "captions")
    run.write_config({"command": "captions build", **args_as_config(args)})
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
    from replens.explain import import_embedding_shards

    files = sorted(p for pattern in args.embeddings for p in glob.glob(pattern)) or list(args.embeddings)
    captions: Any = args.captions[0] if len(args.captions) == 1 else args.captions
    run = run_dir_from_args(args, "captions")
    run.write_config({"command": "captions import", **args_as_config(args)})
    bank = import_embedding_shards(files, captions, run.path, column=args.column, model=args.model_name)
    run.write_metrics({"captions": len(bank), "dim": bank.dim, "shards": len(files)})
    print(f"caption bank: {run.path} ({len(bank)} captions in {len(files)} shards, used in place)")
    return 0


def cmd_captions_index(args: argparse.Namespace) -> int:
    from replens.explain import open_bank

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
        "or an open_clip NAME:TAG from the local cache",
    )
    p.add_argument("--vl-weights", default=None, help="full CLIP checkpoint for an open_clip model name")
    p.add_argument("--cache-dir", default="runs/cache", help="cache of the default tiny CLIP and caption bank")
    p.add_argument("--device", default="cpu")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``replens explain`` and ``replens captions {build,import,index}``."""
    p = sub.add_parser(
        "explain",
        help="FALCON: explain features and feature groups in words",
        description="Explain the interpretable feature groups of an encoder's representation with "
        "concepts (FALCON, seed chapter 4); optionally explain mis-classifications and "
        "transfer concepts from another model's explain run.",
    )
    p.add_argument("--model", required=True, help="backbone name (replens list)")
    p.add_argument("--weights", default=None, help="weights file of the backbone")
    p.add_argument("--pretrained", action="store_true", help="the library's cached pretrained weights")
    p.add_argument("--data", required=True, help="probe data spec, e.g. world:DIR?split=test")
    p.add_argument("--image-size", type=int, default=None, help="resize + center-crop images to this side")
    p.add_argument("--captions", default=None, help="caption bank folder (default: the world grammar bank)")
    _vl_options(p)
    p.add_argument(
        "--mode",
        choices=("groups", "features"),
        default="groups",
        help="feature groups of Algorithm 1 (default) or single features",
    )
    p.add_argument("--alpha-std", type=float, default=5.0, help="alpha = mean(H) + ALPHA_STD * std(H) (default 5)")
    p.add_argument("--min-samples", type=int, default=10, help="groups need more samples than this (default 10)")
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="interpretability threshold (default 0.8, the authors' value for CLIP; 0.5 with the tiny CLIP)",
    )
    p.add_argument("--beta", type=float, default=0.3, help="lowly activating score threshold (default 0.3)")
    p.add_argument("--layer", default=None, help="stage whose blocks Grad-CAM hooks (default: the last)")
    p.add_argument("--max-groups", type=int, default=None, help="examine at most this many groups")
    p.add_argument("--max-images", type=int, default=None, help="highly activating images per group (default all)")
    p.add_argument("--explain-all", action="store_true", help="also extract concepts of non-interpretable groups")
    p.add_argument("--discard", default=None, help="extra comma-separated discard words")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--failures", action="store_true", help="explain mis-classified probe samples (section 4.5)")
    p.add_argument("--train-data", default=None, help="data spec to fit the linear probe for --failures")
    p.add_argument("--top-features", type=int, default=1, help="most contributing features per failure (default 1)")
    p.add_argument("--max-failures", type=int, default=200, help="failures explained at most (default 200)")
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
    add_common_options(p)
    p.set_defaults(handler=cmd_explain)

    c = sub.add_parser("captions", help="caption banks for FALCON: build, import LAION-style shards, faiss index")
    actions = c.add_subparsers(dest="captions_action", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="encode captions (text/parquet file, or the world grammar) into a bank")
    b.add_argument("--from", dest="source", default=None, help="captions: .txt (one per line) or .parquet")
    b.add_argument("--world", action="store_true", help="the world's caption grammar with distractors")
    b.add_argument("--column", default="caption", help="parquet column (default caption)")
    b.add_argument("--shard-size", type=int, default=100_000, help="captions per shard (default 100000)")
    b.add_argument("--faiss", choices=("ivf", "hnsw", "flat"), default=None, help="also build a faiss index")
    b.add_argument("--nprobe", type=int, default=8, help="IVF lists visited per query (default 8)")
    _vl_options(b)
    add_common_options(b, "bank folder (default: runs/captions-<time>)")
    b.set_defaults(handler=cmd_captions_build)

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

    x = actions.add_parser("index", help="build an approximate faiss index for a bank and measure its recall")
    x.add_argument("bank", help="bank folder")
    x.add_argument("--kind", choices=("ivf", "hnsw", "flat"), default="ivf")
    x.add_argument("--nprobe", type=int, default=8)
    x.add_argument("--candidates", type=int, default=64, help="neighbours retrieved per query (default 64)")
    add_common_options(x)
    x.set_defaults(handler=cmd_captions_index)
