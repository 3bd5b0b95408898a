"""Tiny fixtures for the token tests: a small world, a random tiny CLIP, token caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from replens.vl import VLModel, build_tiny_clip
from replens.world import WorldConfig, generate_world
from support import TINY_RESNET_CLIP

TINY_VL = TINY_RESNET_CLIP


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(WorldConfig(n=80, size=32, seed=3, shard_size=40), tmp_path_factory.mktemp("w") / "w",
                          progress=False)


@pytest.fixture(scope="session")
def vl() -> VLModel:
    return build_tiny_clip(TINY_VL, seed=0).eval()


@pytest.fixture(scope="session")
def vl_file(vl: VLModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vl.save(tmp_path_factory.mktemp("vl") / "vl.safetensors")


@pytest.fixture(scope="session")
def caches(world: Path, vl: VLModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from replens.tokens import ExtractConfig, extract_tokens

    root = tmp_path_factory.mktemp("tok")
    out = {}
    for split in ("train", "test"):
        out[split] = extract_tokens(
            ExtractConfig(data=f"world:{world}?split={split}", shard_size=24, batch_size=16),
            root / split, vl=vl, progress=False,
        )
    return out
