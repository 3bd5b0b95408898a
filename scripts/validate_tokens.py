"""Validate the Visual Token Encoder against a matched ViT on the embedded world (paper chapter 6).

The paper reports, on COCO, +47% text-to-image retrieval over a ViT-s/16 trained
from scratch (54.35 vs about 37 R@1) and +18% on ARO (section 6.5). This
script runs the same comparison on the embedded world, where ground-truth
masks and relations stand in for SEEM and RAM (extractor (a)):

1. generate a world (paper 1, so that no image was seen by the default tiny
   CLIP, which is trained on the seed-0 world) and extract train/test tokens;
2. train each image side (default: the token encoder and the matched patch
   ViT; ``--encoders`` adds the ablation without additive attention and the
   fine-tuned VL image tower) against the VL model's text tower with the same
   trainer, steps, batch, width, depth and heads;
3. measure held-out text-to-image / image-to-text recall@1/5/10 (each image's
   relational caption as query), the world's ARO-like sets (relation swap,
   attribute swap, word order) and Winoground-like groups, plus the untouched
   VL model ("CLIP off the shelf" in the paper's tables);
4. print the table and the relative gains of the token encoder over the ViT.

    python scripts/validate_tokens.py --out runs/validate-tokens            # ~10 min on 2 idle CPU cores
    python scripts/validate_tokens.py --encoders tokens,tokens-no-attn,vit,vl-image --steps 2000

The default VL model is the embedded tiny CLIP, trained once on demand into
``--cache-dir`` (tens of minutes on a CPU, not counted above); ``--vl FILE``
uses any saved VL checkpoint instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch


def _row(name: str, r: dict[str, Any]) -> str:
    ret, comp = r["retrieval"], r["compositional"]
    g = comp["groups"]
    return (f"{name:<26} {ret['t2i_r1']:6.1f} {ret['t2i_r5']:6.1f} {ret['i2t_r1']:6.1f} {ret['i2t_r5']:6.1f} "
            f"{comp['relation_swap']:6.1f} {comp['attribute_swap']:6.1f} {comp['word_order']:6.1f} "
            f"{comp['aro_mean']:6.1f} {g['text']:6.1f} {g['image']:6.1f} {g['group']:6.1f}")


def _gain(a: float, b: float) -> str:
    return f"{(a - b) / b * 100:+.0f}%" if b > 0 else "n/a (baseline 0)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/validate-tokens"))
    parser.add_argument("--world-n", type=int, default=3000, help="scenes (80%% train, 20%% test)")
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--encoders", default="tokens,vit",
                        help="image sides to train (also: tokens-no-attn, vl-image)")
    parser.add_argument("--preset", default="cpu", help="architecture preset shared by all image sides")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--text-lr", type=float, default=1e-4, help="text tower learning rate (pretrained)")
    parser.add_argument("--patch-size", type=int, default=4, help="ViT patch side")
    parser.add_argument("--compositional", type=int, default=300, help="items per compositional set")
    parser.add_argument("--vl", default=None, help="VL model of the text tower (default: the tiny CLIP)")
    parser.add_argument("--cache-dir", default="runs/cache", help="where the default tiny CLIP is cached")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these models are small, and on a shared machine more "
                             "threads were up to 7x slower; 0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from replens.runs import atomic_write_json
    from replens.tokens import (
        ExtractConfig,
        PairData,
        TokenDataset,
        TokenTrainConfig,
        compositional_metrics,
        extract_tokens,
        retrieval_metrics,
        tokenizer_from_cache,
        train_token_model,
        world_compositional_sets,
    )
    from replens.tokens.model import DualEncoder
    from replens.vl import load_vl_model
    from replens.world import WorldConfig, generate_world

    t_start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    world = generate_world(WorldConfig(n=args.world_n, size=args.size, seed=1), out / "world", progress=False)
    vl = load_vl_model(args.vl, device=args.device, cache_dir=args.cache_dir)
    caches = {}
    for split in ("train", "test"):
        caches[split] = extract_tokens(ExtractConfig(data=f"world:{world}?split={split}", device=args.device),
                                       out / f"tokens-{split}", vl=vl, progress=False)
    train, test = PairData(TokenDataset(caches["train"])), PairData(TokenDataset(caches["test"]))
    tokenizer = tokenizer_from_cache(caches["train"], vl=vl, device=args.device)
    sets = world_compositional_sets(args.compositional, size=args.size, seed=0)
    print(f"world: {len(train)} train / {len(test)} test images of {args.size} px; "
          f"{sum(s.length for s in train.tokens.samples) / len(train):.1f} tokens per image on average; "
          f"setup {time.perf_counter() - t_start:.0f} s")

    results: dict[str, Any] = {}
    off_the_shelf = DualEncoder("vl-image", vl, None).eval()
    results["vl off the shelf"] = {
        "retrieval": retrieval_metrics(off_the_shelf, test, caption_index=0),
        "compositional": compositional_metrics(off_the_shelf, sets),
    }
    for encoder in args.encoders.split(","):
        config = TokenTrainConfig(
            encoder=encoder, preset=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            text_lr=args.text_lr, patch_size=args.patch_size, eval_every=max(1, args.steps // 5),
            checkpoint_every=0, seed=args.seed, device=args.device,
        )
        t0 = time.perf_counter()
        run = train_token_model(config, train, vl, out / f"run-{encoder}", val_data=test, vl_spec=args.vl,
                                progress=True)
        model = run["model"]
        results[encoder] = {
            "retrieval": retrieval_metrics(model, test, caption_index=0),
            "compositional": compositional_metrics(model, sets, tokenizer if model.uses_tokens else None),
            "train_seconds": time.perf_counter() - t0,
            "samples_per_s": run["samples_per_s"],
            "curve": [json.loads(ln) for ln in (out / f"run-{encoder}" / "metrics.jsonl").read_text().splitlines()
                      if "t2i_r1" in ln],
        }
        print(f"{encoder}: {results[encoder]['train_seconds']:.0f} s, {run['samples_per_s']:.0f} samples/s")

    header = (f"{'image side':<26} {'t2i@1':>6} {'t2i@5':>6} {'i2t@1':>6} {'i2t@5':>6} {'VG-R':>6} {'VG-A':>6} "
              f"{'Order':>6} {'ARO':>6} {'W-txt':>6} {'W-img':>6} {'W-grp':>6}")
    print("\n" + header)
    for name, r in results.items():
        print(_row(name, r))
    summary: dict[str, Any] = {"results": results, "args": {k: str(v) for k, v in vars(args).items()}}
    if "tokens" in results and "vit" in results:
        tok, vit = results["tokens"], results["vit"]
        gains = {
            "t2i_r1": _gain(tok["retrieval"]["t2i_r1"], vit["retrieval"]["t2i_r1"]),
            "i2t_r1": _gain(tok["retrieval"]["i2t_r1"], vit["retrieval"]["i2t_r1"]),
            "aro_mean": _gain(tok["compositional"]["aro_mean"], vit["compositional"]["aro_mean"]),
            "winoground_group": _gain(tok["compositional"]["groups"]["group"], vit["compositional"]["groups"]["group"]),
        }
        summary["token_vs_vit"] = gains
        print(f"\ntoken encoder vs ViT: text-to-image R@1 {gains['t2i_r1']} (seed, COCO: +47%), image-to-text R@1 "
              f"{gains['i2t_r1']} (seed: +44%), ARO mean {gains['aro_mean']} (seed: +18%), Winoground group "
              f"{gains['winoground_group']}")
    summary["seconds"] = time.perf_counter() - t_start
    atomic_write_json(out / "metrics.json", summary)
    print(f"total {summary['seconds']:.0f} s; metrics: {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
