"""Data sources (``replens.data``): one spec string per source, one sample protocol.

Open any source with :func:`open_source` (``wds:``, ``folder:``, ``pacs:``,
``tv:``, ``npz:``, ``npy:``, ``world:``, ``multi:``; see
:mod:`replens.data.sources` for the grammar), load it with
:func:`make_loader` and iterate with :func:`iterate_batches`.
"""

from replens.data.arrays import ArraySource
from replens.data.base import (
    BadImageGuard,
    BadImageWarning,
    DataError,
    ImageSource,
    collate_samples,
    decode_image,
    iterate_batches,
)
from replens.data.compose import MultiDomainSource, SubsetSource, limit_source
from replens.data.folder import FolderSource
from replens.data.loader import make_loader, materialize
from replens.data.paths import expand_braces, expand_paths
from replens.data.sources import (
    SOURCES,
    SourceSpec,
    list_sources,
    open_source,
    parse_spec,
    register_source,
    source_options,
)
from replens.data.webdataset import WebDatasetSource, pacs_source

__all__ = [
    "ArraySource",
    "BadImageGuard",
    "BadImageWarning",
    "DataError",
    "FolderSource",
    "ImageSource",
    "MultiDomainSource",
    "SOURCES",
    "SourceSpec",
    "SubsetSource",
    "WebDatasetSource",
    "collate_samples",
    "decode_image",
    "expand_braces",
    "expand_paths",
    "iterate_batches",
    "limit_source",
    "list_sources",
    "make_loader",
    "materialize",
    "open_source",
    "pacs_source",
    "parse_spec",
    "register_source",
    "source_options",
]
