"""Validation: SimCLR and BYOL on CIFAR-10 for a fixed small budget (linear probe + wall time).

Usage:
    python scripts/validate_ssl.py --data ../shared/data [--methods simclr,byol] [--epochs 2]
        [--train-limit 10000] [--backbone resnet_small] [--device cpu|cuda]

Trains each method with the one training loop on (a subset of) the CIFAR-10
train shards, then probes the frozen encoder (linear + kNN, the fixed
protocol of ``replens.evaluate``) on the test shard, beside a randomly
initialised encoder of the same architecture. Prints a table and writes
``metrics.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from replens.data import open_source
from replens.engine import TrainConfig, train
from replens.engine.probing import probe_backbone
from replens.models import create_backbone
from replens.runs import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with cifar10/train-*.tar.gz and test-0.tar.gz")
    ap.add_argument("--methods", default="simclr,byol")
    ap.add_argument("--backbone", default="resnet_small")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--train-limit", type=int, default=10000, help="train images used (0: all 50,000)")
    ap.add_argument("--test-limit", type=int, default=0, help="test images used (0: all 10,000)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/validate-ssl"))
    args = ap.parse_args()

    train_spec = f"wds:{args.data}/cifar10/train-{{0..4}}.tar.gz"
    if args.train_limit:
        train_spec += f"?limit={args.train_limit}&subset_seed=0"
    test_spec = f"wds:{args.data}/cifar10/test-0.tar.gz" + (f"?limit={args.test_limit}" if args.test_limit else "")
    train_src = open_source(train_spec, image_size=32)
    test_src = open_source(test_spec, image_size=32)
    accelerator = "cuda" if args.device.startswith("cuda") else "cpu"
    results: dict[str, dict] = {}
    torch.manual_seed(0)
    random_init = create_backbone(args.backbone).eval()
    results["random_init"] = {"probe": probe_backbone(random_init, train_src, test_src, args.out / "random_init",
                                                      device=args.device), "seconds": 0.0}
    for method in args.methods.split(","):
        cfg = TrainConfig(method=method, backbone=args.backbone, image_size=32, epochs=args.epochs,
                          batch_size=args.batch_size, accelerator=accelerator,
                          precision="bf16-mixed" if accelerator == "cuda" else "32-true")
        t0 = time.perf_counter()
        summary = train(cfg, train_src, args.out / method)
        seconds = time.perf_counter() - t0
        probe = probe_backbone(summary.pop("backbone").eval(), train_src, test_src, args.out / method / "probe",
                               device=args.device)
        results[method] = {"probe": probe, "seconds": seconds, "images_per_s": summary["images_per_s"]}
    print(f"CIFAR-10, {len(train_src)} train / {len(test_src)} test images, {args.backbone}, {args.epochs} epochs, "
          f"batch {args.batch_size}, device {args.device}")
    print(f"{'encoder':<14}{'linear top-1':>14}{'kNN top-1':>12}{'train s':>10}")
    for name, r in results.items():
        print(f"{name:<14}{r['probe']['linear']['top1']:>14.2f}{r['probe']['knn']['top1']:>12.2f}"
              f"{r['seconds']:>10.0f}")
    atomic_write_json(args.out / "metrics.json", {k: {**v, "probe": {"linear": v["probe"]["linear"]["top1"],
                                                                        "knn": v["probe"]["knn"]["top1"]}}
                                                   for k, v in results.items()})
    print(json.dumps({k: v["probe"]["linear"]["top1"] for k, v in results.items()}))


if __name__ == "__main__":
    main()
