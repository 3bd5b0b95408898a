"""SimCLR training throughput: compute bound vs replens device views vs lightly CPU transforms.

The same ResNet-18 (CIFAR stem) SimCLR step at 32 px, measured in one run:

(a) model step alone on ready device tensors (the compute bound);
(b) replens: uint8 batches moved to the device once, both views made there
    by ``replens.augment.ViewPipeline``;
(c) lightly: ``SimCLRTransform`` per image on DataLoader workers (PIL), the
    views then moved to the device.

(b) makes the next step's views on a CUDA side stream while the current step
runs (``replens.augment.ViewFeed``, as the training loop does).
Prints samples/s for each and the ratios b/a and b/c (targets on a GPU:
b >= 0.95 a and b >= 2.5 c; on CPU: b >= c). :func:`measure_ssl_throughput`
is what ``benchmarks/device_check.py`` calls.

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

from replens.augment import ViewFeed, ViewPipeline, simclr_view_config
from replens.models import create_backbone


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, transform: SimCLRTransform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        return self.transform(Image.fromarray(self.images[i]))


def load_images(spec: str | None, n: int) -> np.ndarray:
    """``n`` uint8 (N, 32, 32, 3) images of a data spec (None: random images)."""
    if spec is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    from replens.data import open_source

    src = open_source(spec, image_size=32)
    idx = np.arange(min(n, len(src)))
    return np.stack([src[int(i)]["image"].permute(1, 2, 0).numpy() for i in idx])


def measure_ssl_throughput(
    images: np.ndarray,
    *,
    batch_size: int = 512,
    steps: int = 20,
    warmup: int = 3,
    workers: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
    backbone: str = "resnet18",
    backbone_args: dict | None = None,
    image_size: int = 32,
    overlap: bool = True,
) -> dict[str, float]:
    """Samples/s of (a) the compute bound, (b) replens device views, (c) lightly on workers, in one run.

    Args:
        images: (N, H, W, 3) uint8 images (at least ``batch_size * (steps + warmup)``, repeated otherwise).
        batch_size: Images per step (each gives two views).
        steps: Timed steps per pipeline.
        warmup: Untimed steps first.
        workers: DataLoader workers of lightly's transforms (0: in this process).
        device: Where the model runs.
        precision: ``fp32`` or ``bf16`` (autocast).
        backbone: Registered backbone name (``resnet18`` with the CIFAR stem by default).
        backbone_args: Its keyword arguments (default ``{"stem": "cifar"}`` for resnet18).
        image_size: View side.
        overlap: Make (b)'s next views on a CUDA side stream during the step
            (:class:`replens.augment.ViewFeed`, as the training loop does).

    Returns:
        ``bound``, ``replens``, ``lightly`` samples/s and the ratios ``replens_vs_bound``, ``replens_vs_lightly``.
    """
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    n_images = batch_size * (steps + warmup)
    if len(images) < n_images:
        images = np.concatenate([images] * (n_images // len(images) + 1))[:n_images]
    args = backbone_args if backbone_args is not None else ({"stem": "cifar"} if backbone == "resnet18" else {})
    net = create_backbone(backbone, **args).to(dev).to(memory_format=torch.channels_last)
    head = SimCLRProjectionHead(net.feature_dim, net.feature_dim, 128).to(dev)
    criterion = NTXentLoss(temperature=0.5)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.06, momentum=0.9)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step(v0: torch.Tensor, v1: torch.Tensor) -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            z = head(net(torch.cat([v0, v1]).contiguous(memory_format=torch.channels_last)))
            loss = criterion(*z.float().chunk(2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(batches, make_views) -> float:
        it = iter(batches)
        for _ in range(warmup):
            step(*make_views(next(it)))
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step(*make_views(next(it)))
        sync()
        return steps * batch_size / (time.perf_counter() - t0)

    b = batch_size
    u8 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    pipe = ViewPipeline(simclr_view_config(image_size, net.mean, net.std))
    ready = [pipe(u8[:b].to(dev)) for _ in range(2)]
    bound = timed(iter(lambda: None, 1), lambda _: ready)

    gen = torch.Generator(device=dev)

    def two_views(x: torch.Tensor, at_step: int) -> list[torch.Tensor]:
        gen.manual_seed(at_step)
        return [pipe(x, gen), pipe(x, gen)]

    pinned = u8.pin_memory() if dev.type == "cuda" else u8
    feed = ViewFeed(({"image": pinned[i : i + b]} for i in range(0, n_images, b)), two_views, dev, overlap=overlap)
    t0 = 0.0
    for k in range(warmup + steps):
        if k == warmup:
            sync()
            t0 = time.perf_counter()
        _, _, views = feed.take(k)
        step(*views)
        if feed.overlap and k + 1 < warmup + steps:
            feed.prepare(k + 1)
    sync()
    ours = steps * b / (time.perf_counter() - t0)

    transform = SimCLRTransform(input_size=image_size, gaussian_blur=0.0)
    loader = torch.utils.data.DataLoader(
        _PilDataset(images, transform), batch_size=b, num_workers=workers,
        pin_memory=dev.type == "cuda", persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
    )
    peer = timed(loader, lambda views: (views[0].to(dev, non_blocking=True), views[1].to(dev, non_blocking=True)))
    return {"bound": bound, "replens": ours, "lightly": peer,
            "replens_vs_bound": ours / bound, "replens_vs_lightly": ours / peer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data spec (default: random uint8 images)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16" if torch.cuda.is_available() else "fp32")
    ap.add_argument("--no-overlap", action="store_true", help="make (b)'s views in line, not on a side stream")
    args = ap.parse_args()
    images = load_images(args.data, args.batch_size * (args.steps + args.warmup))
    r = measure_ssl_throughput(images, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                               workers=args.workers, device=args.device, precision=args.precision,
                               overlap=not args.no_overlap)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}, batch {args.batch_size}, {args.steps} timed steps, precision {args.precision}, "
          f"workers {args.workers}")
    print(f"(a) compute bound, ready tensors      : {r['bound']:10.1f} samples/s")
    print(f"(b) replens device views from uint8    : {r['replens']:10.1f} samples/s")
    print(f"(c) lightly SimCLRTransform on workers : {r['lightly']:10.1f} samples/s")
    print(f"b / a = {r['replens_vs_bound']:.3f}   (GPU target >= 0.95)")
    print(f"b / c = {r['replens_vs_lightly']:.2f}    (GPU target >= 2.5; CPU target >= 1)")


if __name__ == "__main__":
    main()
