"""``replens vl``: train the embedded tiny CLIP and measure zero-shot accuracy.

Sub-actions::

    replens vl train [--world DIR] [--steps 1500] [--out RUN]   # writes RUN/model.safetensors
    replens vl zeroshot [--vl MODEL] --data world:DIR?split=test
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from replens.apps.commands import add_common_options, args_as_config, open_run_from_args, positive_int
from replens.data import open_source
from replens.vl import (
    TinyClipConfig,
    TinyClipTrainConfig,
    default_world,
    load_vl_model,
    train_tiny_clip,
    world_attribute_accuracy,
    zero_shot_classify,
)


def _zero_shot(vl: Any, data: str, quiet: bool) -> dict[str, Any]:
    source = open_source(data)
    result = zero_shot_classify(vl, source, progress=not quiet)
    result.pop("predictions")
    if type(source).__name__ == "WorldDataset":  # what FALCON needs: naming attributes of crops
        result["crop_attributes"] = world_attribute_accuracy(vl, source)
    return result


def cmd_vl_train(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(args.seed)
    model_cfg = TinyClipConfig(image_size=args.image_size) if args.image_size else TinyClipConfig()
    cfg = TinyClipTrainConfig(model=model_cfg, seed=args.seed, world_n=args.world_n, world_size=args.world_size)
    cfg = replace(
        cfg,
        **{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None},
    )
    run = open_run_from_args(args, "vl train", {**args_as_config(args), "train_config": asdict(cfg)})
    world = Path(args.world) if args.world else default_world(cfg, args.cache_dir, progress=not args.quiet)
    t0 = time.perf_counter()
    vl, summary = train_tiny_clip(world, run / "model.safetensors", cfg, device=args.device, progress=not args.quiet)
    metrics: dict[str, Any] = {"training": summary, "world": str(world), "seconds": time.perf_counter() - t0}
    if not args.no_eval:
        metrics["zero_shot"] = _zero_shot(vl, f"world:{world}?split=test", args.quiet)
        zs = metrics["zero_shot"]
        print(f"zero-shot top-1 on the world's test split: {zs['top1']:.2f}% ({zs['samples']} images)")
        attrs = zs.get("crop_attributes", {})
        print("crop attributes: " + ", ".join(f"{k} {v:.1f}%" for k, v in attrs.items() if not k.endswith("crops")))
    run.write_metrics(metrics)
    print(
        f"tiny CLIP: {run / 'model.safetensors'} ({summary['steps']} steps, {summary['seconds']:.0f} s, "
        f"final loss {summary['final_loss']:.3f})"
    )
    return 0


def cmd_vl_zeroshot(args: argparse.Namespace) -> int:
    run = open_run_from_args(args, "vl zeroshot")
    vl = load_vl_model(
        args.vl, weights=args.vl_weights, device=args.device, cache_dir=args.cache_dir, progress=not args.quiet
    )
    result = _zero_shot(vl, args.data, args.quiet)
    run.write_metrics({"vl": vl.name, "data": args.data, **result})
    print(f"zero-shot top-1: {result['top1']:.2f}% on {result['samples']} images")
    for domain, acc in result["per_domain"].items():
        print(f"  {domain}: {acc:.2f}%")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``replens vl {train,zeroshot}``."""
    p = sub.add_parser(
        "vl",
        help="vision-language models: train the tiny CLIP, zero-shot accuracy",
        description="Train the embedded tiny CLIP on the world's captions, or measure zero-shot "
        "accuracy of a VL model with prompts from class names.",
    )
    actions = p.add_subparsers(dest="vl_action", required=True, metavar="ACTION")

    t = actions.add_parser("train", help="train the embedded tiny CLIP on a world's captions (CPU, minutes)")
    t.add_argument("--world", default=None, help="world folder (default: a cached world under --cache-dir)")
    t.add_argument("--world-n", type=positive_int, default=6000, help="scenes of the default world (default 6000)")
    t.add_argument("--world-size", type=positive_int, default=32, help="image side of the default world (default 32)")
    t.add_argument("--steps", type=positive_int, default=None, help="optimiser steps (default 1500)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="pairs per step (default 128)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    t.add_argument("--image-size", type=positive_int, default=None, help="input side of the image tower (default 32)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--cache-dir", default="runs/cache", help="where default worlds are cached")
    t.add_argument("--no-eval", action="store_true", help="skip the zero-shot evaluation")
    add_common_options(t)
    t.set_defaults(handler=cmd_vl_train)

    z = actions.add_parser("zeroshot", help="zero-shot classification accuracy (prompts from class names)")
    z.add_argument("--vl", default=None, help="VL model: tiny-clip (default), a checkpoint path, or open_clip NAME:TAG")
    z.add_argument("--vl-weights", default=None, help="full CLIP checkpoint for an open_clip model name")
    z.add_argument("--data", required=True, help="data spec, e.g. world:DIR?split=test")
    z.add_argument("--device", default="cpu")
    z.add_argument("--cache-dir", default="runs/cache", help="cache of the default tiny CLIP")
    add_common_options(z)
    z.set_defaults(handler=cmd_vl_zeroshot)
