"""Shared fixtures of the report tests: a synthetic audit summary with small PNG assets written by PIL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

DOMAINS = ["photo", "cartoon", "sketch", "painting"]


def _png(path: Path, seed: int, size: int = 24) -> str:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path.name


def make_summary(folder: Path) -> dict[str, Any]:
    """A complete summary in the schema of ``replens.report`` whose images exist under ``folder/assets``."""
    rng = np.random.default_rng(0)
    correct = rng.normal(1.0, 0.4, 60).round(4).tolist()
    wrong = rng.normal(0.4, 0.3, 25).round(4).tolist()
    failures = []
    for k in range(5):
        name = _png(folder / "assets" / f"failure-{k}.png", k)
        failures.append(
            {
                "index": 10 + k,
                "image": f"assets/{name}",
                "label": "star" if k else "<script>alert(1)</script>",
                "predicted": "circle",
                "qscore": 0.1 * k,
                "domain": DOMAINS[k % 4],
                "explanation": f"features of sketch strokes fire for sample {10 + k}",
                "concepts": ["sketch", "thin outline"],
            }
        )
    groups = []
    for g in range(3):
        crops = [f"assets/{_png(folder / 'assets' / f'group-{g}-crop-{j}.png', 100 + 10 * g + j)}" for j in range(4)]
        low = [f"assets/{_png(folder / 'assets' / f'group-{g}-low-{j}.png', 200 + 10 * g + j)}" for j in range(2)]
        groups.append(
            {
                "id": g,
                "features": [3 + g, 17, 40],
                "concepts": ["red", "star"],
                "score": 0.31,
                "crops": crops,
                "low_crops": low,
            }
        )
    rows = []
    for encoder in ("SSL (simclr+ddm+fda)", "random init"):
        for probe in ("linear", "knn"):
            base = 40.0 if encoder.startswith("SSL") else 13.0
            rows.append(
                {
                    "encoder": encoder,
                    "probe": probe,
                    "all": base + (probe == "knn"),
                    "per_domain": {d: base + 2 * j for j, d in enumerate(DOMAINS)},
                }
            )
    return {
        "title": "replens audit",
        "created": "2026-11-27T06:00:00Z",
        "seconds": 412.3,
        "replens_version": "0.1.0",
        "overview": {
            "world": "runs/cache/world-abc",
            "encoder": "small_cnn",
            "method": "simclr",
            "plugins": ["ddm", "fda"],
            "train_samples": 4800,
            "test_samples": 1200,
            "steps": 280,
            "final_loss": 4.1,
            "images_per_s": 300.0,
            "linear_top1": 41.2,
            "random_linear_top1": 13.0,
            "auroc": 66.0,
            "headline": "The SSL encoder beats random init by 28 points.",
        },
        "accuracy": {"domains": DOMAINS, "rows": rows},
        "qscore": {
            "eps": 2.0,
            "n": 85,
            "auroc": 66.0,
            "auprc": 89.0,
            "correct": correct,
            "wrong": wrong,
            "roc": {"fpr": [0.0, 0.2, 0.5, 1.0], "tpr": [0.0, 0.5, 0.8, 1.0]},
            "pr": {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.9, 0.7]},
            "rankme": 28.5,
            "alpha_req": 1.9,
        },
        "encoding": {
            "measure": "correlation ratio eta^2 of each feature with the factor",
            "factors": [
                {"factor": "class", "levels": 10, "best": 0.22, "median": 0.04, "top_features": [39, 7],
                 "median_in": {"discriminative": 0.04}},
                {"factor": "domain", "levels": 4, "best": 0.88, "median": 0.32, "top_features": [95],
                 "median_in": {}},
            ],
        },
        "failures": failures,
        "groups": groups,
        "compression": {
            "k": [1, 2, 4, 8, 16],
            "curves": {
                "discriminative": [20, 28, 35, 39, 41],
                "random": [12, 15, 22, 30, 38],
                "pca": [18, 25, 33, 38, 40],
            },
            "full": 41.2,
        },
        "config": {"train": {"epochs": 15, "batch_size": 256}, "seed": 0, "note": "<b>not bold</b>"},
    }


@pytest.fixture
def summary_factory() -> Callable[[Path], dict[str, Any]]:
    """``folder -> summary`` (writes the summary's PNG assets into ``folder``)."""
    return make_summary
