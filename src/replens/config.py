"""Dataclass configs with YAML presets and ``key=value`` overrides.

A command's configuration is a (possibly nested) dataclass. It is resolved
in three layers: the dataclass defaults, an optional YAML file (``--config``),
and ``key=value`` overrides on the command line (``--set train.lr=0.1``).
The resolved config is what the run folder records.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


def _convert(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: cannot convert {value!r} to {annotation}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin in (list, tuple):
        items = value.split(",") if isinstance(value, str) else list(value)
        inner = args[0] if args else str
        converted = [_convert(v, inner, key) for v in items if v != ""]
        return converted if origin is list else tuple(converted)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if annotation is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation in (int, float, str):
        try:
            return annotation(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}") from exc
    return value


def require(ok: bool, key: str, value: Any, wanted: str) -> None:
    """Raise :class:`ConfigError` ``"KEY must be WANTED, got VALUE"`` unless ``ok``.

    Args:
        ok: The check's outcome.
        key: The config key (dotted) or option at fault.
        value: Its value.
        wanted: What it should be, e.g. ``"a positive integer"``.
    """
    if not ok:
        raise ConfigError(f"{key} must be {wanted}, got {value!r}")


def require_fraction_range(key: str, value: Any, *, low_open: bool = True) -> None:
    """Check a ``(low, high)`` pair with ``0 < low <= high <= 1`` (``0 <= low`` unless ``low_open``)."""
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ok = ok and (0 < value[0] if low_open else 0 <= value[0]) and value[0] <= value[1] <= 1
    require(ok, key, value, f"an ordered pair within {'(0' if low_open else '[0'}, 1] (low <= high)")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, converting and checking keys.

    Raises:
        ConfigError: An unknown key (named with its full dotted path) or a value
            that does not convert.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in sorted(unknown))}; "
            f"known: {', '.join(sorted(prefix + n for n in names))}"
        )
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain nested dict."""
    return dataclasses.asdict(config)


def apply_overrides(config: T, overrides: list[str]) -> T:
    """Return a copy of ``config`` with ``key=value`` overrides applied.

    Args:
        config: A dataclass instance.
        overrides: Strings like ``"lr=0.1"`` or ``"train.epochs=5"``.
    """
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        node: dict[str, Any] = data
        cls: Any = type(config)
        parts = key.strip().split(".")
        for part in parts[:-1]:
            free = cls is None  # inside a plain dict field: keys are free-form
            if not free:
                hints = typing.get_type_hints(cls)
                if part not in hints:
                    raise ConfigError(f"unknown config key {key!r}")
                annotation = hints[part]
                cls = annotation if dataclasses.is_dataclass(annotation) else None
                if cls is None and typing.get_origin(annotation) is not dict and annotation is not dict:
                    raise ConfigError(f"config key {key!r}: {part!r} is not a section")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key!r}: {part!r} is not a section")
        if cls is not None and parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r}; known: {', '.join(sorted(node))}")
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as exc:
            reason = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ConfigError(f"--set {key}: {value!r} is not a valid YAML value ({reason})") from None
    return from_dict(type(config), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file at ``path``, then ``overrides``."""
    config = cls()
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        merged = {**to_dict(config), **data}
        config = from_dict(cls, merged)
    return apply_overrides(config, overrides or [])


def preset_path(name: str) -> Path:
    """The packaged YAML preset ``name`` (``src/replens/presets/<name>.yaml``); unknown names list the known ones."""
    from importlib.resources import files

    path = Path(str(files("replens") / "presets" / f"{name}.yaml"))
    if not path.exists() or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(known)}")
    return path
