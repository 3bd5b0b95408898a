"""SimCLR training throughput: compute bound vs replens device views vs lightly CPU transforms.

The same ResNet-18 (CIFAR stem) SimCLR step at 32 px, measured in one run:

(a) model step alone on ready device tensors (the compute bound);
(b) replens: uint8 batches moved to the device once, both views made there
    by ``replens.augment.ViewPipeline``;
(c) lightly: ``SimCLRTransform`` per image on DataLoader workers (PIL), the
    views then moved to the device.

Prints samples/s for each and the ratios b/a and b/c (targets on a GPU:
b >= 0.85 a and b >= 2 c; on CPU: b >= c).

Usage:
    python benchmarks/ssl_throughput.py [--data wds:../shared/data/cifar10/train-0.tar.gz]
        [--batch-size 512] [--steps 20] [--workers N] [--device cuda] [--precision bf16]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image

from replens.augment import ViewPipeline, simclr_view_config
from replens.models import create_backbone


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, transform: SimCLRTransform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        return self.transform(Image.fromarray(self.images[i]))


def _load_images(spec: str | None, n: int) -> np.ndarray:
    if spec is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    from replens.data import open_source

    src = open_source(spec, image_size=32)
    idx = np.arange(min(n, len(src)))
    return np.stack([src[int(i)]["image"].permute(1, 2, 0).numpy() for i in idx])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data spec (default: random uint8 images)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16" if torch.cuda.is_available() else "fp32")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    n_images = args.batch_size * (args.steps + args.warmup)
    images = _load_images(args.data, n_images)
    if len(images) < n_images:
        images = np.concatenate([images] * (n_images // len(images) + 1))[:n_images]

    backbone = create_backbone("resnet18", stem="cifar").to(device).to(memory_format=torch.channels_last)
    head = SimCLRProjectionHead(backbone.feature_dim, backbone.feature_dim, 128).to(device)
    criterion = NTXentLoss(temperature=0.5)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.06, momentum=0.9)
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def step(v0: torch.Tensor, v1: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            z = head(backbone(torch.cat([v0, v1]).contiguous(memory_format=torch.channels_last)))
            loss = criterion(*z.float().chunk(2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(batches, make_views) -> float:
        it = iter(batches)
        for _ in range(args.warmup):
            step(*make_views(next(it)))
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(*make_views(next(it)))
        sync()
        return args.steps * args.batch_size / (time.perf_counter() - t0)

    b = args.batch_size
    u8 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    pipe = ViewPipeline(simclr_view_config(32, backbone.mean, backbone.std))
    ready = [pipe(u8[:b].to(device)) for _ in range(2)]
    a = timed(iter(lambda: None, 1), lambda _: ready)

    def replens_batches():
        for i in range(0, n_images, b):
            yield u8[i : i + b].to(device, non_blocking=True)

    gen = torch.Generator(device=device).manual_seed(0)
    r = timed(replens_batches(), lambda x: (pipe(x, gen), pipe(x, gen)))

    transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
    loader = torch.utils.data.DataLoader(
        _PilDataset(images, transform), batch_size=b, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None,
    )
    c = timed(loader, lambda views: (views[0].to(device, non_blocking=True), views[1].to(device, non_blocking=True)))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}, batch {b}, {args.steps} timed steps, precision {args.precision}, workers {args.workers}")
    print(f"(a) compute bound, ready tensors      : {a:10.1f} samples/s")
    print(f"(b) replens device views from uint8    : {r:10.1f} samples/s")
    print(f"(c) lightly SimCLRTransform on workers : {c:10.1f} samples/s")
    print(f"b / a = {r / a:.3f}   (GPU target >= 0.85)")
    print(f"b / c = {r / c:.2f}    (GPU target >= 2; CPU target >= 1)")


if __name__ == "__main__":
    main()
