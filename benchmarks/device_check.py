"""One device check: CUDA smoke tests, then throughput ratios measured side by side, as one JSON and one table.

Smoke tests (each reported pass/fail with its error text; none aborts the run):

* every registered SSL method for a few steps of the real training loop in
  bf16 with channels_last, then again under ``torch.compile``;
* the DDM and FDA training plug-ins;
* Q-Score on device tensors (the Eq. 3.3 terms with a backward pass, and the
  streaming scores of device blocks against the same rows on the CPU);
* FALCON on device tensors (Grad-CAM of a feature group, caption search);
* the Visual Token Encoder's forward and backward (a few training steps).

Benchmarks, each a ratio of two pipelines timed in this run (two machines of
one kind differ by a third in absolute speed):

* SSL training samples/s (``ssl_throughput.measure_ssl_throughput``):
  replens device-side views vs the compute bound (the same step on ready
  views; target >= 0.95) vs lightly's transforms on CPU workers (target >= 2.5);
* FDA images/s at 32 and 224 px on the device (targets 1M/s and 100k/s on a
  GPU), the ratio to lightly per image, and on one CPU thread against a plain
  ``rfft2`` + ``irfft2`` of the same batch (target >= 0.7 at 32 px);
* streaming Q-Score over a warm memory map and over device blocks against a
  plain read pass (target >= 0.5);
* caption search on the device against a plain ``torch.mm`` of the same size
  (faiss' GPU index is not used: the project's faiss has no GPU build).

Records the device name, torch and CUDA versions and the git commit. Writes
``--out`` (default ``benchmarks/results/device_check-<host>-<date>``) ``.json``
and ``.md``. Sized to finish in about 8 minutes on one H100/H200; ``--quick``
shrinks everything (tiny backbone, few steps, small batches) to seconds on a
CPU, with ``torch.compile`` on its ``eager`` backend there (graph capture
without code generation, which would take minutes per model on a CPU).

Usage::

    python benchmarks/device_check.py                    # the device (CUDA when present)
    python benchmarks/device_check.py --quick --device cpu --out /tmp/check
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import caption_search  # noqa: E402 (benchmarks/ is not a package)
import fda_throughput  # noqa: E402
import qscore_scale  # noqa: E402
import ssl_throughput  # noqa: E402
import token_encoder_throughput  # noqa: E402
from bench_env import environment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sizes:
    """How large each check is (full: one GPU in about 8 minutes; quick: a CPU in seconds)."""

    backbone: str
    backbone_args: dict
    image_size: int
    smoke_batch: int
    smoke_steps: int
    smoke_images: int
    compile_backend: str | None
    ssl_batch: int
    ssl_steps: int
    ssl_warmup: int
    ssl_workers: int
    fda_sizes: tuple[int, ...]
    fda_batches: tuple[int, ...]
    fda_cpu_batch: int
    fda_seconds: float
    lightly_images: int
    qscore_rows: int
    qscore_dim: int
    qscore_chunk: int
    captions: int
    caption_dim: int
    caption_queries: int
    token_batch: int
    token_steps: int
    token_world: int | None
    token_preset: str


def sizes(quick: bool, device: str) -> Sizes:
    """Full sizes (the issue's workloads, shortened to fit the time) or ``--quick`` ones."""
    if quick:
        return Sizes(backbone="small_cnn", backbone_args={}, image_size=16, smoke_batch=8, smoke_steps=2,
                     smoke_images=32, compile_backend="eager" if device == "cpu" else None, ssl_batch=16,
                     ssl_steps=2, ssl_warmup=1, ssl_workers=0, fda_sizes=(32,), fda_batches=(256,),
                     fda_cpu_batch=256, fda_seconds=0.3, lightly_images=20, qscore_rows=4096, qscore_dim=256,
                     qscore_chunk=1024, captions=4096, caption_dim=64, caption_queries=32, token_batch=8,
                     token_steps=1, token_world=20, token_preset="cpu")
    return Sizes(backbone="resnet18", backbone_args={"stem": "cifar"}, image_size=32, smoke_batch=128,
                 smoke_steps=20, smoke_images=2560, compile_backend=None, ssl_batch=512, ssl_steps=20, ssl_warmup=3,
                 ssl_workers=max(1, (os.cpu_count() or 2) - 1), fda_sizes=(32, 224), fda_batches=(16384, 1024),
                 fda_cpu_batch=1024, fda_seconds=2.0, lightly_images=1000, qscore_rows=200_000, qscore_dim=2048,
                 qscore_chunk=32768, captions=500_000, caption_dim=512, caption_queries=1000, token_batch=256,
                 token_steps=20, token_world=None, token_preset="paper")


# --------------------------------------------------------------------------- running checks
class Runner:
    """Runs named checks, records pass/fail with the error text, and skips what the time budget leaves no room for."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.smoke: list[dict[str, Any]] = []
        self.benchmarks: dict[str, dict[str, Any]] = {}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def _run(self, fn: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
        t = time.perf_counter()
        try:
            value = fn()
            entry = {"ok": True, "error": None}
        except Exception as exc:  # noqa: BLE001 (every failure is reported, none aborts the run)
            value = None
            entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc(limit=6)}
        entry["seconds"] = round(time.perf_counter() - t, 3)
        return entry, value

    def smoke_test(self, name: str, fn: Callable[[], Any]) -> None:
        if self.left() <= 0:
            self.smoke.append({"name": name, "ok": None, "error": "skipped: time budget spent", "seconds": 0.0})
            return
        entry, value = self._run(fn)
        if entry["ok"] and isinstance(value, dict):
            entry["detail"] = value
        self.smoke.append({"name": name, **entry})
        print(f"[smoke] {name:<28} {'ok' if entry['ok'] else 'FAIL'} ({entry['seconds']:.1f} s)"
              + ("" if entry["ok"] else f"  {entry['error']}"), flush=True)

    def benchmark(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if self.left() <= 0:
            self.benchmarks[name] = {"ok": None, "error": "skipped: time budget spent"}
            return
        entry, value = self._run(fn)
        self.benchmarks[name] = {**entry, **(value or {})}
        shown = {k: v for k, v in (value or {}).items() if isinstance(v, float)}
        print(f"[bench] {name:<28} {'ok' if entry['ok'] else 'FAIL ' + str(entry['error'])} "
              + " ".join(f"{k}={v:,.3g}" for k, v in shown.items()), flush=True)


@contextlib.contextmanager
def compile_backend(backend: str | None) -> Iterator[None]:
    """Make ``torch.compile`` use ``backend`` inside the block (None: torch's default, inductor)."""
    if backend is None:
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.compile = original  # type: ignore[assignment]


def _smoke_source(sz: Sizes) -> Any:
    """Random uint8 images with 4 classes and 2 domains (DDM needs two)."""
    from replens.data.arrays import ArraySource

    rng = np.random.default_rng(0)
    n = sz.smoke_images
    images = rng.integers(0, 256, (n, sz.image_size, sz.image_size, 3), dtype=np.uint8)
    return ArraySource(images, rng.integers(0, 4, n), domains=np.arange(n) % 2)


def _train_smoke(sz: Sizes, device: torch.device, work: Path, **overrides: Any) -> dict[str, Any]:
    from replens.engine import TrainConfig, train

    config = TrainConfig(**{
        "backbone": sz.backbone, "backbone_args": sz.backbone_args, "image_size": sz.image_size,
        "batch_size": sz.smoke_batch, "epochs": 1000, "max_steps": sz.smoke_steps, "precision": "bf16-mixed",
        "channels_last": True, "accelerator": device.type, "checkpoint_every": 0, "knn_every": 0,
        "log_every": max(1, sz.smoke_steps), "warmup_epochs": 0.0, **overrides,
    })
    with tempfile.TemporaryDirectory(dir=work) as run:
        out = train(config, _smoke_source(sz), run, progress=False)
    if not (out["finished"] and math.isfinite(out["final_loss"])):
        raise RuntimeError(f"training did not finish with a finite loss: {out['steps']} steps, "
                           f"loss {out['final_loss']}")
    return {"steps": out["steps"], "final_loss": out["final_loss"], "images_per_s": out["images_per_s"]}


def _qscore_smoke(device: torch.device, work: Path) -> dict[str, Any]:
    from replens.quality import QScoreStream, qscore_array
    from replens.quality.regularizer import highly_activating_mask, qscore_regularizer_terms

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(512, 128, generator=g).sub_(0.8).clamp_(min=0)
    rows[torch.arange(512), torch.randint(0, 128, (512,), generator=g)] += 6.0
    h = rows.to(device, copy=True).requires_grad_(True)
    disc = torch.zeros(128, dtype=torch.bool, device=device)
    disc[::2] = True
    terms = qscore_regularizer_terms(h, disc, eps=2.0)
    (terms["q_term"] + 1e-3 * terms["l1_term"]).backward()
    if h.grad is None or not bool(torch.isfinite(h.grad).all()):
        raise RuntimeError("Eq. 3.3 terms gave no finite gradient on the device")
    mask = highly_activating_mask(h, 2.0).cpu()
    if not torch.equal(mask, highly_activating_mask(rows, 2.0)):
        raise RuntimeError("highly activating sets differ between the device and the CPU")
    with QScoreStream(eps=2.0, spill_dir=work) as stream:
        for lo in range(0, 512, 128):
            stream.update(h.detach()[lo : lo + 128])
        on_device = stream.result()
    on_cpu = qscore_array(rows.numpy(), eps=2.0, spill_dir=work)
    if not np.allclose(on_device.scores, on_cpu.scores, atol=1e-6):
        raise RuntimeError("streaming Q-Scores of device blocks differ from the CPU's")
    return {"discriminative_features": int(len(on_device.discriminative))}


def _falcon_smoke(device: torch.device, work: Path) -> dict[str, Any]:
    from replens.explain.gradcam import group_cams
    from replens.models import create_backbone

    backbone = create_backbone("small_cnn").to(device)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8).to(device)
    cams = group_cams(backbone, images, [0, 1, 2], batch_size=4)
    if cams.shape != (8, 32, 32) or not np.isfinite(cams).all():
        raise RuntimeError(f"Grad-CAM maps of shape {cams.shape} or not finite")
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        bank = caption_search.make_bank(Path(tmp), 3000, 64, 1000, seed=0)
        queries = torch.nn.functional.normalize(torch.randn(16, 64), dim=1)
        here = bank.search(queries, 5, device=device)
        ref = bank.search(queries, 5, device="cpu")
    if not torch.equal(here.indices.cpu(), ref.indices):
        raise RuntimeError("caption search on the device ranks differently from the CPU")
    return {"cams": list(cams.shape)}


def _token_smoke(sz: Sizes, device: torch.device, work: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        r = token_encoder_throughput.measure_token_throughput(
            Path(tmp), device=str(device), preset=sz.token_preset, batch=sz.token_batch, steps=sz.token_steps,
            warmup=1, world_n=sz.token_world)
    losses = [r[k]["final_loss"] for k in ("tokens", "vit")]
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"token encoder / ViT losses not finite: {losses}")
    return {"tokens_samples_per_s": r["tokens"]["samples_per_s"], "vit_samples_per_s": r["vit"]["samples_per_s"],
            "ratio": r["ratio"]}


# --------------------------------------------------------------------------- benchmarks
def _ssl_bench(sz: Sizes, device: torch.device) -> dict[str, Any]:
    n = sz.ssl_batch * (sz.ssl_steps + sz.ssl_warmup)
    images = ssl_throughput.load_images(None, n)
    precision = "bf16" if device.type == "cuda" else "fp32"
    r = ssl_throughput.measure_ssl_throughput(
        images, batch_size=sz.ssl_batch, steps=sz.ssl_steps, warmup=sz.ssl_warmup, workers=sz.ssl_workers,
        device=str(device), precision=precision, backbone=sz.backbone, backbone_args=sz.backbone_args)
    return {**r, "batch": sz.ssl_batch, "precision": precision, "backbone": sz.backbone,
            "targets": {"replens_vs_bound": 0.95, "replens_vs_lightly": 2.5}}


def _fda_bench(sz: Sizes, device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, batch in zip(sz.fda_sizes, sz.fda_batches, strict=True):
        r = fda_throughput.measure_fda(size, batch, sz.fda_seconds, str(device), sz.lightly_images)
        out[f"{size}px"] = r
    cpu = fda_throughput.fda_vs_bound(fda_throughput.fda_config(32), 32, sz.fda_cpu_batch, sz.fda_seconds, "cpu", 1)
    out["cpu_1_thread_32px"] = {**cpu, "batch": sz.fda_cpu_batch, "target": 0.7}
    first = out[f"{sz.fda_sizes[0]}px"]
    return {**out, "images_per_s": first["fda"], "ratio": first["ratio"], "ratio_vs_lightly": first["ratio_vs_lightly"],
            "cpu_ratio_vs_fft": cpu["ratio"],
            "targets": {"32px_images_per_s": 1e6, "224px_images_per_s": 1e5, "cpu_ratio_vs_fft": 0.7}}


def _qscore_bench(sz: Sizes, device: torch.device, work: Path) -> dict[str, Any]:
    path = work / "qscore-matrix.npy"
    qscore_scale.write_matrix(path, sz.qscore_rows, sz.qscore_dim, seed=0)
    try:
        matrix = np.load(path, mmap_mode="r")
        warm = qscore_scale.measure_warm(matrix, 512, sz.qscore_chunk, work)
        out = {"memmap": {k: v for k, v in warm.items() if k != "result"}}
        on_device = torch.from_numpy(np.asarray(matrix[: min(sz.qscore_rows, 65536)])).to(device)
        dev = qscore_scale.measure_warm(on_device, 512, sz.qscore_chunk, work)
        if not np.array_equal(dev["result"].discriminative,
                              qscore_scale.qscore_array(np.asarray(matrix[: len(on_device)]),
                                                        spill_dir=work).discriminative):
            raise RuntimeError("device blocks gave other discriminative features than the memory map")
        out["device_blocks"] = {k: v for k, v in dev.items() if k != "result"}
    finally:
        path.unlink(missing_ok=True)
    return {**out, "ratio": out["memmap"]["ratio"], "device_ratio": out["device_blocks"]["ratio"],
            "rows": sz.qscore_rows, "dim": sz.qscore_dim, "targets": {"ratio": 0.5}}


def _caption_bench(sz: Sizes, device: torch.device, work: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        r = caption_search.measure_search(
            Path(tmp), captions=sz.captions, dim=sz.caption_dim, queries=sz.caption_queries,
            shard_size=max(1, sz.captions // 4), chunk_rows=65536, device=str(device))
    return {**r, "captions": sz.captions, "targets": {"ratio": 0.5}}


# --------------------------------------------------------------------------- report
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: environment, smoke tests, benchmark ratios."""
    env = report["environment"]
    lines = [f"# Device check: {env['device']}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, commit {env['git_commit']}"
             f"{' (uncommitted changes)' if env['git_dirty'] else ''}, {env['date']}, host {env['host']}, "
             f"{'quick' if report['quick'] else 'full'} sizes, {report['seconds']:.0f} s", "",
             "## Smoke tests", "", "| check | result | seconds | error |", "| --- | --- | --- | --- |"]
    for s in report["smoke"]:
        result = "pass" if s["ok"] else ("skipped" if s["ok"] is None else "FAIL")
        error = (s.get("error") or "").splitlines()[0][:160].replace("|", "\\|") if s.get("error") else ""
        lines.append(f"| {s['name']} | {result} | {s['seconds']:.1f} | {error} |")
    b = report["benchmarks"]
    lines += ["", "## Benchmarks (ratios measured side by side in this run)", "",
              "| benchmark | ours | bound / peer | ratio | target |", "| --- | --- | --- | --- | --- |"]

    def row(name: str, ours: Any, other: Any, ratio: Any, target: str) -> None:
        lines.append(f"| {name} | {_fmt(ours)} | {_fmt(other)} | {_fmt(ratio)} | {target} |")

    ssl = b.get("ssl", {})
    if ssl.get("ok"):
        row("SSL samples/s vs compute bound", ssl["replens"], ssl["bound"], ssl["replens_vs_bound"], ">= 0.95")
        row("SSL samples/s vs lightly CPU workers", ssl["replens"], ssl["lightly"], ssl["replens_vs_lightly"],
            ">= 2.5")
    fda = b.get("fda", {})
    if fda.get("ok"):
        for key, value in fda.items():
            if key.endswith("px") and isinstance(value, dict) and "device" in value:
                row(f"FDA {key} img/s vs FFT round trip ({value['device']})", value["fda"], value["bound"],
                    value["ratio"], "1M/s at 32 px, 100k/s at 224 px (GPU)")
                row(f"FDA {key} img/s vs lightly per image", value["fda"], value["lightly_per_image"],
                    value["ratio_vs_lightly"], "")
        cpu = fda["cpu_1_thread_32px"]
        row("FDA 32 px, one CPU thread, vs rfft2 + irfft2", cpu["fda"], cpu["bound"], cpu["ratio"], ">= 0.7")
    q = b.get("qscore", {})
    if q.get("ok"):
        row("Q-Score rows/s vs plain read (warm memmap)", q["memmap"]["qscore"], q["memmap"]["plain"], q["ratio"],
            ">= 0.5")
        row("Q-Score rows/s vs plain read (device blocks)", q["device_blocks"]["qscore"],
            q["device_blocks"]["plain"], q["device_ratio"], ">= 0.5")
    c = b.get("caption_search", {})
    if c.get("ok"):
        row(f"caption search GFLOP/s vs torch.mm ({c['backend']})", c["gflops_ours"], c["gflops_torch_mm"],
            c["ratio"], ">= 0.5")
    for name, value in b.items():
        if not value.get("ok"):
            lines.append(f"| {name} | {'skipped' if value.get('ok') is None else 'FAIL'} | | | "
                         f"{(value.get('error') or '').splitlines()[0][:160]} |")
    return "\n".join(lines) + "\n"


def run_checks(device: torch.device, quick: bool, budget_s: float, work: Path) -> dict[str, Any]:
    """Every smoke test, then every benchmark; returns the report (JSON-serialisable)."""
    from replens.ssl import list_methods

    sz = sizes(quick, device.type)
    runner = Runner(budget_s)
    t0 = time.perf_counter()
    methods = sorted(list_methods())
    for method in methods:
        runner.smoke_test(f"ssl/{method}", lambda m=method: _train_smoke(sz, device, work, method=m))
    with compile_backend(sz.compile_backend):
        for method in methods:
            runner.smoke_test(f"ssl-compile/{method}",
                              lambda m=method: _train_smoke(sz, device, work, method=m, compile=True))
    runner.smoke_test("plugin/ddm", lambda: _train_smoke(sz, device, work, plugins=["ddm"]))
    runner.smoke_test("plugin/fda", lambda: _train_smoke(sz, device, work, plugins=["fda"]))
    runner.smoke_test("qscore/device-tensors", lambda: _qscore_smoke(device, work))
    runner.smoke_test("falcon/device-tensors", lambda: _falcon_smoke(device, work))
    runner.smoke_test("tokens/forward-backward", lambda: _token_smoke(sz, device, work))
    runner.benchmark("ssl", lambda: _ssl_bench(sz, device))
    runner.benchmark("fda", lambda: _fda_bench(sz, device))
    runner.benchmark("qscore", lambda: _qscore_bench(sz, device, work))
    runner.benchmark("caption_search", lambda: _caption_bench(sz, device, work))
    return {"environment": environment(device), "quick": quick, "seconds": time.perf_counter() - t0,
            "budget_s": budget_s, "smoke": runner.smoke, "benchmarks": runner.benchmarks}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds on a CPU")
    parser.add_argument("--out", type=Path, default=None,
                        help="output path without suffix (default benchmarks/results/device_check-<host>-<date>)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds after which remaining checks are reported as skipped (default 450; quick 120)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    out = args.out or ROOT / "benchmarks" / "results" / f"device_check-{socket.gethostname()}-{date.today()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = args.budget if args.budget is not None else (120.0 if args.quick else 450.0)
    with tempfile.TemporaryDirectory(prefix="device-check-") as work:
        report = run_checks(device, args.quick, budget, Path(work))
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    json_path.write_text(json.dumps(_jsonable(report), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    failed = [s["name"] for s in report["smoke"] if s["ok"] is False]
    failed += [k for k, v in report["benchmarks"].items() if v.get("ok") is False]
    print(f"wrote {json_path} and {md_path} in {report['seconds']:.0f} s; "
          + (f"failed: {', '.join(failed)}" if failed else "every check passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
