"""Validate the CIFAR ResNet backbones against the published akamaster checkpoints.

Loads ``weights/cifar10_resnet{20,56}.th`` through
``replens.models.create_backbone(..., weights=...)`` and measures top-1
accuracy on ``cifar10/test-0.tar.gz`` read with ``replens.data.open_source``.
Expected from a correct loader (JPEG re-encodes of the test set, see the data
README): ResNet-20 about 81.03%, ResNet-56 about 83.20%.

Usage::

    python scripts/validate_cifar_resnet.py --data /work/shared/data --model cifar_resnet20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from replens.data import open_source
from replens.data.base import collate_samples, iterate_batches
from replens.models import create_backbone

CHECKPOINTS = {
    "cifar_resnet20": ("cifar10_resnet20.th", 81.03),
    "cifar_resnet56": ("cifar10_resnet56.th", 83.20),
}


def evaluate(
    data: Path, model_name: str, *, batch_size: int, num_workers: int, device: str, limit: int | None
) -> tuple[float, int]:
    """Top-1 accuracy (percent) and the number of test images evaluated."""
    weights_file, _ = CHECKPOINTS[model_name]
    model = create_backbone(model_name, weights=data / "weights" / weights_file).to(device).eval()
    spec = f"wds:{data / 'cifar10' / 'test-0.tar.gz'}"
    if limit:
        spec += f"?limit={limit}"
    source = open_source(spec)
    loader = torch.utils.data.DataLoader(
        source, batch_size=batch_size, collate_fn=collate_samples, num_workers=num_workers
    )
    correct = total = 0
    with torch.inference_mode():
        for batch in tqdm(iterate_batches(loader), total=len(loader), desc=model_name, unit="batch"):
            logits = model.logits(model.preprocess(batch["image"]))
            correct += int((logits.argmax(1).cpu() == batch["label"]).sum())
            total += int(batch["label"].numel())
    return 100.0 * correct / max(total, 1), total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--model", choices=[*CHECKPOINTS, "all"], default="all", help="backbone to validate")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--tolerance", type=float, default=0.5, help="allowed gap to the expected accuracy (points)")
    args = parser.parse_args(argv)
    names = list(CHECKPOINTS) if args.model == "all" else [args.model]
    ok = True
    for name in names:
        start = time.perf_counter()
        accuracy, total = evaluate(
            args.data,
            name,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            limit=args.limit,
        )
        expected = CHECKPOINTS[name][1]
        gap = accuracy - expected
        close = abs(gap) <= args.tolerance or args.limit is not None
        ok &= close
        print(
            f"{name}: top-1 {accuracy:.2f}% on {total} images (expected {expected:.2f}%, "
            f"gap {gap:+.2f}) in {time.perf_counter() - start:.1f}s {'OK' if close else 'MISMATCH'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
