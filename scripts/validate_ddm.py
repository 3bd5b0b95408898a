"""Validate the Domain-Disentanglement Module (paper chapter 2) on small CPU budgets.

Experiments (each trains SSL encoders with the same budget and evaluates them
with the linear protocol of section 2.4.1):

* ``cifar``: Colored-CIFAR of section 2.3. SimCLR on plain CIFAR-10 images, on
  the same images tinted red or green at random (the tint is the domain), and
  on the tinted images with DDM (seed: 90.18, 78.52, 87.06 with a ViT-S and a
  full budget). Reported: the top-1 of one linear probe on all (plain or
  coloured) probe-training images, scored on the (plain or coloured) test images.
* ``world``: the same on the embedded world: the ``photo`` render domain vs the
  ``tint_red`` / ``tint_green`` domains.
* ``pacs``: PACS, training domains photo, cartoon, sketch; art_painting unseen
  (Table 2.1's protocol: a linear probe per domain, each domain split 70/30):
  the baseline, DDM with the domain labels, and DDM with robust clustering
  into M = 3 pseudo-domains instead of the labels (section 2.5; its purity
  against the true domains is reported).

Every run also reports how much domain and class information the prefix h^d
and the invariant part h^p carry (linear probes), and draws Figures 2.3 and
2.4 into its folder.

Usage::

    python scripts/validate_ddm.py --data /work/shared/data --out runs/validate_ddm --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.data import open_source
from replens.data.base import ImageSource
from replens.ddm import TintedSource
from replens.ddm.diagnostics import evaluate_encoder, format_domain_table
from replens.ddm.plugin import default_prefix_dim
from replens.engine import TrainConfig, load_checkpoint, train
from replens.runs import atomic_write_json, atomic_write_text
from replens.world import WorldConfig, generate_world


def _train_eval(name: str, args: argparse.Namespace, out: Path, source: ImageSource, plugins: dict[str, dict],
                eval_kw: dict[str, Any]) -> dict[str, Any]:
    """Train one encoder with the shared budget, then evaluate it."""
    run = out / name
    cfg = TrainConfig(method=args.method, backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, warmup_epochs=min(1.0, args.epochs / 10),
                      plugins=list(plugins), plugin_args=plugins, accelerator="cpu", checkpoint_every=0,
                      log_every=10, seed=args.seed, online_probe=False)
    t0 = time.perf_counter()
    summary = train(cfg, source, run, progress=not args.quiet)
    train_s = time.perf_counter() - t0
    backbone = summary["backbone"].eval()
    k = default_prefix_dim(backbone.feature_dim)
    t0 = time.perf_counter()
    result = evaluate_encoder(backbone, eval_kw.pop("train_source"), run / "eval", prefix_dim=k, seed=args.seed,
                              max_plot_points=args.plot_points, probe_iters=args.probe_iters, title=name,
                              progress=not args.quiet, **eval_kw)
    result.update(train_seconds=train_s, eval_seconds=time.perf_counter() - t0, steps=summary["steps"],
                  images_per_s=summary["images_per_s"], final_loss=summary["final_loss"], prefix_dim=k)
    history = load_checkpoint(run / "checkpoint.pt")["plugins"].get("ddm", {}).get("history", [])
    if history:
        result["clustering"] = history
    print(f"[{name}] top-1 {result['overall_seen']:.2f} (seen), per domain "
          + ", ".join(f"{d} {v:.2f}" for d, v in result["per_domain"].items())
          + f"; domain variance h^d {result['parts']['prefix']['domain_variance']:.3f} / h^p "
          f"{result['parts']['invariant']['domain_variance']:.3f}; train {train_s:.0f} s", flush=True)
    return result


def _parts_table(results: dict[str, dict]) -> str:
    lines = ["Linear-probe top-1 of the domain and the class from each part, and the share of each part's "
             "variance explained by the domain:", "",
             "| Run | domain from h^d | domain from h^p | domain from h | class from h^d | class from h^p | "
             "class from h | domain variance h^d | domain variance h^p | domain variance h |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        p = r["parts"]
        lines.append(f"| {name} | " + " | ".join(
            f"{p[part][key]:.2f}" for key in ("domain", "class") for part in ("prefix", "invariant", "full"))
            + " | " + " | ".join(f"{p[part]['domain_variance']:.3f}" for part in ("prefix", "invariant", "full"))
            + " |")
    return "\n".join(lines) + "\n"


def colored(args: argparse.Namespace, out: Path, plain_train: ImageSource, plain_test: ImageSource,
            label: str) -> tuple[dict[str, dict], str]:
    """Plain vs coloured vs coloured + DDM, one linear probe per setting (section 2.3)."""
    col_train, col_test = TintedSource(plain_train, seed=args.seed), TintedSource(plain_test, seed=args.seed + 1)
    return _three_runs(args, out, label, plain_train, plain_test, col_train, col_test)


def _three_runs(args: argparse.Namespace, out: Path, label: str, plain_train: ImageSource, plain_test: ImageSource,
                col_train: ImageSource, col_test: ImageSource) -> tuple[dict[str, dict], str]:
    runs = {
        "plain": (plain_train, plain_test, {}),
        "colored": (col_train, col_test, {}),
        "colored+ddm": (col_train, col_test, {"ddm": {}}),
    }
    if args.ablation:  # DDM without L_d_var: the critic alone, to see what the Wasserstein term does by itself
        runs["colored+ddm (L_d_invar only)"] = (col_train, col_test, {"ddm": {"variant_weight": 0.0}})
    results = {}
    for name, (tr, te, plugins) in runs.items():
        results[name] = _train_eval(f"{label}-{name}", args, out, tr, plugins,
                                    {"train_source": tr, "test_source": te, "protocol": "joint"})
    seed_numbers = {"plain": 90.18, "colored": 78.52, "colored+ddm": 87.06}
    lines = [f"### {label}: SimCLR-style top-1, one linear probe ({args.method}, {args.backbone}, "
             f"{args.image_size} px, {args.epochs} epochs)", "",
             "| Setting | top-1 | per domain | seed (ViT-S, full budget) |", "|---|---|---|---|"]
    for name, r in results.items():
        per = ", ".join(f"{d} {v:.2f}" for d, v in r["per_domain"].items())
        lines.append(f"| {name} | {r['overall_seen']:.2f} | {per} | {seed_numbers.get(name, '')} |")
    return results, "\n".join(lines) + "\n\n" + _parts_table(results)


def pacs(args: argparse.Namespace, out: Path) -> tuple[dict[str, dict], str]:
    """Table 2.1's protocol on PACS with and without DDM, and with robust clustering (section 2.5)."""
    root = args.data / "pacs"
    train_source = open_source(f"pacs:{root}?domains=photo,cartoon,sketch", image_size=args.image_size)
    unseen = open_source(f"pacs:{root}?domains=art_painting", image_size=args.image_size)
    runs = {"baseline": {}, "ddm": {"ddm": {}}, "ddm-robust-clustering": {"ddm": {"num_pseudo_domains": 3}}}
    results = {}
    for name, plugins in runs.items():
        results[name] = _train_eval(f"pacs-{name}", args, out, train_source, plugins,
                                    {"train_source": train_source, "unseen_source": unseen,
                                     "protocol": "per_domain"})
    first = results["baseline"]
    table = format_domain_table({n: r["per_domain"] for n, r in results.items()}, first["train_domains"],
                                first["unseen_domains"],
                                compare=[(f"{args.method} (Baseline / with DDM)", "baseline", "ddm"),
                                         (f"{args.method} (Baseline / DDM + robust clustering)", "baseline",
                                          "ddm-robust-clustering")],
                                title=f"### PACS: top-1 per domain ({args.backbone}, {args.image_size} px, "
                                      f"{args.epochs} epochs; a linear probe per domain, 70/30 split)")
    clustering = results["ddm-robust-clustering"].get("clustering", [])
    lines = [table, "Robust clustering (M = 3) per re-clustering: "
             + "; ".join(f"step {int(h['step'])}: epsilon {h['epsilon']:.3g}, purity {h.get('purity', float('nan')):.3f}, "
                         f"outliers {h['outlier_fraction']:.3f}" for h in clustering), "", _parts_table(results)]
    return results, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (cifar10/, pacs/)")
    parser.add_argument("--out", type=Path, default=Path("runs/validate_ddm"))
    parser.add_argument("--experiments", default="cifar,world,pacs", help="comma-separated: cifar, world, pacs")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--cifar-train", type=int, default=4096, help="CIFAR-10 training images (a seeded subset)")
    parser.add_argument("--cifar-test", type=int, default=2000, help="CIFAR-10 test images")
    parser.add_argument("--world-n", type=int, default=4000, help="world scenes (80%% train, 20%% test)")
    parser.add_argument("--world-objects", type=int, default=1, help="objects per world scene at most (1 to 3)")
    parser.add_argument("--ablation", action="store_true",
                        help="also train the Colored experiments with DDM's critic alone (no L_d_var)")
    parser.add_argument("--probe-iters", type=int, default=200)
    parser.add_argument("--plot-points", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 is faster on a busy CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report, metrics = [f"# DDM validation ({time.strftime('%Y-%m-%d %H:%M')})", ""], {"args": {
        k: str(v) for k, v in vars(args).items()}}
    for experiment in [e.strip() for e in args.experiments.split(",") if e.strip()]:
        t0 = time.perf_counter()
        if experiment == "cifar":
            shards = args.data / "cifar10"
            tr = open_source(f"wds:{shards}/train-{{0..4}}.tar.gz?limit={args.cifar_train}&subset_seed={args.seed}",
                             image_size=args.image_size)
            te = open_source(f"wds:{shards}/test-0.tar.gz?limit={args.cifar_test}&subset_seed={args.seed}",
                             image_size=args.image_size)
            results, text = colored(args, args.out, tr, te, "cifar")
        elif experiment == "world":
            worlds = {}
            for name, domains in (("photo", ("photo",)), ("tint", ("tint_red", "tint_green"))):
                config = WorldConfig(n=args.world_n, size=args.image_size, domains=domains, seed=args.seed,
                                     max_objects=args.world_objects)
                worlds[name] = generate_world(config, args.out / f"world-{name}", progress=False, overwrite=True)
            sources = {f"{name}-{split}": open_source(f"world:{path}?split={split}")
                       for name, path in worlds.items() for split in ("train", "test")}
            results, text = _three_runs(args, args.out, "world", sources["photo-train"], sources["photo-test"],
                                        sources["tint-train"], sources["tint-test"])
        elif experiment == "pacs":
            results, text = pacs(args, args.out)
        else:
            print(f"unknown experiment {experiment!r}; choose cifar, world, pacs", file=sys.stderr)
            return 2
        metrics[experiment] = results
        report += [text, f"({experiment}: {time.perf_counter() - t0:.0f} s)", ""]
        atomic_write_json(args.out / "metrics.json", json.loads(json.dumps(metrics, default=float)))
        atomic_write_text(args.out / "summary.md", "\n".join(report) + "\n")
        print(text, flush=True)
    print(f"summary: {args.out / 'summary.md'}")
    return 0 if all(np.isfinite(r["average"]) for e in metrics.values() if isinstance(e, dict)
                    for r in e.values() if isinstance(r, dict) and "average" in r) else 1


if __name__ == "__main__":
    sys.exit(main())
