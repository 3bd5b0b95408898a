"""Compositions of sources: subsets and multi-domain concatenation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from replens.data.base import DataError, ImageSource


class SubsetSource(ImageSource):
    """The samples of ``source`` at ``indices``, renumbered 0..len-1.

    Items are the wrapped source's items with ``index`` replaced by the
    position in the subset; names, labels, domains and class lists are kept.

    Args:
        source: The source to take from.
        indices: Positions in ``source`` (any order, repeats allowed).

    Raises:
        DataError: An index is out of range.
    """

    def __init__(self, source: ImageSource, indices: Sequence[int] | np.ndarray) -> None:
        super().__init__(source.image_size)
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(source)):
            raise DataError(f"subset index out of range for {source.describe()}")
        self.classes = source.classes
        self.domain_names = source.domain_names
        self.labels = np.asarray(source.labels)[self.indices]
        self.domains = np.asarray(source.domains)[self.indices]
        self.max_bad_fraction = source.max_bad_fraction

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` of the subset."""
        return self.source.read(int(self.indices[index]))

    def name(self, index: int) -> str:
        """The wrapped source's name of the sample."""
        return self.source.name(int(self.indices[index]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self.checked_index(index)
        item = self.source[int(self.indices[index])]
        item["index"] = int(index)
        return item


def limit_source(source: ImageSource, limit: int, seed: int | None = None) -> ImageSource:
    """The first ``limit`` samples, or a seeded random subset of ``limit`` samples.

    Args:
        source: Any source.
        limit: Number of samples (>= 1); a limit at or above the source's length
            returns the source itself.
        seed: ``None`` takes the first ``limit``; an int draws ``limit`` distinct
            samples with ``numpy.random.default_rng(seed)``, kept in source order
            (so shard reads stay sequential).

    Raises:
        DataError: ``limit < 1``.
    """
    if limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    if limit >= len(source):
        return source
    if seed is None:
        indices = np.arange(limit)
    else:
        indices = np.sort(np.random.default_rng(seed).choice(len(source), limit, replace=False))
    return SubsetSource(source, indices)


class MultiDomainSource(ImageSource):
    """Sources concatenated, each one its own domain (or its own domains).

    A source with one domain becomes one domain of the composition; a source
    with several keeps them (``pacs:`` with four domains adds four). All
    labelled sources must share one class list.

    Args:
        sources: The sources, in domain order.
        domain_names: Names of the resulting domains, one per domain after
            flattening (so one per source when every source has one domain).
            Default: the sources' own domain names, made unique with a
            ``#2``, ``#3`` ... suffix.

    Raises:
        DataError: No sources, class lists that disagree (naming the source),
            a wrong number of domain names.

    Example:
        ``MultiDomainSource([photo, sketch], domain_names=["photo", "sketch"])``
    """

    def __init__(self, sources: Sequence[ImageSource], domain_names: Sequence[str] | None = None) -> None:
        if not sources:
            raise DataError("MultiDomainSource needs at least one source")
        sizes = {s.image_size for s in sources}
        super().__init__(sizes.pop() if len(sizes) == 1 else None)
        self.sources = list(sources)
        self.classes = self._unified_classes(self.sources)

        offsets, names = [], []
        for source in self.sources:
            offsets.append(len(names))
            names.extend(source.domain_names)
        if domain_names is not None:
            if len(domain_names) != len(names):
                per = ", ".join(f"{s.describe()}: {len(s.domain_names)}" for s in self.sources)
                raise DataError(f"{len(domain_names)} domain names given for {len(names)} domains ({per})")
            names = [str(n) for n in domain_names]
        self.domain_names = _unique(names)
        self._domain_offset = np.array(offsets, dtype=np.int64)
        self._starts = np.cumsum([0] + [len(s) for s in self.sources])
        self.labels = np.concatenate([np.asarray(s.labels, dtype=np.int64) for s in self.sources])
        self.domains = np.concatenate(
            [np.asarray(s.domains, dtype=np.int64) + off for s, off in zip(self.sources, offsets, strict=True)]
        )

    @staticmethod
    def _unified_classes(sources: list[ImageSource]) -> list[str]:
        reference: ImageSource | None = None
        for source in sources:
            labelled = len(source.classes) > 0 or bool((np.asarray(source.labels) >= 0).any())
            if not labelled:
                continue
            if reference is None:
                reference = source
                continue
            if list(source.classes) != list(reference.classes):
                theirs, ours = list(source.classes), list(reference.classes)
                diff = next(
                    (i for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b),
                    min(len(theirs), len(ours)),
                )
                raise DataError(
                    f"class lists disagree: {source.describe()} has {len(theirs)} classes "
                    f"{_preview(theirs)} but {reference.describe()} has {len(ours)} "
                    f"{_preview(ours)} (first difference at index {diff}); give both the same "
                    "classes (e.g. a classes.txt next to the shards)"
                )
        return list(reference.classes) if reference is not None else []

    def locate(self, index: int) -> tuple[int, int]:
        """(source number, index within that source) of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        which = int(np.searchsorted(self._starts, index, side="right")) - 1
        return which, int(index - self._starts[which])

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` from its source."""
        which, inner = self.locate(index)
        return self.sources[which].read(inner)

    def name(self, index: int) -> str:
        """The source's own name of the sample."""
        which, inner = self.locate(index)
        return self.sources[which].name(inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self.checked_index(index)
        which, inner = self.locate(index)
        item = self.sources[which][inner]
        item["domain"] = int(item["domain"]) + int(self._domain_offset[which])
        item["index"] = int(index)
        return item


def _preview(names: list[str], n: int = 4) -> str:
    shown = ", ".join(names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}]"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        out.append(name if count == 1 else f"{name}#{count}")
    return out
