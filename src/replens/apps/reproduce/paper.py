"""The paper's own numbers, typed in once from the dissertation text (``paper_numbers/*.yaml``).

Each YAML file maps recipe ids to an entry with ``section`` and ``title`` and
either ``columns`` + ``rows`` (a table, cells exactly as printed in the paper)
or ``description`` (what a figure shows, with the numbers it quotes); an
optional ``notes`` gives units and setting.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

_REQUIRED = ("section", "title")


def paper_numbers_dir() -> Path:
    """The packaged folder of paper-number YAML files."""
    return Path(str(files("replens.apps.reproduce") / "paper_numbers"))


@lru_cache(maxsize=1)
def _all_numbers() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for path in sorted(paper_numbers_dir().glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of recipe ids, got {type(data).__name__}")
        for key, entry in data.items():
            rid = str(key).lower()
            if rid in out:
                raise ValueError(f"{path}: {rid} is already defined in {origin[rid]}")
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: {rid}: expected a mapping, got {type(entry).__name__}")
            missing = [k for k in _REQUIRED if k not in entry]
            if missing:
                raise ValueError(f"{path}: {rid}: missing keys {missing}")
            if "rows" in entry:
                cols = entry.get("columns")
                if not isinstance(cols, list) or not isinstance(entry["rows"], list):
                    raise ValueError(f"{path}: {rid}: a table needs 'columns' and 'rows' lists")
                for i, row in enumerate(entry["rows"]):
                    extra = set(row) - set(cols) if isinstance(row, dict) else None
                    if extra is None or extra:
                        raise ValueError(f"{path}: {rid}: row {i} has keys outside columns: {extra or row!r}")
            elif "description" not in entry:
                raise ValueError(f"{path}: {rid}: give 'columns' + 'rows' or a 'description'")
            entry = {**entry, "section": str(entry["section"]), "source_file": path.name}
            out[rid], origin[rid] = entry, path.name
    return out


def load_paper_numbers(id: str) -> dict[str, Any]:
    """The paper's entry for recipe ``id`` (a copy).

    Raises:
        KeyError: No YAML file defines ``id``.
        ValueError: A malformed YAML file (named, with the key at fault).
    """
    numbers = _all_numbers()
    key = id.strip().lower()
    if key not in numbers:
        raise KeyError(f"no paper numbers for {id!r} in {paper_numbers_dir()}/*.yaml")
    return dict(numbers[key])


def all_paper_ids() -> list[str]:
    """Every id with paper numbers."""
    return sorted(_all_numbers())
