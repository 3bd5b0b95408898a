"""``replens tokens``: the Visual Token Encoder of paper chapter 6.

Sub-actions::

    replens tokens extract --data world:DIR?split=train --out runs/tok-train       # (a) world ground truth
    replens tokens extract --extractor maskrcnn --data folder:DIR --captions caps.json --out runs/tok
    replens tokens extract --extractor scene-graph --scene-graphs vg.json --images DIR --out runs/tok-vg
    replens tokens train --tokens runs/tok-train --val-tokens runs/tok-test --encoder tokens --out runs/tok-run
    replens tokens eval --model runs/tok-run --tokens runs/tok-test --compositional 200 --out runs/tok-eval
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from replens.apps.commands import add_common_options, non_negative_int, open_run_from_args, positive_int
from replens.evaluate.compositional import (
    evaluate_choice_items,
    evaluate_winoground_items,
    load_aro_order,
    load_aro_vg,
    load_sugarcrepe,
    load_winoground,
)
from replens.tokens import (
    ExtractConfig,
    PairData,
    TokenDataset,
    TokenTrainConfig,
    compositional_metrics,
    extract_tokens,
    image_embedder,
    load_token_model,
    maskrcnn_tokenizer_from_cache,
    retrieval_metrics,
    text_embedder,
    tokenizer_from_cache,
    train_token_model,
    world_compositional_sets,
)
from replens.tokens.encoder import PRESETS
from replens.tokens.model import ENCODERS
from replens.tokens.pipeline import EXTRACTORS
from replens.vl import load_vl_model


def cmd_tokens_extract(args: argparse.Namespace) -> int:
    config = ExtractConfig(
        extractor=args.extractor,
        data=args.data,
        backbone=args.backbone,
        backbone_weights=args.backbone_weights,
        layers=args.layers.split(",") if args.layers else None,
        vl=args.vl,
        maskrcnn_weights=args.maskrcnn_weights,
        score_threshold=args.score_threshold,
        max_objects=args.max_objects,
        scene_graphs=args.scene_graphs,
        graph_format=args.format,
        images=args.images,
        captions=args.captions,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        limit=args.limit,
        seed=args.seed,
        device=args.device,
    )
    run = open_run_from_args(args, "tokens extract")
    t0 = time.perf_counter()
    extract_tokens(config, run.path, progress=not args.quiet, resume=not args.no_resume)
    elapsed = time.perf_counter() - t0
    data = TokenDataset(run.path)
    lengths = [s.length for s in data.samples]
    metrics: dict[str, Any] = {
        "images": len(data),
        "seconds": elapsed,
        "dims": data.dims,
        "mean_objects": sum(s.n_objects for s in data.samples) / max(len(data), 1),
        "mean_relations": sum(s.n_relations for s in data.samples) / max(len(data), 1),
        "max_tokens": max(lengths, default=0),
        "images_with_captions": sum(1 for c in data.captions if c),
    }
    run.write_metrics(metrics)
    print(f"tokens: {run.path} ({len(data)} images, {metrics['mean_objects']:.1f} objects and "
          f"{metrics['mean_relations']:.1f} relations per image, at most {metrics['max_tokens']} tokens)")
    return 0


def cmd_tokens_train(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    train = PairData(TokenDataset(args.tokens))
    val = PairData(TokenDataset(args.val_tokens)) if args.val_tokens else None
    vl_spec = args.vl if args.vl is not None else train.tokens.meta.get("vl", {}).get("spec")
    config = TokenTrainConfig(
        encoder=args.encoder,
        preset=args.preset,
        width=args.width,
        layers=args.layers,
        heads=args.heads,
        dropout=args.dropout,
        pool=args.pool,
        box_embedding=not args.no_box_embedding,
        patch_size=args.patch_size,
        image_size=args.image_size,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        text_lr=args.text_lr,
        weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=args.device,
    )
    run = open_run_from_args(args, "tokens train", folder_name=f"tokens-train-{args.encoder}")
    vl = load_vl_model(vl_spec, device=args.device, progress=not args.quiet)
    result = train_token_model(
        config, train, vl, run.path, val_data=val, vl_spec=vl_spec, resume=args.resume, progress=not args.quiet,
        extra_meta={"train_tokens": str(Path(args.tokens).resolve())},
    )
    result.pop("model")
    run.write_metrics(result)
    line = f"trained {args.encoder}: {result['steps']} steps, final loss {result['final_loss']:.3f}, " \
           f"{result['samples_per_s']:.0f} samples/s"
    if result["eval"]:
        line += f"; held-out R@1 t2i {result['eval']['t2i_r1']:.1f} i2t {result['eval']['i2t_r1']:.1f}"
    print(line)
    print(f"model: {result['model_path']}")
    return 0


def _real_benchmarks(args: argparse.Namespace, model: Any, meta: dict[str, Any], vl: Any) -> dict[str, Any]:
    wanted = [args.aro_relation, args.aro_attribution, args.aro_order, args.winoground, args.sugarcrepe]
    if not any(wanted):
        return {}
    tokenizer = None
    if model.uses_tokens:
        cache = args.tokenizer_tokens or meta.get("train_tokens")
        tokenizer = maskrcnn_tokenizer_from_cache(cache, vl=vl, device=args.device)
    embed_images, embed_texts = image_embedder(model, tokenizer), text_embedder(model)
    out: dict[str, Any] = {}
    limit = args.limit

    def choice(name: str, items: list[Any]) -> None:
        res = evaluate_choice_items(items[:limit] if limit else items, embed_images, embed_texts)
        out[name] = {"accuracy": res["accuracy"], "n": res["n"]}
        print(f"  {name}: {res['accuracy']:.2f}% ({res['n']} items)")

    if args.aro_relation:
        choice("vg_relation", load_aro_vg(args.aro_relation, args.aro_images))
    if args.aro_attribution:
        choice("vg_attribution", load_aro_vg(args.aro_attribution, args.aro_images))
    if args.aro_order:
        choice("order", load_aro_order(args.aro_order, args.order_images, limit=limit))
    if args.sugarcrepe:
        for path in sorted(Path(args.sugarcrepe).glob("*.json")):
            choice(f"sugarcrepe/{path.stem}", load_sugarcrepe(path, args.coco_images))
    if args.winoground:
        items = load_winoground(args.winoground)
        res = evaluate_winoground_items(items[:limit] if limit else items, embed_images, embed_texts)
        out["winoground"] = {k: res[k] for k in ("text", "image", "group", "n")}
        print(f"  winoground: text {res['text']:.2f} image {res['image']:.2f} group {res['group']:.2f}")
    return out


def cmd_tokens_eval(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_token_model(args.model, device=args.device)
    run = open_run_from_args(args, "tokens eval")
    metrics: dict[str, Any] = {"model": str(args.model), "encoder": model.kind}
    print(f"model: {args.model} ({model.kind})")
    test = PairData(TokenDataset(args.tokens)) if args.tokens else None
    if test is not None:
        caption = None if args.caption_index < 0 else args.caption_index
        metrics["retrieval"] = retrieval_metrics(model, test, caption_index=caption, max_items=args.limit)
        r = metrics["retrieval"]
        print(f"  retrieval ({int(r['n_images'])} images): t2i R@1/5/10 {r['t2i_r1']:.1f}/{r['t2i_r5']:.1f}/"
              f"{r['t2i_r10']:.1f}, i2t {r['i2t_r1']:.1f}/{r['i2t_r5']:.1f}/{r['i2t_r10']:.1f}")
    if args.compositional:
        size = args.size
        if size is None and test is not None and test.tokens.meta.get("extractor") == "world":
            size = int(test.source.config.size)
        tokenizer = None
        if model.uses_tokens:
            tokenizer = tokenizer_from_cache(args.tokenizer_tokens or meta.get("train_tokens"), vl=model.vl,
                                             device=args.device)
        sets = world_compositional_sets(args.compositional, size=size or 64, seed=args.seed)
        comp = compositional_metrics(model, sets, tokenizer)
        metrics["compositional"] = comp
        print(f"  world ARO-like: relation {comp['relation_swap']:.1f}, attribution {comp['attribute_swap']:.1f}, "
              f"order {comp['word_order']:.1f}; Winoground-like text {comp['groups']['text']:.1f} "
              f"image {comp['groups']['image']:.1f} group {comp['groups']['group']:.1f}")
    real = _real_benchmarks(args, model, meta, model.vl)
    if real:
        metrics["benchmarks"] = real
    run.write_metrics(metrics)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``replens tokens {extract,train,eval}``."""
    p = sub.add_parser("tokens",
                       help="Visual Token Encoder: extract object/relation tokens, train CLIP-style, evaluate",
                       description="Paper chapter 6: visual tokens (objects, relations) with ranked additive "
                                   "attention, trained against a VL text tower; retrieval and compositionality.")
    actions = p.add_subparsers(dest="tokens_action", required=True, metavar="ACTION")
    _add_extract(actions)
    _add_train(actions)
    _add_eval(actions)


