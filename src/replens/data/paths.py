"""Shard path patterns: brace expansion, comma lists and globs.

A pattern is expanded the way WebDataset users expect::

    /data/train-{0..4}.tar.gz        five shards (numeric range, inclusive)
    /data/train-{000..002}.tar       zero padded: train-000.tar ... train-002.tar
    /data/{photo,sketch}.tar         alternatives
    /data/a.tar,/data/b.tar.gz       a comma list of patterns (outside braces)
    /data/train-*.tar.gz             a glob (sorted)
    /data/shards/                    a directory: every .tar / .tar.gz / .tgz in it
"""

from __future__ import annotations

import glob
import os
import re

from replens.data.base import DataError

#: Shard file name endings recognised when a directory is given.
SHARD_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")


def _matching_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start``, or -1."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` at ``sep`` characters that are not inside braces."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _range_items(first: str, last: str, step_text: str | None) -> list[str]:
    lo, hi = int(first), int(last)
    step = abs(int(step_text)) if step_text else 1
    if step == 0:
        raise DataError(f"brace range {{{first}..{last}..{step_text}}} has step 0")
    values = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
    padded = any(len(t.lstrip("-")) > 1 and t.lstrip("-").startswith("0") for t in (first, last))
    width = max(len(first), len(last)) if padded else 0
    return [str(v).zfill(width) if width else str(v) for v in values]


def expand_braces(pattern: str) -> list[str]:
    """Expand shell-style braces: ``{0..4}``, ``{00..10..2}``, ``{a,b,c}``, nested.

    A brace group holding neither a range nor a comma (``{split}``) is kept
    literally, as the shell does.

    Args:
        pattern: Text with zero or more brace groups.

    Returns:
        The expansions in order (the pattern itself when it has no groups).

    Raises:
        DataError: A ``{`` without its ``}``.

    Example:
        >>> expand_braces("train-{0..2}.tar")
        ['train-0.tar', 'train-1.tar', 'train-2.tar']
    """
    search_from = 0
    while True:
        start = pattern.find("{", search_from)
        if start < 0:
            return [pattern]
        end = _matching_brace(pattern, start)
        if end < 0:
            raise DataError(f"unbalanced '{{' in path pattern {pattern!r}")
        body = pattern[start + 1 : end]
        prefix, suffix = pattern[:start], pattern[end + 1 :]
        match = _RANGE.match(body)
        if match:
            items = _range_items(*match.groups())
        elif len(alternatives := _split_top_level(body)) > 1:
            items = alternatives
        else:  # literal group such as "{split}": look for the next one
            search_from = start + 1
            continue
        out: list[str] = []
        for item in items:  # each recursion removes one expandable group
            out.extend(expand_braces(prefix + item + suffix))
        return out


def expand_paths(pattern: str, *, suffixes: tuple[str, ...] = SHARD_SUFFIXES) -> list[str]:
    """Expand a shard pattern into existing files (see the module docstring).

    Args:
        pattern: Comma list of brace patterns, globs, files or directories;
            ``~`` is expanded.
        suffixes: File endings collected from a directory.

    Returns:
        Existing file paths in pattern order, without duplicates.

    Raises:
        DataError: A file is missing, a glob or directory matches nothing.
    """
    found: list[str] = []
    missing: list[str] = []
    for part in _split_top_level(pattern):
        part = part.strip()
        if not part:
            continue
        for path in expand_braces(os.path.expanduser(part)):
            if glob.has_magic(path):
                matches = sorted(glob.glob(path))
                if not matches:
                    raise DataError(f"no files match {path!r}")
                found.extend(matches)
            elif os.path.isdir(path):
                matches = sorted(
                    os.path.join(path, f)
                    for f in os.listdir(path)
                    if f.lower().endswith(suffixes) and os.path.isfile(os.path.join(path, f))
                )
                if not matches:
                    raise DataError(f"directory {path!r} holds no shard files ({', '.join(suffixes)})")
                found.extend(matches)
            elif os.path.isfile(path):
                found.append(path)
            else:
                missing.append(path)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(
            f"shard not found: {shown}" if len(missing) == 1 else f"{len(missing)} shards not found: {shown}"
        )
    if not found:
        raise DataError(f"path pattern {pattern!r} names no files")
    return list(dict.fromkeys(found))
