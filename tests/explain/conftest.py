"""Shared fixtures of the FALCON tests: spaCy, a tiny world and a tiny CLIP trained for a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from replens.explain.concepts import ConceptExtractor
from support import TINY_VIT_CLIP


@pytest.fixture(scope="package")
def extractor() -> ConceptExtractor:
    return ConceptExtractor()


@pytest.fixture(scope="package")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from replens.world import WorldConfig, generate_world

    cfg = WorldConfig(n=120, size=32, seed=3, spurious=1.0, test_fraction=0.5, shard_size=64)
    return Path(generate_world(cfg, tmp_path_factory.mktemp("world") / "w", progress=False))


@pytest.fixture(scope="package")
def tiny_clip_path(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from replens.vl import TinyClipTrainConfig, train_tiny_clip

    model = TINY_VIT_CLIP
    path = tmp_path_factory.mktemp("clip") / "model.safetensors"
    train_tiny_clip(tiny_world, path, TinyClipTrainConfig(model=model, steps=3, batch_size=16), progress=False)
    return path