def _add_extract(actions: argparse._SubParsersAction) -> None:
    e = actions.add_parser("extract", help="extract visual tokens into a cache folder (--out)")
    e.add_argument("--extractor", choices=sorted(EXTRACTORS), default="world",
                   help="; ".join(f"{k}: {v}" for k, v in EXTRACTORS.items()))
    e.add_argument("--data", default=None, help="data spec (world and maskrcnn), e.g. world:DIR?split=train")
    e.add_argument("--backbone", default="small_cnn", help="backbone whose feature maps are mask pooled")
    e.add_argument("--backbone-weights", default=None, help="its weights (default: seeded random init)")
    e.add_argument("--layers", default=None, help="comma-separated backbone layers to pool (default: its stages)")
    e.add_argument("--vl", default=None, help="VL model for relation embeddings (default: the tiny CLIP)")
    e.add_argument("--maskrcnn-weights", default=None, help="Mask R-CNN weights (default: torch hub cache)")
    e.add_argument("--score-threshold", type=float, default=0.9, help="Mask R-CNN score threshold (0.9)")
    e.add_argument("--max-objects", type=positive_int, default=16, help="Mask R-CNN detections kept per image")
    e.add_argument("--scene-graphs", default=None, help="scene-graph JSON (scene-graph extractor)")
    e.add_argument("--format", choices=("vg", "psg"), default="vg", help="scene-graph format")
    e.add_argument("--images", default=None, help="image folder of the scene graphs")
    e.add_argument("--captions", default=None, help="JSON {image name: [captions]} for sources without captions")
    e.add_argument("--batch-size", type=positive_int, default=64)
    e.add_argument("--shard-size", type=positive_int, default=1024, help="images per cache shard")
    e.add_argument("--limit", type=positive_int, default=None, help="extract only the first N images")
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-resume", action="store_true", help="do not reuse shards of an interrupted extraction")
    add_common_options(e, out_help="token cache folder (default: runs/tokens-extract-<time>)")
    e.set_defaults(handler=cmd_tokens_extract)


