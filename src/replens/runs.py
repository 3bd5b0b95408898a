"""Run folders: atomic writes, resolved configs and ``metrics.json``.

Every command writes into one run folder (default ``runs/<command>-<UTC time>``)
its resolved configuration (``config.yaml``), a ``metrics.json`` and whatever
artefacts it makes. Every file is written to a temporary name in the same
folder and renamed into place, so a crash never leaves a half-written output.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    Args:
        path: Final destination.
        write: Writes the complete file at the temporary path it is given.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (numpy values converted)."""
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


def atomic_write_yaml(path: str | Path, data: Any) -> Path:
    """Write ``data`` as YAML atomically."""
    return atomic_write_text(path, yaml.safe_dump(_jsonable(data), sort_keys=False))


def default_run_dir(command: str, root: str | Path = "runs") -> Path:
    """``runs/<command>-<YYYYmmdd-HHMMSS>`` (a numeric suffix avoids clashes)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of the working tree, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunDir:
    """A run folder with helpers for the files every command writes.

    Args:
        path: The folder (created if needed).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> Path:
        """Write the resolved configuration (plus replens version and git commit)."""
        from replens import __version__

        full = {**config, "_replens_version": __version__, "_git_commit": git_commit()}
        return atomic_write_yaml(self.path / "config.yaml", full)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Write ``metrics.json`` atomically."""
        return atomic_write_json(self.path / "metrics.json", metrics)
