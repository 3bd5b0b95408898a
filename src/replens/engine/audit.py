"""``replens audit``: the first main job, end to end on the embedded world.

Builds (or reuses) a small world, trains a SimCLR encoder on its train split,
embeds train and test splits, probes them (linear + kNN, per domain) against
a randomly initialised encoder of the same architecture, and writes a report
folder: ``metrics.json``, ``summary.md``, ``config.yaml``, the trained weights
and the embeddings. Later capabilities (Q-Score, FALCON, ...) add sections.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from replens.engine.evaluation import probe_backbone
from replens.engine.train import TrainConfig, train
from replens.runs import RunDir, atomic_write_text


@dataclass
class AuditConfig:
    """Configuration of ``replens audit`` (defaults finish in minutes on 2 CPU cores).

    Attributes:
        world_n: Scenes in the world (train + test).
        world_size: Scene side in pixels.
        domains: Render domains.
        world_dir: Use this world instead of building one (None: cached build
            under ``cache_dir``).
        cache_dir: Where built worlds are cached, keyed by their config.
        train: The SSL training configuration.
        device: Device for embedding and probing.
        seed: Seed of everything.
    """

    world_n: int = 6000
    world_size: int = 32
    domains: list[str] = field(default_factory=lambda: ["photo", "cartoon", "sketch", "painting"])
    world_dir: str | None = None
    cache_dir: str = "runs/cache"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15, batch_size=256))
    device: str = "cpu"
    seed: int = 0


def _world_dir(config: AuditConfig, progress: bool) -> Path:
    from replens.world import GENERATOR_VERSION, WorldConfig, generate_world

    if config.world_dir:
        return Path(config.world_dir)
    wcfg = WorldConfig(n=config.world_n, size=config.world_size, domains=list(config.domains), seed=config.seed)
    keyed = {**asdict(wcfg), "generator_version": GENERATOR_VERSION}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]
    out = Path(config.cache_dir) / f"world-{key}"
    return Path(generate_world(wcfg, out, progress=progress))


def run_audit(config: AuditConfig, run: RunDir, progress: bool = True) -> dict[str, Any]:
    """Run the audit; returns the metrics written to ``metrics.json``."""
    from replens.data import open_source
    from replens.models import create_backbone

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    world = _world_dir(config, progress)
    size = config.train.image_size
    train_src = open_source(f"world:{world}", split="train", image_size=size)
    test_src = open_source(f"world:{world}", split="test", image_size=size)
    tcfg = TrainConfig(**{**asdict(config.train), "seed": config.seed})
    summary = train(tcfg, train_src, run / "train", progress=progress)
    trained = probe_backbone(summary.pop("backbone").eval(), train_src, test_src, run / "trained", config.device, progress)
    torch.manual_seed(config.seed)
    random_init = create_backbone(tcfg.backbone).eval()
    baseline = probe_backbone(random_init, train_src, test_src, run / "random_init", config.device, progress)
    metrics = {
        "world": str(world),
        "train_samples": len(train_src),
        "test_samples": len(test_src),
        "training": summary,
        "trained": trained,
        "random_init": baseline,
        "seconds": time.perf_counter() - t0,
    }
    run.write_metrics(metrics)
    atomic_write_text(run / "summary.md", render_summary(metrics, tcfg))
    return metrics


def render_summary(metrics: dict[str, Any], tcfg: TrainConfig) -> str:
    """A readable Markdown report of an audit's metrics."""
    t, r = metrics["trained"], metrics["random_init"]
    lines = [
        "# replens audit",
        "",
        f"World: `{metrics['world']}` ({metrics['train_samples']} train / {metrics['test_samples']} test scenes)",
        f"Encoder: {tcfg.method} on `{tcfg.backbone}`, {metrics['training']['steps']} steps, "
        f"final loss {metrics['training']['final_loss']:.4f}, "
        f"{metrics['training']['images_per_s']:.0f} images/s",
        "",
        "## Linear probe and kNN, top-1 % on the test split",
        "",
        "| domain | linear (SSL) | linear (random init) | kNN (SSL) | kNN (random init) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dom in t["linear"]["per_domain"]:
        lines.append(
            f"| {dom} | {t['linear']['per_domain'][dom]:.2f} | {r['linear']['per_domain'][dom]:.2f} | "
            f"{t['knn']['per_domain'][dom]:.2f} | {r['knn']['per_domain'][dom]:.2f} |"
        )
    lines.append(
        f"| **all** | **{t['linear']['top1']:.2f}** | {r['linear']['top1']:.2f} | "
        f"**{t['knn']['top1']:.2f}** | {r['knn']['top1']:.2f} |"
    )
    lines += [
        "",
        f"Protocol: {t['protocol']['linear']}; kNN {t['protocol']['knn']}.",
        f"Total time: {metrics['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)
