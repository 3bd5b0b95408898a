"""Time the generation of an embedded world (target: 20,000 scenes of 64 px in < 30 s).

Usage::

    python benchmarks/world_generation.py --n 20000 --size 64 [--out DIR] [--workers N]

Generates into a fresh directory (a temporary one unless ``--out`` is given;
an existing world there is regenerated), then prints scenes/s, the elapsed
seconds and whether the target is met.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from replens.world import DOMAINS, WorldConfig, generate_world

TARGET_SECONDS = 30.0
TARGET_SCENES = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=TARGET_SCENES, help="scenes over both splits")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temp dir)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: automatic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-domains", action="store_true", help="use all six domains, tints included")
    parser.add_argument("--progress", action="store_true", help="show the progress bar")
    args = parser.parse_args(argv)

    domains = DOMAINS if args.all_domains else WorldConfig().domains
    config = WorldConfig(n=args.n, size=args.size, seed=args.seed, domains=domains, spurious=0.5)
    tmp = None if args.out is not None else tempfile.mkdtemp(prefix="world-bench-")
    out = args.out if args.out is not None else Path(tmp) / "world"
    try:
        start = time.perf_counter()
        cpu_start = time.process_time()
        generate_world(config, out, progress=args.progress, workers=args.workers, overwrite=True)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        # Scale the target to the requested work (pixels) so other sizes are judged fairly.
        budget = TARGET_SECONDS * (args.n / TARGET_SCENES) * (args.size / 64) ** 2
        print(f"world: {args.n} scenes of {args.size}x{args.size} px, domains={list(domains)}")
        print(f"cores: {os.cpu_count()}, workers: {args.workers or 'auto'}")
        print(f"elapsed: {elapsed:.2f} s  ({args.n / elapsed:,.0f} scenes/s; main-process CPU {cpu:.2f} s)")
        print(f"on disk: {size_mb:.1f} MiB in {out}")
        verdict = "MET" if elapsed < budget else "MISSED"
        print(f"target: < {budget:.1f} s for this size -> {verdict}")
        return 0 if elapsed < budget else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
