"""Fixtures of the download tests: a local hub server and caches under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local_hub import LocalHub, serve


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every cache (torch hub, Hugging Face, XDG, ~/.cache/clip) under ``tmp_path``, online mode."""
    for key in ("REPLENS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "REPLENS_CACHE",
                "HF_ENDPOINT", "REPLENS_HUB_URL_WEIGHTS", "REPLENS_HUB_URL_HF", "REPLENS_HUB_URL_DATASETS",
                "REPLENS_HUB_URL_BANKS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return tmp_path


@pytest.fixture
def hub(caches: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A :class:`~local_hub.LocalHub` that every download kind is pointed at."""
    with serve() as server:
        monkeypatch.setenv("REPLENS_HUB_URL", server.url)
        yield server
