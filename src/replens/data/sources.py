"""One spec string per data source: parsing, the source registry, ``open_source``.

Spec grammar::

    SPEC     := SCHEME ":" PATH [ "?" OPTIONS ]
    OPTIONS  := KEY "=" VALUE { "&" KEY "=" VALUE }
    multi    := "multi:" SPEC { "|" SPEC } [ "|?" OPTIONS ]

The first ``?`` starts the options (use ``*`` or ``[0-9]`` in globs, not
``?``). For ``multi:`` each part is a full spec with its own options, and the
options of the composition itself go in a last part that starts with ``?``.
A ``{split}`` in a path is replaced by the split (``split=`` option, else the
``split`` argument of :func:`open_source`).

Options every scheme accepts:

* ``limit=N``: the first N samples, or with ``subset_seed=S`` a random subset
  of N samples drawn with that seed (kept in source order);
* ``size=N``: the image side (shorter-side resize + center crop), overriding
  the ``image_size`` argument;
* ``max_bad=F``: the largest tolerated fraction of unreadable images
  (``iterate_batches`` stops past it; default 0.01).

Examples::

    wds:/data/cifar10/train-{0..4}.tar.gz?limit=1000&subset_seed=0
    pacs:/data/pacs?domains=photo,sketch&size=64
    multi:folder:/data/a?domain=photo|npz:/data/b.npz|?limit=500
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from replens.data.arrays import ArraySource
from replens.data.base import DataError, ImageSource
from replens.data.compose import MultiDomainSource, limit_source
from replens.data.folder import FolderSource
from replens.data.hf_datasets import HFDatasetSource
from replens.data.torchvision_source import TorchvisionSource
from replens.data.webdataset import WebDatasetSource, pacs_source
from replens.registry import Entry, Registry

#: Options accepted by every scheme (applied by :func:`open_source`).
COMMON_OPTIONS: dict[str, str] = {
    "limit": "keep the first N samples (or a random N with subset_seed)",
    "subset_seed": "seed of the random subset chosen by limit",
    "size": "image side in pixels (shorter-side resize + center crop)",
    "max_bad": "largest tolerated fraction of unreadable images (default 0.01)",
}

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SourceSpec:
    """A parsed spec: ``scheme:path?key=value&...``.

    Attributes:
        scheme: Registered scheme, lower case.
        path: Everything between ``scheme:`` and the options.
        options: Option values as written (strings); read them with the typed
            getters, whose errors name the key.
    """

    scheme: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        if not query:
            return f"{self.scheme}:{self.path}"
        entry = SOURCES.find(self.scheme)
        sep = "|?" if entry is not None and entry.meta["composite"] else "?"
        return f"{self.scheme}:{self.path}{sep}{query}"

    def get_str(self, key: str, default: str | None = None) -> str | None:
        """Option ``key`` as text, or ``default``."""
        return self.options.get(key, default)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        """Option ``key`` as an int; DataError naming the key if it is not one."""
        if key not in self.options:
            return default
        try:
            return int(self.options[key])
        except ValueError:
            raise DataError(f"option {key!r} of {str(self)!r} must be an integer, got {self.options[key]!r}") from None

    def get_float(self, key: str, default: float | None = None) -> float | None:
        """Option ``key`` as a float; DataError naming the key if it is not one."""
        if key not in self.options:
            return default
        try:
            return float(self.options[key])
        except ValueError:
            raise DataError(f"option {key!r} of {str(self)!r} must be a number, got {self.options[key]!r}") from None

    def get_bool(self, key: str, default: bool = False) -> bool:
        """Option ``key`` as a flag (1/0, true/false, yes/no, on/off)."""
        if key not in self.options:
            return default
        value = self.options[key].lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise DataError(f"option {key!r} of {str(self)!r} must be 1/0 or true/false, got {self.options[key]!r}")

    def get_list(self, key: str) -> list[str] | None:
        """Option ``key`` as a comma-separated list (None when absent)."""
        if key not in self.options:
            return None
        items = [item.strip() for item in self.options[key].split(",") if item.strip()]
        if not items:
            raise DataError(f"option {key!r} of {str(self)!r} is an empty list")
        return items


class SourceBuilder(Protocol):
    """Builds a source from a parsed spec (common options are applied after)."""

    def __call__(self, spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource: ...


#: Every source scheme (lower case); this module registers the built-in ones.
SOURCES: Registry[SourceBuilder] = Registry("source scheme")


def register_source(
    scheme: str,
    help: str,
    *,
    options: dict[str, str] | None = None,
    composite: bool = False,
    needs_labels: bool = False,
) -> Callable[[SourceBuilder], SourceBuilder]:
    """Register a source builder under ``scheme`` (decorator).

    Args:
        scheme: The spec prefix (``scheme:...``), letters, digits and ``_``.
        help: One line with an example spec, shown by ``replens list``.
        options: Scheme-specific option keys and their meaning (the common
            options are always accepted).
        composite: The path is a ``|``-separated list of specs (like
            ``multi:``), whose own options follow a final ``|?``.
        needs_labels: The scheme cannot open unlabelled data (entry metadata).

    Returns:
        The decorator; it returns the builder unchanged (registering the same
        builder again is a no-op).

    Raises:
        ValueError: The scheme is malformed or already registered.
    """
    if not _SCHEME.match(scheme):
        raise ValueError(f"bad scheme name {scheme!r}")
    key = scheme.lower()

    def decorate(builder: SourceBuilder) -> SourceBuilder:
        found = SOURCES.find(key)
        if found is None or found.obj is not builder:
            SOURCES.add(key, builder, help=help, needs_labels=needs_labels, options=dict(options or {}),
                        composite=composite)
        return builder

    return decorate


def list_sources() -> dict[str, str]:
    """Scheme -> one-line help with an example spec (for ``replens list``)."""
    return SOURCES.help()


def source_options(scheme: str) -> dict[str, str]:
    """Option key -> meaning for ``scheme`` (its own options plus the common ones)."""
    return {**_entry(scheme).meta["options"], **COMMON_OPTIONS}


def _entry(scheme: str) -> Entry[SourceBuilder]:
    entry = SOURCES.find(scheme.lower())
    if entry is None:
        raise DataError(f"unknown source scheme {scheme!r}; known: {', '.join(SOURCES.names())}")
    return entry


def _parse_options(text: str, spec: str, allowed: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in text.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise DataError(f"option {key!r} in {spec!r} has no value; write {key}=VALUE")
        if key not in allowed:
            raise DataError(f"unknown option {key!r} in {spec!r}; this scheme accepts: {', '.join(sorted(allowed))}")
        if key in options:
            raise DataError(f"option {key!r} is given twice in {spec!r}")
        options[key] = value.strip()
    return options


def parse_spec(spec: str) -> SourceSpec:
    """Parse ``scheme:path?key=value&...`` (grammar in the module docstring).

    Args:
        spec: The spec string.

    Returns:
        The parsed spec; the scheme is known and every option key is accepted
        by it (and the parts of a ``multi:`` spec are parsed too).

    Raises:
        DataError: No scheme, unknown scheme (listing the known ones), empty
            path, an option without ``=``, an unknown or repeated option key
            (naming it), a bad value of a common option.

    Example:
        >>> parse_spec("wds:/d/train-{0..4}.tar.gz?limit=10")
        SourceSpec(scheme='wds', path='/d/train-{0..4}.tar.gz', options={'limit': '10'})
    """
    spec = spec.strip()
    scheme, colon, rest = spec.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise DataError(
            f"source spec {spec!r} does not start with SCHEME: (e.g. wds:/data/train.tar); "
            f"known schemes: {', '.join(SOURCES.names())}"
        )
    entry = _entry(scheme)
    allowed = source_options(entry.name)
    if entry.meta["composite"]:
        parts = rest.split("|")
        query = parts.pop()[1:] if len(parts) > 1 and parts[-1].startswith("?") else ""
        for part in parts:
            if not part.strip():
                raise DataError(f"empty part in {spec!r} (parts are separated by '|')")
            parse_spec(part)
        path = "|".join(p.strip() for p in parts)
    else:
        path, _, query = rest.partition("?")
        path = path.strip()
    if not path:
        raise DataError(f"source spec {spec!r} has no path after '{entry.name}:'")
    parsed = SourceSpec(entry.name, path, _parse_options(query, spec, allowed))
    limit = parsed.get_int("limit")
    if limit is not None and limit < 1:
        raise DataError(f"option 'limit' of {spec!r} must be >= 1, got {limit}")
    if "subset_seed" in parsed.options and limit is None:
        raise DataError(f"option 'subset_seed' of {spec!r} needs limit=N")
    parsed.get_int("subset_seed")
    size = parsed.get_int("size")
    if size is not None and size < 1:
        raise DataError(f"option 'size' of {spec!r} must be >= 1, got {size}")
    max_bad = parsed.get_float("max_bad")
    if max_bad is not None and not 0.0 <= max_bad <= 1.0:
        raise DataError(f"option 'max_bad' of {spec!r} must be in [0, 1], got {max_bad}")
    return parsed


def open_source(spec: str | SourceSpec, *, image_size: int | None = None, split: str | None = None) -> ImageSource:
    """Open a data source from its spec (see the module docstring).

    Args:
        spec: A spec string or a parsed :class:`SourceSpec`.
        image_size: Default image side; a ``size=`` option overrides it.
        split: Default split for schemes that have splits (``world``, ``tv``,
            ``{split}`` in paths); a ``split=`` / ``train=`` option overrides it.

    Returns:
        The source, with ``spec`` set to the canonical spec string and
        ``max_bad_fraction`` from ``max_bad=``.

    Raises:
        DataError: Any problem with the spec or the data it names, raised here
            rather than later inside a loader worker.
    """
    parsed = parse_spec(str(spec))  # a SourceSpec built in Python is validated too
    entry = _entry(parsed.scheme)
    size = parsed.get_int("size")
    source = entry.obj(parsed, image_size=size if size is not None else image_size, split=split)
    max_bad = parsed.get_float("max_bad")
    if max_bad is not None:
        source.max_bad_fraction = max_bad
    limit = parsed.get_int("limit")
    if limit is not None:
        source = limit_source(source, limit, parsed.get_int("subset_seed"))
    source.spec = str(parsed)
    return source


# -- built-in schemes --------------------------------------------------------------


def _split_of(spec: SourceSpec, split: str | None) -> str | None:
    return spec.get_str("split", split)


def _path_with_split(spec: SourceSpec, split: str | None) -> str:
    path = spec.path
    if "{split}" in path:
        chosen = _split_of(spec, split)
        if not chosen:
            raise DataError(f"{str(spec)!r} has {{split}} in its path but no split was given")
        path = path.replace("{split}", chosen)
    return path


_SPLIT_HELP = "text that replaces {split} in the path"


@register_source(
    "folder",
    "ImageFolder tree ROOT/CLASS/*.jpg, e.g. folder:/data/pacs_folders/photo?domain=photo",
    options={
        "domain": "name of the domain",
        "domains": "sub-folders ROOT/DOMAIN, each an ImageFolder and its own domain",
        "split": _SPLIT_HELP,
    },
)
def _build_folder(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    root = _path_with_split(spec, split)
    domains = spec.get_list("domains")
    if domains is None:
        return FolderSource(root, image_size=image_size, domain=spec.get_str("domain"))
    if "domain" in spec.options:
        raise DataError(f"give domain= or domains=, not both, in {str(spec)!r}")
    return MultiDomainSource([FolderSource(os.path.join(root, d), image_size=image_size, domain=d) for d in domains])


@register_source(
    "wds",
    "WebDataset tar/tar.gz shards, e.g. wds:/data/cifar10/train-{0..4}.tar.gz",
    options={
        "classes": "class list file (default: classes.txt next to the shards)",
        "domain": "name of the single domain (ignores .json domains)",
        "domains": "keep these .json domains, in this order",
        "unlabeled": "1: accept samples without .cls (label -1)",
        "num_classes": "number of classes when there is no classes.txt (labels must lie below it)",
        "split": _SPLIT_HELP,
    },
)
def _build_wds(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    return WebDatasetSource(
        _path_with_split(spec, split),
        image_size=image_size,
        classes=spec.get_str("classes"),
        domain=spec.get_str("domain"),
        domains=spec.get_list("domains"),
        unlabeled=spec.get_bool("unlabeled"),
        num_classes=spec.get_int("num_classes"),
    )


@register_source(
    "pacs",
    "PACS as DIR/DOMAIN.tar + classes.txt, e.g. pacs:/data/pacs?domains=photo,sketch",
    options={"domains": "domains to load, in domain-id order (default: all four)"},
)
def _build_pacs(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    return pacs_source(spec.path, spec.get_list("domains"), image_size=image_size)


@register_source(
    "tv",
    "torchvision dataset, e.g. tv:CIFAR10:/data/cifar?train=0; tv:CIFAR10 downloads into the cache on first use",
    options={
        "train": "1 for the training split, 0 for the test split",
        "split": "split name (train, test, or e.g. STL10's unlabeled)",
        "download": "1: download CIFAR10/CIFAR100/STL10 into ROOT when missing (always without a ROOT)",
    },
)
def _build_torchvision(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    name, colon, root = spec.path.partition(":")
    if not name or (colon and not root):
        raise DataError(f"write tv:NAME:ROOT or tv:NAME (e.g. tv:CIFAR10:/data/cifar), got {str(spec)!r}")
    if "train" in spec.options:
        if "split" in spec.options:
            raise DataError(f"give train= or split=, not both, in {str(spec)!r}")
        chosen = "train" if spec.get_bool("train") else "test"
    else:
        chosen = _split_of(spec, split) or "train"
    return TorchvisionSource(name, root or None, split=chosen, image_size=image_size, download=spec.get_bool("download"))


_ARRAY_OPTIONS = {
    "domain": "name of the single domain (default: the file stem)",
    "unlabeled": "1: accept a file without labels (label -1)",
    "split": _SPLIT_HELP,
}


@register_source(
    "npz",
    "numpy .npz with images, labels[, domains, classes], e.g. npz:/data/digits.npz",
    options=_ARRAY_OPTIONS,
)
def _build_npz(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    return ArraySource.from_file(
        _path_with_split(spec, split),
        image_size=image_size,
        domain=spec.get_str("domain"),
        unlabeled=spec.get_bool("unlabeled"),
    )


@register_source(
    "npy",
    "directory of images.npy (memory-mapped), labels.npy[, domains.npy, classes.txt], e.g. npy:/data/digits",
    options=_ARRAY_OPTIONS,
)
def _build_npy(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    path = _path_with_split(spec, split)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"npy: wants a directory of .npy files, got the file {path!r}")
    return ArraySource.from_file(
        path,
        image_size=image_size,
        domain=spec.get_str("domain"),
        unlabeled=spec.get_bool("unlabeled"),
    )


@register_source(
    "hf",
    "Hugging Face image dataset: a save_to_disk folder, parquet files or a hub name, e.g. hf:uoft-cs/cifar10?split=test",
    options={
        "split": "split of a DatasetDict or hub dataset (default train)",
        "image": "image column (default: the first Image feature)",
        "label": "label column (default: the first ClassLabel feature, else 'label')",
        "domain": "name of the single domain (default: the dataset's name)",
    },
)
def _build_hf(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    return HFDatasetSource(
        spec.path,
        split=_split_of(spec, split),
        image=spec.get_str("image"),
        label=spec.get_str("label"),
        domain=spec.get_str("domain"),
        image_size=image_size,
    )


@register_source(
    "world",
    "the embedded scene world cached in DIR, e.g. world:runs/world?split=train",
    options={"split": "world split (train, test, ...)"},
)
def _build_world(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    try:
        # lazy: replens.world.dataset imports replens.data (whose __init__ imports this module): an import cycle
        from replens.world import load_world
    except ImportError as exc:
        raise DataError(f"the world source needs replens.world.load_world: {exc}") from exc
    path = os.path.expanduser(spec.path)
    chosen = _split_of(spec, split) or "train"
    try:
        return load_world(path, split=chosen, image_size=image_size)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # missing or incomplete world
        raise DataError(f"cannot open the world in {path!r} (split {chosen!r}): {exc}") from exc


@register_source(
    "multi",
    "sources concatenated, one domain each, e.g. multi:folder:/d/photo|folder:/d/sketch|?domain_names=photo,sketch",
    options={"domain_names": "names of the resulting domains, in order"},
    composite=True,
)
def _build_multi(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ImageSource:
    parts = [open_source(part, image_size=image_size, split=split) for part in spec.path.split("|")]
    return MultiDomainSource(parts, domain_names=spec.get_list("domain_names"))