def _add_train(actions: argparse._SubParsersAction) -> None:
    t = actions.add_parser("train", help="train an image side and the text tower with the CLIP loss")
    t.add_argument("--tokens", required=True, help="training token cache (also names the images)")
    t.add_argument("--val-tokens", default=None, help="held-out token cache for retrieval during training")
    t.add_argument("--encoder", choices=sorted(ENCODERS), default="tokens",
                   help="; ".join(f"{k}: {v}" for k, v in ENCODERS.items()))
    t.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="width/layers/heads: " + ", ".join(f"{k} {v}" for k, v in PRESETS.items()))
    t.add_argument("--width", type=positive_int, default=None)
    t.add_argument("--layers", type=positive_int, default=None)
    t.add_argument("--heads", type=positive_int, default=None)
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--pool", choices=("mean", "image"), default="mean", help="token encoder pooling")
    t.add_argument("--no-box-embedding", action="store_true", help="token encoder without box embeddings")
    t.add_argument("--patch-size", type=positive_int, default=4, help="ViT patch side")
    t.add_argument("--image-size", type=positive_int, default=None, help="ViT input side (default: the images')")
    t.add_argument("--steps", type=positive_int, default=1000)
    t.add_argument("--batch-size", type=positive_int, default=128)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--text-lr", type=float, default=None, help="text tower learning rate (default: --lr)")
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--warmup-fraction", type=float, default=0.1)
    t.add_argument("--eval-every", type=positive_int, default=100)
    t.add_argument("--checkpoint-every", type=non_negative_int, default=200)
    t.add_argument("--vl", default=None, help="VL model of the text tower (default: the cache's)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    add_common_options(t)
    t.set_defaults(handler=cmd_tokens_train)


def _add_eval(actions: argparse._SubParsersAction) -> None:
    v = actions.add_parser("eval", help="retrieval and compositional benchmarks of a trained model")
    v.add_argument("--model", required=True, help="a `tokens train` run folder or its model.safetensors")
    v.add_argument("--tokens", default=None, help="held-out token cache for retrieval")
    v.add_argument("--caption-index", type=int, default=0, help="query caption per image (-1: all captions)")
    v.add_argument("--compositional", type=non_negative_int, default=0, help="items per world compositional set (0: skip)")
    v.add_argument("--size", type=positive_int, default=None, help="image side of the world sets (default: the world's)")
    v.add_argument("--tokenizer-tokens", default=None,
                   help="token cache whose extractor tokenises new images (default: the training cache)")
    v.add_argument("--aro-relation", default=None, help="ARO visual_genome_relation.json")
    v.add_argument("--aro-attribution", default=None, help="ARO visual_genome_attribution.json")
    v.add_argument("--aro-images", default=None, help="ARO VG images folder (default: images/ beside the JSON)")
    v.add_argument("--aro-order", default=None, help="Karpathy-split JSON for COCO/Flickr-Order")
    v.add_argument("--order-images", default=None, help="image root of the Karpathy JSON")
    v.add_argument("--winoground", default=None,
                   help="Winoground folder (examples.jsonl with images/ or images.zip, or their data/ parent)")
    v.add_argument("--sugarcrepe", default=None, help="folder of SugarCrepe category JSONs")
    v.add_argument("--coco-images", default=None, help="COCO val2017 images (SugarCrepe)")
    v.add_argument("--limit", type=positive_int, default=None, help="items per benchmark / retrieval images")
    v.add_argument("--device", default="cpu")
    v.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's default)")
    add_common_options(v)
    v.set_defaults(handler=cmd_tokens_eval)
