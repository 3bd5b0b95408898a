"""Throughput of Fourier Domain Augmentations: replens batched vs lightly per image, in one run.

Both sides run the same operations with the same distributions (Table C.2,
left view: rfft2 -> amplitude rescale p=0.2 -> phase shift p=0.2 -> random
frequency mask p=0.5 -> Gaussian mixture mask p=0.2 -> irfft2; Gaussian
sigmas scaled to the size as ``replens.augment.fda_config`` does), and again
with every operation at p=1 ("all four"). lightly's transforms take one
(C, H, W) tensor per call, as in a DataLoader worker, so they run with one
torch thread ("one process"). replens runs on whole batches, with one thread
(the same resources as lightly's process) and with all threads, and on CUDA
when available (timed with CUDA events after a warm-up). On a busy machine
torch's OpenMP threads contend with other processes and the all-thread figure
can fall below the one-thread figure. Images are random float tensors already
in memory, so neither side pays for decoding.

Then, per size, FDA against its bound on one CPU thread: a plain
``torch.fft.rfft2`` + ``irfft2`` over the same batch, calls alternating
(:func:`fda_vs_bound`; target >= 0.7 at 32 px).

Usage:
    python benchmarks/fda_throughput.py                       # 32 and 224 px, CPU (+ CUDA if present)
    python benchmarks/fda_throughput.py --sizes 32 --seconds 5 --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict

import torch

from replens.augment.fourier import FDAConfig, FourierAugment, fda_config
from replens.runs import atomic_write_json

ALL_ON = dict(amplitude_prob=1.0, phase_prob=1.0, mask_prob=1.0, gmm_prob=1.0)


def lightly_transform(cfg: FDAConfig, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """lightly's per-image FDA transforms composed as in ``FDAView1Transform`` (FDA part only)."""
    from lightly.transforms.amplitude_rescale_transform import AmplitudeRescaleTransform
    from lightly.transforms.gaussian_mixture_masks_transform import GaussianMixtureMask
    from lightly.transforms.irfft2d_transform import IRFFT2DTransform
    from lightly.transforms.phase_shift_transform import PhaseShiftTransform
    from lightly.transforms.random_frequency_mask_transform import RandomFrequencyMaskTransform
    from lightly.transforms.rfft2d_transform import RFFT2DTransform
    from torchvision import transforms as T

    return T.Compose([
        RFFT2DTransform(),
        T.RandomApply([AmplitudeRescaleTransform(range=cfg.amplitude_range)], p=cfg.amplitude_prob),
        T.RandomApply([PhaseShiftTransform(range=cfg.phase_range)], p=cfg.phase_prob),
        T.RandomApply([RandomFrequencyMaskTransform(k=cfg.mask_range)], p=cfg.mask_prob),
        T.RandomApply([GaussianMixtureMask(num_gaussians=cfg.gmm_count, std_range=cfg.gmm_sigma)], p=cfg.gmm_prob),
        IRFFT2DTransform(shape=(size, size)),
    ])


def time_lightly(cfg: FDAConfig, size: int, seconds: float, max_images: int) -> float:
    """Images/s of lightly's per-image transforms in one single-threaded process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tf = lightly_transform(cfg, size)
        images = torch.rand(64, 3, size, size)
        for i in range(4):
            tf(images[i])
        done, start = 0, time.perf_counter()
        while done < max_images and (time.perf_counter() - start < seconds or done < 16):
            tf(images[done % len(images)])
            done += 1
        return done / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def time_replens(cfg: FDAConfig, size: int, batch: int, seconds: float, device: str, threads: int | None = None) -> float:
    """Images/s of replens' batched FDA (sampling + application) on ``device`` (``threads`` torch CPU threads)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _time_replens(cfg, size, batch, seconds, device)
    finally:
        torch.set_num_threads(before)


