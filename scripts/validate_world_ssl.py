"""Validation: `replens train` on the embedded world with its defaults, against a random encoder.

Usage:
    python scripts/validate_world_ssl.py [--n 6000] [--size 32] [--out runs/validate-world-ssl]
        [--set KEY=VALUE ...]

Generates (or reuses, under ``runs/cache``) the world the audit uses, runs
exactly what a user runs, ``replens train --data world:DIR`` (the world preset:
SimCLR, small_cnn, 32 px, 20 epochs), and prints the final linear-probe and kNN
top-1 of the trained encoder beside a randomly initialised encoder of the same
architecture (both from the run's ``metrics.json``), overall and per domain,
with the wall time. ``--set`` passes training overrides (e.g. ``--set
epochs=30``). A rerun into the same ``--out`` resumes the training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from replens.cli import main as replens_main
from replens.world import GENERATOR_VERSION, WorldConfig, cached_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6000, help="scenes in the world (train + test)")
    ap.add_argument("--size", type=int, default=32, help="image side of the world")
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    ap.add_argument("--out", type=Path, default=Path("runs/validate-world-ssl"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    world = cached_world(WorldConfig(n=args.n, size=args.size), args.cache_dir)
    argv = ["train", "--data", f"world:{world}", "--out", str(args.out), "--quiet"]
    if (args.out / "checkpoint.pt").exists():
        argv.append("--resume")
    for item in args.overrides:
        argv += ["--set", item]
    start = time.perf_counter()
    code = replens_main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"replens train failed with exit code {code}")
    metrics = json.loads((args.out / "metrics.json").read_text())
    steps = json.loads((args.out / "train_summary.json").read_text())["steps"]
    print(f"world n={args.n} size={args.size} (generator {GENERATOR_VERSION}); {steps} steps in {seconds:.0f} s")
    print(f"{'encoder':<12} {'linear':>7} {'kNN':>7}   linear per domain")
    for name in ("random_init", "trained"):
        linear, knn = metrics[name]["linear"], metrics[name]["knn"]
        domains = "  ".join(f"{d} {v:.1f}" for d, v in linear["per_domain"].items())
        print(f"{name:<12} {linear['top1']:7.2f} {knn['top1']:7.2f}   {domains}")
    gain = metrics["trained"]["linear"]["top1"] / max(metrics["random_init"]["linear"]["top1"], 1e-9)
    print(f"trained / random linear top-1: {gain:.2f}x")


if __name__ == "__main__":
    main()
