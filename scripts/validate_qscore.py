"""Validate Q-Score as a failure predictor (paper section 3.4, Figure 3.4 and Figure A.9).

Two encoders, each run through ``replens qscore --labels`` (discriminative
features from the training split, a linear probe fitted on it, Q-Score's
AUROC / AUPRC as a predictor of the probe's correctness on held-out samples),
for each epsilon of ``--eps`` (the paper's 4 was chosen for r = 2048; these
encoders have r = 64 and 256):

1. the supervised CIFAR-10 ResNet-20 of the shared data (``weights/cifar10_resnet20.th``),
   64-d representations, train subset ``--cifar-train`` images, judged on the test set;
   also scored against the model's own classifier head;
2. a small SimCLR encoder trained on the embedded world with ``replens.engine.train``
   (photo domain, one object, the class tied to the background colour in 70% of the
   scenes: at these CPU budgets the shapes alone stay near chance), judged on a seeded
   25% holdout of the same distribution, with the saliency IoU of section 3.5 against
   the world's core (object) and spurious (background) masks.

The paper reports AUROC up to 73 and AUPRC up to 91 for ImageNet-100 SSL
ResNets, and lower numbers for non-robust supervised ResNets (Figure A.9).
AUPRC counts correct samples as positives, so its chance level is the probe's
accuracy (printed beside it).

Usage::

    python scripts/validate_qscore.py --data /work/shared/data --out runs/validate-qscore
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _report(name: str, metrics: dict) -> dict:
    fp, probe = metrics["failure_prediction"], metrics["probe"]
    row = {
        "encoder": name,
        "probe_top1": probe["top1"],
        "auroc": 100 * fp["auroc"],
        "auprc": 100 * fp["auprc"],
        "auprc_chance": 100 * fp["correct_rate"],
        "auprc_failure": 100 * fp["auprc_failure"],
        "discriminative": metrics["discriminative_features"],
        "without_discriminative": metrics["qscore"][probe["eval_split"]]["samples_without_discriminative"],
        "eval_samples": probe["eval_samples"],
        "rankme": metrics["spectrum"]["rankme"],
        "alpha_req": metrics["spectrum"]["alpha_req"],
    }
    if "compression" in metrics:
        row["compression"] = {p["size"]: (round(p["discriminative"], 2), round(p["random_mean"], 2),
                                          round(p["pca"], 2)) for p in metrics["compression"]["points"]}
        row["compression_full"] = metrics["compression"]["full"]
    print(f"{name}: probe top-1 {row['probe_top1']:.2f}%  AUROC {row['auroc']:.2f}  AUPRC {row['auprc']:.2f} "
          f"(chance {row['auprc_chance']:.2f})  failure-AUPRC {row['auprc_failure']:.2f} "
          f"(chance {100 - row['auprc_chance']:.2f})  |D| {row['discriminative']}  "
          f"RankMe {row['rankme']:.2f}  alpha-ReQ {row['alpha_req']:.3f}", flush=True)
    return row


def cifar(args: argparse.Namespace, out: Path) -> dict:
    from replens.cli import main as cli
    from replens.quality import failure_prediction

    weights = args.data / "weights" / "cifar10_resnet20.th"
    train = f"wds:{args.data / 'cifar10'}/train-{{0..4}}.tar.gz?limit={args.cifar_train}&subset_seed=0"
    test = f"wds:{args.data / 'cifar10'}/test-0.tar.gz" + (f"?limit={args.cifar_test}" if args.cifar_test else "")
    eps_values = args.eps.split(",")
    run = out / f"cifar_resnet20-eps{eps_values[0]}"
    code = cli(["qscore", "--model", "cifar_resnet20", "--weights", str(weights), "--data", train,
                "--test-data", test, "--labels", "--eps", eps_values[0], "--fractions", args.fractions,
                "--seeds", "4", "--threads", str(args.threads), "--batch-size", "500", "--out", str(run), "--quiet",
                "--seed", str(args.seed)])
    if code:
        raise SystemExit(f"replens qscore failed on CIFAR-10 ({code})")
    metrics = json.loads((run / "metrics.json").read_text())
    row = _report(f"CIFAR-10 ResNet-20 (supervised), linear probe, eps {eps_values[0]}", metrics)
    row["eps"] = float(eps_values[0])
    row["other_eps"] = {}
    for eps in eps_values[1:]:  # the same representations, another epsilon (r = 64 here, 2048 in the seed)
        other = out / f"cifar_resnet20-eps{eps}"
        cli(["qscore", "--embeddings", str(run / "embeddings-train"), "--test-embeddings",
             str(run / "embeddings-test"), "--labels", "--eps", eps, "--fractions", args.fractions, "--seeds", "4",
             "--threads", str(args.threads), "--out", str(other), "--quiet", "--seed", str(args.seed)])
        row["other_eps"][eps] = _report(f"CIFAR-10 ResNet-20 (supervised), linear probe, eps {eps}",
                                        json.loads((other / "metrics.json").read_text()))
    # the network's own head: is Q-Score also a predictor of the supervised classifier's failures?
    import pyarrow.parquet as pq

    from replens.models import create_backbone, load_embeddings

    model = create_backbone("cifar_resnet20", weights=weights).eval()
    emb = load_embeddings(run / "embeddings-test")
    with torch.no_grad():
        logits = model.classifier(torch.as_tensor(np.asarray(emb.features)))
    head_correct = logits.argmax(1).numpy() == emb.labels
    row["head"] = {"top1": 100 * head_correct.mean()}
    for eps in eps_values:
        table = pq.read_table(out / f"cifar_resnet20-eps{eps}" / "scores.parquet").to_pydict()
        q = np.array([v for v, s in zip(table["qscore"], table["split"], strict=True) if s == "test"])
        head = failure_prediction(q, head_correct)
        row["head"][eps] = {"auroc": 100 * head.auroc, "auprc": 100 * head.auprc}
        print(f"CIFAR-10 ResNet-20, its own head (top-1 {row['head']['top1']:.2f}%), eps {eps}: "
              f"AUROC {100 * head.auroc:.2f}  AUPRC {100 * head.auprc:.2f}", flush=True)
    return row


def world_ssl(args: argparse.Namespace, out: Path) -> list[dict]:
    from replens.cli import main as cli
    from replens.engine import TrainConfig, train
    from replens.world import WorldConfig, generate_world, load_world

    config = WorldConfig(n=args.world_n, size=32, seed=args.seed, domains=tuple(args.world_domains.split(",")),
                         max_objects=args.world_objects, spurious=args.world_spurious, spurious_cue=args.world_cue)
    world = generate_world(config, out / "world", progress=False, overwrite=True)
    eps_values = args.eps.split(",")
    rows = []
    for method in args.methods.split(","):
        run_dir = out / f"world-{method}"
        cfg = TrainConfig(method=method, backbone=args.backbone, image_size=32, epochs=args.epochs, batch_size=128,
                          lr=2e-3, warmup_epochs=1.0, accelerator="cpu", checkpoint_every=0, log_every=10,
                          seed=args.seed)
        t0 = time.perf_counter()
        summary = train(cfg, load_world(world, "train"), run_dir / "train", progress=False)
        print(f"trained {method} on the world in {time.perf_counter() - t0:.0f} s ({summary['steps']} steps, "
              f"final loss {summary['final_loss']:.3f})", flush=True)
        for eps in eps_values:
            # judged on a seeded holdout of the training distribution (the test split drops the spurious cue)
            qdir = run_dir / f"qscore-eps{eps}"
            extra = ["--saliency", str(args.saliency)] if args.saliency else []
            code = cli(["qscore", "--model", args.backbone, "--weights", summary["backbone_weights"],
                        "--data", f"world:{world}?split=train", "--labels", "--holdout", "0.25", "--eps", eps,
                        "--fractions", args.fractions, "--seeds", "4", "--threads", str(args.threads),
                        "--out", str(qdir), "--quiet", "--seed", str(args.seed), *extra])
            if code:
                raise SystemExit(f"replens qscore failed on the world ({code})")
            metrics = json.loads((qdir / "metrics.json").read_text())
            row = _report(f"world {method} ({args.backbone}), eps {eps}", metrics)
            row["eps"] = float(eps)
            if "saliency" in metrics:
                s = metrics["saliency"]
                keys = ("miou_core", "miou_spurious", "images", "skipped_no_discriminative")
                row["saliency"] = {key: s[key] for key in keys}
                for part in ("correct", "misclassified"):
                    if part in s:
                        row["saliency"][part] = s[part]
                print(f"  saliency: mIoU core {s['miou_core']:.2f}%  spurious {s['miou_spurious']:.2f}% "
                      f"({s['images']} images, {s['skipped_no_discriminative']} without a discriminative feature)",
                      flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/validate-qscore"))
    parser.add_argument("--cifar-train", type=int, default=10_000, help="CIFAR-10 training images (D and probe)")
    parser.add_argument("--cifar-test", type=int, default=0, help="CIFAR-10 test images (0: all 10,000)")
    parser.add_argument("--world-n", type=int, default=2500, help="world scenes")
    parser.add_argument("--world-domains", default="photo", help="world render domains")
    parser.add_argument("--world-objects", type=int, default=1, help="objects per scene (max)")
    parser.add_argument("--world-spurious", type=float, default=0.7,
                        help="train scenes whose background matches their class (the rest: random)")
    parser.add_argument("--world-cue", default="background", help="spurious cue: background or marker")
    parser.add_argument("--eps", default="4,2", help="epsilons of L_i; the first does the full run")
    parser.add_argument("--methods", default="simclr", help="SSL recipes trained on the world, comma-separated")
    parser.add_argument("--backbone", default="small_cnn", help="world encoder")
    parser.add_argument("--epochs", type=int, default=8, help="world training epochs")
    parser.add_argument("--fractions", default="0.2,0.45", help="compression fractions")
    parser.add_argument("--saliency", type=int, default=64, help="world images for the saliency IoU (0: off)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--skip-world", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {}
    if not args.skip_cifar:
        results["cifar_resnet20"] = cifar(args, args.out)
    if not args.skip_world:
        results["world"] = world_ssl(args, args.out)
    results["seconds"] = time.perf_counter() - start
    (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"done in {results['seconds']:.0f} s; summary: {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