def _time_replens(cfg: FDAConfig, size: int, batch: int, seconds: float, device: str) -> float:
    fda = FourierAugment(cfg)
    images = torch.rand(batch, 3, size, size, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    for _ in range(3):
        fda(images, g)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        calls, t0 = 0, time.perf_counter()
        start_ev.record()
        while time.perf_counter() - t0 < seconds or calls < 5:
            fda(images, g)
            calls += 1
        end_ev.record()
        torch.cuda.synchronize()
        return calls * batch / (start_ev.elapsed_time(end_ev) / 1000)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        fda(images, g)
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def fft_round_trip(images: torch.Tensor) -> torch.Tensor:
    """The bound: a plain ``torch.fft.rfft2`` + ``irfft2`` pass over the batch, nothing else."""
    return torch.fft.irfft2(torch.fft.rfft2(images, norm="ortho"), s=images.shape[-2:], norm="ortho")


def fda_vs_bound(cfg: FDAConfig, size: int, batch: int, seconds: float, device: str, threads: int | None = 1) -> dict:
    """replens' FDA (sampling + application) against the plain FFT round trip, calls alternating.

    Both run on the same batch in turns (so load on a shared machine hits
    both alike); each is timed per call and the median call time gives
    images/s. ``threads`` torch CPU threads (None: unchanged).

    Returns:
        ``fda`` and ``bound`` images/s and ``ratio`` = fda / bound.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        fda = FourierAugment(cfg)
        images = torch.rand(batch, 3, size, size, device=device)
        g = torch.Generator(device=device).manual_seed(0)
        cuda = device.startswith("cuda")

        def call(fn: Callable[[], torch.Tensor]) -> float:
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - t

        ours, bound = [], []
        for _ in range(2):
            call(lambda: fda(images, g))
            call(lambda: fft_round_trip(images))
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(ours) < 5:
            ours.append(call(lambda: fda(images, g)))
            bound.append(call(lambda: fft_round_trip(images)))
        fda_rate = batch / statistics.median(ours)
        bound_rate = batch / statistics.median(bound)
        return {"fda": fda_rate, "bound": bound_rate, "ratio": fda_rate / bound_rate}
    finally:
        torch.set_num_threads(before)


def measure_fda(size: int, batch: int, seconds: float, device: str, lightly_images: int = 2000) -> dict:
    """Table C.2's FDA at ``size`` px on ``device``: images/s, the FFT bound and lightly per image (one process)."""
    cfg = fda_config(size)
    threads = 1 if device == "cpu" else None
    row = fda_vs_bound(cfg, size, batch, seconds, device, threads=threads)
    peer = time_lightly(cfg, size, seconds, lightly_images)
    return {"size": size, "batch": batch, "device": device, **row, "lightly_per_image": peer,
            "ratio_vs_lightly": row["fda"] / peer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--cpu-batch", type=int, nargs="+", default=[1024, 64], help="CPU batch per size")
    parser.add_argument("--cuda-batch", type=int, nargs="+", default=[16384, 1024], help="CUDA batch per size")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--lightly-images", type=int, default=2000, help="cap on images lightly processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the all-threads run (default: all)")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--bound-batch", type=int, default=1024, help="batch of the 32 px one-thread bound check")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # torch.meshgrid indexing warning inside lightly
    threads = args.threads or torch.get_num_threads()
    cores = os.cpu_count() or 1
    cuda = torch.cuda.is_available() and not args.no_cuda
    print(f"torch {torch.__version__}, {cores} CPU cores, replens on 1 and {threads} torch threads"
          + (f", CUDA: {torch.cuda.get_device_name()}" if cuda else ", no CUDA"))
    results = []
    print(f"{'size':>5} {'ops':<9} {'lightly 1 proc':>15} {'replens 1 thr':>14} {'ratio':>7} "
          f"{f'replens {threads} thr':>14} {'ratio':>7}" + (f" {'replens CUDA':>14} {'ratio':>7}" if cuda else ""))
    for k, size in enumerate(args.sizes):
        cpu_batch = args.cpu_batch[min(k, len(args.cpu_batch) - 1)]
        cuda_batch = args.cuda_batch[min(k, len(args.cuda_batch) - 1)]
        for ops, overrides in (("Table C.2", {}), ("all four", ALL_ON)):
            cfg = fda_config(size, **overrides)
            peer = time_lightly(cfg, size, args.seconds, args.lightly_images)
            one = time_replens(cfg, size, cpu_batch, args.seconds, "cpu", threads=1)
            many = time_replens(cfg, size, cpu_batch, args.seconds, "cpu", threads=threads)
            row = {"size": size, "ops": ops, "config": asdict(cfg), "cpu_batch": cpu_batch,
                   "lightly_per_image_1_process": peer, "replens_cpu_1_thread": one,
                   f"replens_cpu_{threads}_threads": many, "ratio_1_thread": one / peer,
                   f"ratio_{threads}_threads": many / peer}
            line = (f"{size:>5} {ops:<9} {peer:>13,.0f}/s {one:>12,.0f}/s {one / peer:>6.1f}x "
                    f"{many:>12,.0f}/s {many / peer:>6.1f}x")
            if cuda:
                gpu = time_replens(cfg, size, cuda_batch, args.seconds, "cuda")
                row.update(replens_cuda=gpu, cuda_batch=cuda_batch, ratio_cuda=gpu / peer)
                line += f" {gpu:>12,.0f}/s {gpu / peer:>6.0f}x"
            print(line, flush=True)
            results.append(row)
    bounds = []
    for size in args.sizes:
        batch = args.bound_batch if size <= 64 else 64
        b = fda_vs_bound(fda_config(size), size, batch, args.seconds, "cpu", threads=1)
        bounds.append({"size": size, "batch": batch, **b})
        print(f"{size:>5} px, one thread, batch {batch}: FDA {b['fda']:,.0f} img/s vs plain rfft2 + irfft2 "
              f"{b['bound']:,.0f} img/s: {b['ratio']:.2f} of the bound (target >= 0.7 at 32 px)", flush=True)
    if args.json:
        from bench_env import environment

        record = {"environment": environment("cpu"), "cores": cores, "torch": torch.__version__,
                  "seconds_per_measurement": args.seconds, "results": results, "bound": bounds}
        atomic_write_json(args.json, record)


if __name__ == "__main__":
    main()
