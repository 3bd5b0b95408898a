"""Validate Fourier Domain Augmentations and the format transform (paper chapter 5) on real and world data.

For each dataset (the embedded world, generated here, and CIFAR-10 from
``DATA/cifar10``) it trains, with the same seed, backbone and number of steps:

* ``simclr``:          SimCLR, views (A_im(x), A_im(x))                   [seed ImageNet: 69.2]
* ``simclr+fda``:      SimCLR + FDA on the left view (Figure 5.1, Table C.2),
                       views (A_im(F^-1(A_freq(f))), A_im(x))             [70.5]
* ``simclr (x,x)``:    SimCLR on two raw views (no augmentation)          [1.5]
* ``dual (x,f)``:      the dual encoder of Figure 5.5 on (x, f)           [17.5]

and reports the linear-probe (and kNN) top-1 accuracy of each encoder's
representation, with a randomly initialised encoder as the floor. The seed's
numbers are 100-epoch ResNet-50 runs on ImageNet-1K; the default budget here
is a few minutes of CPU, so compare the ORDER of the rows, not their values.

Usage:
    python scripts/validate_fda.py /work/shared/data                 # ~10 min on a 2-core CPU
    python scripts/validate_fda.py /work/shared/data --steps 300 --datasets cifar10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.data import limit_source, open_source
from replens.engine import TrainConfig, train
from replens.evaluate import evaluate_representations
from replens.models import create_backbone, extract_features, load_embeddings
from replens.runs import RunDir, atomic_write_text, default_run_dir
from replens.world import WorldConfig, generate_world

#: name: (TrainConfig overrides, the paper's ImageNet linear top-1 for the same views)
RUNS: dict[str, tuple[dict[str, Any], float | None]] = {
    "simclr": ({"method": "simclr"}, 69.2),
    "simclr+fda": ({"method": "simclr", "plugins": ["fda"]}, 70.5),
    "simclr (x,x)": ({"method": "simclr", "plugins": ["fda"],
                      "plugin_args": {"fda": {"left_view": "raw", "right_view": "raw"}}}, 1.5),
    "dual (x,f)": ({"method": "dual_encoder"}, 17.5),
}


def sources(name: str, data: Path, out: Path, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(SSL training source, probe training source, probe test source) of a dataset."""
    if name == "world":
        world = Path(args.world) if args.world else generate_world(
            WorldConfig(n=args.world_n, size=32, seed=args.seed), out / "world", progress=not args.quiet)
        train_src, test_src = open_source(f"world:{world}"), open_source(f"world:{world}?split=test")
    elif name == "cifar10":
        root = data / "cifar10"
        if not (root / "train-0.tar.gz").exists():
            raise FileNotFoundError(f"{root}/train-0.tar.gz not found: give the shared data folder")
        train_src = open_source(f"wds:{root}/train-0.tar.gz")
        test_src = open_source(f"wds:{root}/test-0.tar.gz")
    else:
        raise ValueError(f"unknown dataset {name!r}; choose world or cifar10")
    ssl = limit_source(train_src, args.train_limit, seed=args.seed)
    probe_train = limit_source(train_src, args.probe_train, seed=args.seed + 1)
    probe_test = limit_source(test_src, args.probe_test, seed=args.seed + 2)
    return ssl, probe_train, probe_test


def probe(backbone: torch.nn.Module, probe_train: Any, probe_test: Any, folder: Path, quiet: bool) -> dict[str, float]:
    """Linear-probe and kNN top-1 of the backbone's representation."""
    feats = {}
    for split, src in (("train", probe_train), ("test", probe_test)):
        path = extract_features(backbone, src, folder / f"embeddings-{split}", batch_size=256, progress=not quiet,
                                overwrite=True)
        feats[split] = load_embeddings(path)
    tr, te = feats["train"], feats["test"]
    m = evaluate_representations(np.asarray(tr.features), tr.labels, np.asarray(te.features), te.labels)
    return {"linear_top1": m["linear"]["top1"], "knn_top1": m["knn"]["top1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="shared data folder holding cifar10/ (e.g. /work/shared/data)")
    p.add_argument("--datasets", nargs="+", default=["world", "cifar10"], choices=["world", "cifar10"])
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/validate-fda-<time>)")
    p.add_argument("--world", default=None, help="use this world folder instead of generating one")
    p.add_argument("--world-n", type=int, default=3000, help="scenes of the generated world (80%% train)")
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per SSL run (the shared budget)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-limit", type=int, default=5000, help="images the SSL runs draw from")
    p.add_argument("--probe-train", type=int, default=2000, help="labelled images the linear probe is fitted on")
    p.add_argument("--probe-test", type=int, default=1000, help="held-out images the probe is scored on")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or default_run_dir("validate-fda")
    run = RunDir(out)
    run.write_config({"script": "validate_fda", **{k: str(v) if isinstance(v, Path) else v
                                                    for k, v in vars(args).items()}})
    results: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    for dataset in args.datasets:
        ssl, probe_train, probe_test = sources(dataset, args.data, run.path, args)
        results[dataset] = {}
        torch.manual_seed(args.seed)
        rows = {"random init": None, **{k: RUNS[k] for k in args.runs}}
        for name, spec in rows.items():
            folder = run.path / dataset / name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "-")
            t0 = time.perf_counter()
            if spec is None:
                torch.manual_seed(args.seed)
                backbone, summary = create_backbone(args.backbone), {}
            else:
                overrides, _ = spec
                steps_per_epoch = max(1, len(ssl) // args.batch_size)
                cfg = TrainConfig(backbone=args.backbone, image_size=32, batch_size=args.batch_size, lr=args.lr,
                                  epochs=-(-args.steps // steps_per_epoch), max_steps=args.steps,
                                  warmup_epochs=min(1.0, 0.1 * args.steps / steps_per_epoch), accelerator="cpu",
                                  checkpoint_every=0, seed=args.seed, **overrides)
                summary = train(cfg, ssl, folder, progress=not args.quiet)
                backbone = summary.pop("backbone")
            scores = probe(backbone, probe_train, probe_test, folder, args.quiet)
            results[dataset][name] = {**scores, "seconds": time.perf_counter() - t0,
                                      "final_loss": summary.get("final_loss"), "steps": summary.get("steps"),
                                      "seed_imagenet_top1": spec[1] if spec else None}
            print(f"[{dataset}] {name:<14} linear {scores['linear_top1']:6.2f}%  kNN {scores['knn_top1']:6.2f}%  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    lines = ["| dataset | views | linear top-1 | kNN top-1 | seed (ImageNet, linear) |", "|---|---|---|---|---|"]
    for dataset, rows_ in results.items():
        for name, r in rows_.items():
            ref = r["seed_imagenet_top1"]
            lines.append(f"| {dataset} | {name} | {r['linear_top1']:.2f} | {r['knn_top1']:.2f} | "
                         f"{'' if ref is None else f'{ref:.1f}'} |")
    table = "\n".join(lines)
    budget = (f"{args.steps} steps x {args.batch_size} images, {args.backbone}, "
              f"{time.perf_counter() - t_start:.0f} s in total")
    atomic_write_text(run / "summary.md", f"# FDA validation ({budget})\n\n{table}\n")
    run.write_metrics({"results": results, "budget": budget})
    print(table)
    print(f"{budget}; run folder: {run.path}")


if __name__ == "__main__":
    main()
