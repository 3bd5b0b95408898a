"""Training throughput of the Visual Token Encoder vs a matched patch ViT, measured in one run.

The seed (section 6.5.1) trains its token encoder on 2 A5000s where the
ViT-s/16 and CLIP need 4 A6000s: tokens are few (objects and relations, at
most 77) and low-dimensional, patches are many. This script trains both
image sides with the same trainer (:func:`replens.tokens.train_token_model`),
the same text tower, batch size, width, depth and heads, on the same world
images, and prints training samples per second of each and their ratio.
Timing starts after ``--warmup`` steps and stops before the final checkpoint.

    python benchmarks/token_encoder_throughput.py                       # CPU, cpu preset, 32 px, patch 4
    python benchmarks/token_encoder_throughput.py --device cuda --preset paper --batch-size 256 \\
        --image-size 224 --patch-size 16                                # the paper's ViT-s/16 setting
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def measure_token_throughput(
    work: Path, *, device: str = "cpu", preset: str = "cpu", batch: int = 64, steps: int = 15, warmup: int = 5,
    world_n: int | None = None, image_size: int = 32, patch_size: int = 4,
) -> dict:
    """Train the token encoder and the matched ViT with the same trainer on ``device``; samples/s of each.

    Every step is a forward and backward pass of the image side and the text
    tower, so this is also the token encoder's device smoke test.

    Returns:
        ``tokens`` and ``vit`` (samples/s, image-side parameters, final loss), ``ratio``
        (tokens / vit), ``lengths`` (token sequence lengths), ``extract_images_per_s``.
    """
    from replens.tokens import ExtractConfig, PairData, TokenDataset, TokenTrainConfig, extract_tokens
    from replens.tokens.train import train_token_model
    from replens.vl import TinyClipConfig, build_tiny_clip
    from replens.world import WorldConfig, generate_world

    gpu = device.startswith("cuda")
    warmup = max(1, warmup)
    n = world_n or int(batch * 4 / 0.8) + 1
    world = generate_world(WorldConfig(n=n, size=image_size, seed=0), work / "world", progress=False)
    # throughput does not depend on the weights: a randomly initialised tiny CLIP text tower
    vl = build_tiny_clip(TinyClipConfig(image_size=image_size, patch_size=patch_size))
    t0 = time.perf_counter()
    cache = extract_tokens(ExtractConfig(data=f"world:{world}?split=train", device=device,
                                         batch_size=256), work / "tokens", vl=vl, progress=False, resume=False)
    extract_s = time.perf_counter() - t0
    data = PairData(TokenDataset(cache))
    lengths = [s.length for s in data.tokens.samples]
    results: dict = {}
    for encoder in ("tokens", "vit"):
        config = TokenTrainConfig(
            encoder=encoder, preset=preset, steps=warmup + steps, batch_size=batch, patch_size=patch_size,
            eval_every=0, log_every=1, checkpoint_every=0, device=device,
        )
        stamps: list[tuple[int, float]] = []

        def on_log(record: dict, stamps: list = stamps) -> None:
            if gpu:
                torch.cuda.synchronize()
            stamps.append((int(record["step"]), time.perf_counter()))

        out = train_token_model(config, data, vl, work / f"run-{encoder}", progress=False, on_log=on_log)
        (s0, t_start), (s1, t_end) = stamps[warmup - 1], stamps[-1]
        results[encoder] = {
            "samples_per_s": (s1 - s0) * batch / (t_end - t_start),
            "image_side_parameters": out["parameters"]["image_side"],
            "final_loss": out["final_loss"],
        }
    ratio = results["tokens"]["samples_per_s"] / results["vit"]["samples_per_s"]
    return {**results, "ratio": ratio, "lengths": lengths, "extract_images_per_s": len(lengths) / extract_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default=None, help="architecture preset (default: paper on GPU, cpu on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU (the seed's), 64 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on GPU, 15 on CPU)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--world-n", type=int, default=None, help="world scenes (default: 4 batches' worth)")
    parser.add_argument("--image-size", type=int, default=32, help="world image side")
    parser.add_argument("--patch-size", type=int, default=4, help="ViT patch side")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    preset = args.preset or ("paper" if gpu else "cpu")
    batch = args.batch_size or (256 if gpu else 64)
    steps = args.steps or (50 if gpu else 15)
    work = args.out or Path(tempfile.mkdtemp(prefix="token-bench-"))
    r = measure_token_throughput(work, device=args.device, preset=preset, batch=batch, steps=steps,
                                 warmup=args.warmup, world_n=args.world_n, image_size=args.image_size,
                                 patch_size=args.patch_size)
    lengths = r.pop("lengths")
    patches = (args.image_size // args.patch_size) ** 2 + 1
    device_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; preset {preset}; batch {batch}; {steps} timed steps after {max(1, args.warmup)}")
    print(f"token sequence: mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)} tokens "
          f"(image + objects + relations); ViT: {patches} tokens ({args.image_size} px, patch {args.patch_size})")
    print(f"token extraction (one-off, cached): {r['extract_images_per_s']:.0f} images/s")
    for encoder in ("tokens", "vit"):
        e = r[encoder]
        print(f"  {encoder:>6}: {e['samples_per_s']:9.1f} samples/s  ({e['image_side_parameters'] / 1e6:.2f} M "
              "image-side parameters)")
    print(f"token encoder / ViT training throughput: {r['ratio']:.2f}x")
    print(json.dumps({"device": device_name, "preset": preset, "batch_size": batch, **r}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
