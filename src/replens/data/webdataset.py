"""WebDataset tar shards as a random-access source (``wds:`` and ``pacs:`` specs).

A shard is a tar of samples; a sample is the group of members sharing a key
(the member path up to the first dot of its base name): ``KEY.jpg`` /
``.jpeg`` / ``.png`` / ``.webp`` (the image), ``KEY.cls`` (class index as
ASCII text) and optionally ``KEY.json`` with ``"class"`` (name or index) and
``"domain"`` (name).

Index and storage (built once, when the source is constructed, in the main
process, so malformed shards fail there and never inside a worker):

* plain ``.tar``: every member is listed with ``tarfile`` and the data offset
  and size of each image recorded; images are later read with one
  ``os.pread`` on a file descriptor that each process opens lazily (the
  descriptor is keyed by process id, so a forked DataLoader worker reopens its
  own, and descriptors are dropped when the source is pickled).
* compressed shards (``.tar.gz``, ``.tgz``, also bzip2 / xz; recognised by
  their magic bytes, not the name): a compressed tar cannot be read at random
  offsets, so each shard is decompressed in memory once and only the encoded
  image bytes are kept, concatenated into one ``bytes`` buffer per shard (for
  CIFAR-10 32 px about 1.4 KB per image, 14 MB for 10,000 images). Forked
  workers share these buffers copy-on-write. For shards too large for memory,
  store them uncompressed (``gunzip`` keeps a valid tar), which this class
  reads in place.

Classes come from ``classes.txt`` (one name per line) next to the first shard
when present, else from the class names in the ``.json`` members, else they are
``"0" ... str(max label)``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from replens.data.base import DataError, ImageSource, decode_image
from replens.data.paths import expand_paths

#: Image member extensions, in order of preference when a key has several.
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")

#: The PACS domains in their usual order (used when ``pacs:`` names none).
PACS_DOMAINS: tuple[str, ...] = ("photo", "art_painting", "cartoon", "sketch")

_MAX_OPEN_SHARDS = 64


def _decompress(raw: bytes, path: str) -> bytes | None:
    """The decompressed tar of a compressed shard, or None for a plain tar."""
    try:
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        if raw[:3] == b"BZh":
            return bz2.decompress(raw)
        if raw[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(raw)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise DataError(f"shard {path!r} is a corrupt or truncated compressed file: {exc}") from exc
    return None


def _is_compressed(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"


@dataclass
class _Sample:
    key: str
    image_member: str
    offset: int
    size: int
    cls_text: bytes | None = None
    cls_member: str | None = None
    meta: dict[str, Any] | None = None
    json_member: str | None = None


@dataclass
class _Shard:
    path: str
    blob: bytes | None  # image bytes of a compressed shard, None when read in place
    samples: list[_Sample] = field(default_factory=list)


def _split_member(name: str) -> tuple[str, str] | None:
    """``dir/KEY.ext.more`` -> (``dir/KEY``, ``ext.more``); None for no extension."""
    while name.startswith("./"):
        name = name[2:]
    slash = name.rfind("/") + 1
    base = name[slash:]
    if not base or base.startswith(".") or "." not in base:
        return None
    dot = slash + base.index(".")
    return name[:dot], name[dot + 1 :].lower()


_ZERO_BLOCK = bytes(512)
_FILE_TYPES = (b"0", b"\0", b"7")  # regular and contiguous files
_SKIPPED_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, fifos


class _NeedTarfile(Exception):
    """A header the fast reader leaves to ``tarfile`` (pax, GNU long names, damage)."""


def _octal(field: bytes) -> int:
    return int(field.replace(b"\0", b" ").strip() or b"0", 8)


def _list_members_fast(read_at: Callable[[int, int], bytes], total: int, path: str) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of the regular files of a plain ustar/v7 tar.

    About 20 times faster than ``tarfile`` (which parses every field of every
    header in Python); raises :class:`_NeedTarfile` at any extended header.
    """
    members: list[tuple[str, int, int]] = []
    pos = 0
    while pos < total:
        if total - pos < 512:
            if read_at(pos, total - pos).strip(b"\0"):
                last = members[-1][0] if members else "(none)"
                raise DataError(f"shard {path!r} is corrupt or truncated at byte {pos} (after member {last!r})")
            break
        header = read_at(pos, 512)
        if header == _ZERO_BLOCK:  # end-of-archive marker
            break
        try:
            valid = _octal(header[148:156]) == sum(header) - sum(header[148:156]) + 256
        except ValueError:
            valid = False
        if not valid or header[124] & 0x80:  # damage, a signed checksum or a huge size:
            raise _NeedTarfile  # tarfile decides (and names the damage)
        size = _octal(header[124:136])
        typeflag = header[156:157]
        if typeflag in _FILE_TYPES:
            name = header[:100].split(b"\0", 1)[0]
            if header[257:263] == b"ustar\0":
                prefix = header[345:500].split(b"\0", 1)[0]
                name = prefix + b"/" + name if prefix else name
            text = name.decode("utf-8", "surrogateescape")
            if pos + 512 + size > total:
                raise DataError(
                    f"shard {path!r} is truncated: member {text!r} needs {pos + 512 + size} bytes, the tar has {total}"
                )
            members.append((text, pos + 512, size))
        elif typeflag not in _SKIPPED_TYPES:
            raise _NeedTarfile
        pos += 512 + (size + 511) // 512 * 512
    return members


def _list_members_tarfile(
    fileobj: BinaryIO, read_at: Callable[[int, int], bytes], total: int, path: str
) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of the regular files, read with ``tarfile``."""
    members: list[tuple[str, int, int]] = []
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > total:
                    raise DataError(
                        f"shard {path!r} is truncated: member {info.name!r} needs "
                        f"{info.offset_data + info.size} bytes, the tar has {total}"
                    )
                members.append((info.name, info.offset_data, info.size))
            # tarfile stops silently at a broken header after the first member: a tar
            # ends with zero blocks, so anything else where it stopped is damage
            end = tar.offset
            tail = read_at(end, min(512, total - end)) if end < total else b""
            if tail.strip(b"\0") or 0 < len(tail) < 512:
                last = tar.members[-1].name if tar.members else "(none)"
                raise DataError(f"shard {path!r} is corrupt or truncated at byte {end} (after member {last!r})")
    except tarfile.TarError as exc:
        raise DataError(f"shard {path!r} is not a readable tar file: {exc}") from exc
    return members


def scan_shard(path: str) -> _Shard:
    """Index one shard: group members by key, read labels and metadata.

    Args:
        path: A ``.tar`` or compressed tar file.

    Returns:
        The shard's samples in member order, with image offsets (into the
        file, or into the kept image buffer for compressed shards).

    Raises:
        DataError: Unreadable or truncated shard, a sample with labels but no
            image, an unreadable ``.json``. (Label values are checked by the
            caller.)
    """
    tar_bytes, fd, total = _open_shard(path)

    def payload(offset: int, size: int) -> bytes:
        if tar_bytes is not None:
            return tar_bytes[offset : offset + size]
        return os.pread(fd, size, offset)

    try:
        groups = _group_members(_list_members(path, tar_bytes, payload, total))
        shard = _Shard(path=path, blob=None)
        blob_parts: list[bytes] = []
        blob_size = 0
        for key, members in groups.items():
            sample = _scan_sample(path, key, members, payload)
            if sample is None:
                continue
            if tar_bytes is not None:  # keep only the image bytes of compressed shards
                blob_parts.append(tar_bytes[sample.offset : sample.offset + sample.size])
                sample.offset, blob_size = blob_size, blob_size + sample.size
            shard.samples.append(sample)
        if tar_bytes is not None:
            shard.blob = b"".join(blob_parts)
    except OSError as exc:
        raise DataError(f"cannot read shard {path!r}: {exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)
    if not shard.samples:
        raise DataError(f"shard {path!r} holds no samples (no members named KEY.{'|'.join(IMAGE_EXTENSIONS)})")
    return shard


def _open_shard(path: str) -> tuple[bytes | None, int, int]:
    """``(decompressed tar or None, file descriptor or -1, tar size)`` of a compressed or a plain shard."""
    try:
        if _is_compressed(path):
            with open(path, "rb") as handle:
                tar_bytes = _decompress(handle.read(), path)
            assert tar_bytes is not None
            return tar_bytes, -1, len(tar_bytes)
        total = os.path.getsize(path)
        return None, os.open(path, os.O_RDONLY), total
    except OSError as exc:
        raise DataError(f"cannot open shard {path!r}: {exc}") from exc


def _list_members(
    path: str, tar_bytes: bytes | None, payload: Callable[[int, int], bytes], total: int
) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of the shard's regular files: the fast reader, else ``tarfile``."""
    try:
        return _list_members_fast(payload, total, path)
    except _NeedTarfile:
        if tar_bytes is not None:
            return _list_members_tarfile(io.BytesIO(tar_bytes), payload, total, path)
        with open(path, "rb") as handle:
            return _list_members_tarfile(handle, payload, total, path)


def _group_members(listed: list[tuple[str, int, int]]) -> dict[str, dict[str, tuple[int, int, str]]]:
    """``{key: {extension: (offset, size, member name)}}`` in member order."""
    groups: dict[str, dict[str, tuple[int, int, str]]] = {}
    for name, offset, size in listed:
        split = _split_member(name)
        if split is not None:
            key, ext = split
            groups.setdefault(key, {})[ext] = (offset, size, name)
    return groups


def _scan_sample(
    path: str, key: str, members: dict[str, tuple[int, int, str]], payload: Callable[[int, int], bytes]
) -> _Sample | None:
    """The sample of one key with its ``.cls`` text and ``.json`` metadata; None for a key without image or labels."""
    image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
    if image_ext is None:
        if "cls" in members or "json" in members:
            listed = ", ".join(m[2] for m in members.values())
            raise DataError(
                f"shard {path!r}: sample {key!r} has no image member "
                f"({'|'.join(IMAGE_EXTENSIONS)}); its members: {listed}"
            )
        return None
    offset, size, member = members[image_ext]
    sample = _Sample(key=key, image_member=member, offset=offset, size=size)
    if "cls" in members:
        c_off, c_size, sample.cls_member = members["cls"]
        sample.cls_text = payload(c_off, c_size)
    if "json" in members:
        j_off, j_size, sample.json_member = members["json"]
        try:
            meta = json.loads(payload(j_off, j_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"shard {path!r}: member {sample.json_member!r} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise DataError(f"shard {path!r}: member {sample.json_member!r} is not a JSON object")
        sample.meta = meta
    return sample


def _parse_cls(sample: _Sample, shard: str) -> int:
    assert sample.cls_text is not None
    text = sample.cls_text.strip()
    try:
        if not text.isascii():
            raise ValueError
        return int(text.decode("ascii"))
    except ValueError:
        raise DataError(
            f"shard {shard!r}: member {sample.cls_member!r} is not an integer class label "
            f"(content {sample.cls_text[:40]!r})"
        ) from None


def read_class_names(path: str) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored)."""
    try:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read class list {path!r}: {exc}") from exc
    if not names:
        raise DataError(f"class list {path!r} is empty")
    return names


def _stated_labels(scanned: list[_Shard]) -> tuple[list[int | None], list[Any]]:
    """Per sample: its ``.cls`` value (None: no ``.cls``) and its ``.json`` ``class`` (or ``label``, or None)."""
    cls_values: list[int | None] = []
    json_classes: list[Any] = []
    for shard in scanned:
        for sample in shard.samples:
            cls_values.append(_parse_cls(sample, shard.path) if sample.cls_text is not None else None)
            meta_class = sample.meta.get("class") if sample.meta else None
            if meta_class is None and sample.meta:
                meta_class = sample.meta.get("label")
            json_classes.append(meta_class)
    return cls_values, json_classes


def _infer_class_names(cls_values: list[int | None], json_classes: list[Any], first_shard: str) -> list[str]:
    """Class names without a class list: each index named from the ``.json`` class names when they agree, else
    numbers up to the largest ``.cls``; with no ``.cls`` at all, the sorted ``.json`` names."""
    pairs: dict[int, str] = {}
    consistent = True
    for value, meta in zip(cls_values, json_classes, strict=True):
        if value is not None and isinstance(meta, str):
            consistent &= pairs.setdefault(value, meta) == meta
    top = max((v for v in cls_values if v is not None), default=-1)
    used = {v for v in cls_values if v is not None}
    named = consistent and all(i in pairs for i in range(top + 1))
    if top >= 2 and len(used) <= top / 2 and not named:
        raise DataError(
            f"shards {first_shard!r}...: numeric labels run up to {top} but only {len(used)} "
            f"distinct values occur; put classes.txt next to the shards or state ?num_classes=K"
        )
    if top >= 0:
        return [pairs[i] for i in range(top + 1)] if named else [str(i) for i in range(top + 1)]
    return sorted({m for m in json_classes if isinstance(m, str)})


def _sample_label(
    shard: _Shard, sample: _Sample, value: int | None, meta: Any, index_of: dict[str, int], n_classes: int, where: str
) -> int | None:
    """One sample's label from its ``.cls`` value and ``.json`` class (checked to agree and be in range)."""
    from_json: int | None = None
    if isinstance(meta, bool):
        meta = None
    if isinstance(meta, int):
        from_json = meta
    elif isinstance(meta, str):
        if meta not in index_of:
            if value is None:
                raise DataError(
                    f"shard {shard.path!r}: member {sample.json_member!r} names class "
                    f"{meta!r}, which is not in the {where}"
                )
        else:
            from_json = index_of[meta]
    if value is not None and from_json is not None and value != from_json:
        raise DataError(
            f"shard {shard.path!r}: {sample.cls_member!r} says class {value} but "
            f"{sample.json_member!r} says {meta!r}"
        )
    label = value if value is not None else from_json
    if label is not None and not 0 <= label < n_classes:
        raise DataError(
            f"shard {shard.path!r}: sample {sample.key!r} has label {label}, outside "
            f"0..{n_classes - 1} of the {where}"
        )
    return label


def _raise_missing_labels(labels: np.ndarray, first_missing: tuple[str, str]) -> None:
    """The error for samples without a label (-1 in ``labels``), naming the first one."""
    n_missing = int((labels < 0).sum())
    shard_path, member = first_missing
    if n_missing == len(labels):
        raise DataError(
            f"shard {shard_path!r} has images but no labels (no KEY.cls members, no "
            f"'class' in KEY.json; first image {member!r}); pass unlabeled=1 to open "
            "it without labels"
        )
    raise DataError(
        f"shard {shard_path!r}: image {member!r} has no label (.cls or .json 'class'); "
        f"{n_missing} of {len(labels)} samples lack one; pass unlabeled=1 to accept that"
    )


class WebDatasetSource(ImageSource):
    """WebDataset tar / tar.gz shards with random access (see the module docstring).

    Args:
        shards: A pattern (brace ranges, comma lists, globs, a directory; see
            :func:`replens.data.paths.expand_paths`) or a list of shard paths.
        image_size: Output side, see :class:`ImageSource`.
        classes: Class names, or the path of a class list; ``None`` looks for
            ``classes.txt`` next to the first shard.
        domain: Name of the single domain, overriding any ``.json`` domains.
        domains: Keep only samples whose ``.json`` domain is listed; domain ids
            follow this order.
        shard_domains: One domain name per shard (how ``pacs:`` assigns the
            domain of each ``DOMAIN.tar``); a ``.json`` domain that disagrees is
            an error. Domain ids follow the first appearance of each name.
        unlabeled: Accept samples without a label (label -1) instead of
            raising.
        num_classes: The number of classes when there is no class list
            (classes ``"0" ... str(num_classes - 1)``); labels must lie below it.

    Raises:
        DataError: Missing shard, empty or corrupt tar, samples without labels
            (unless ``unlabeled``), a malformed ``.cls``, labels out of range of
            the class list, contradicting ``.cls`` and ``.json``, numeric labels
            so sparse that the class count is unknowable (without a class list or
            ``num_classes``); always naming the shard and member.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        *,
        image_size: int | None = None,
        classes: Sequence[str] | str | None = None,
        domain: str | None = None,
        domains: Sequence[str] | None = None,
        shard_domains: Sequence[str] | None = None,
        unlabeled: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(image_size)
        if num_classes is not None and num_classes < 1:
            raise DataError(f"num_classes must be a positive integer, got {num_classes}")
        paths = expand_paths(shards) if isinstance(shards, str) else list(shards)
        if not paths:
            raise DataError("no shards given")
        for path in paths:
            if not os.path.isfile(path):
                raise DataError(f"shard not found: {path!r}")
        if shard_domains is not None and len(shard_domains) != len(paths):
            raise DataError(f"{len(shard_domains)} shard domains given for {len(paths)} shards")
        self.shard_paths = [os.path.abspath(p) for p in paths]
        scanned = [scan_shard(p) for p in self.shard_paths]

        class_file = None
        if isinstance(classes, str):
            class_file = classes
        elif classes is None:
            candidate = os.path.join(os.path.dirname(self.shard_paths[0]), "classes.txt")
            class_file = candidate if os.path.isfile(candidate) else None
        class_names = read_class_names(class_file) if class_file else None
        if classes is not None and not isinstance(classes, str):
            class_names = [str(c) for c in classes]
        if class_names is None and num_classes is not None:
            class_names = [str(i) for i in range(num_classes)]

        labels = self._resolve_labels(scanned, class_names, class_file, unlabeled)
        domain_ids = self._resolve_domains(scanned, domain, domains, shard_domains)

        keep = domain_ids >= 0
        self._blobs = [s.blob for s in scanned]
        flat = [(si, sample) for si, shard in enumerate(scanned) for sample in shard.samples]
        flat = [item for item, kept in zip(flat, keep, strict=True) if kept]
        if not flat:
            raise DataError(f"no samples of domains {list(domains or [])} in {self.shard_paths}")
        self._shard = np.array([si for si, _ in flat], dtype=np.int32)
        self._offset = np.array([s.offset for _, s in flat], dtype=np.int64)
        self._size = np.array([s.size for _, s in flat], dtype=np.int64)
        self._keys = [s.key for _, s in flat]
        self._members = [s.image_member for _, s in flat]
        self.labels = labels[keep]
        self.domains = domain_ids[keep]
        self._shard_names = [os.path.basename(p) for p in self.shard_paths]
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._pid = os.getpid()

    # -- construction helpers -------------------------------------------------

    def _resolve_labels(
        self,
        scanned: list[_Shard],
        class_names: list[str] | None,
        class_file: str | None,
        unlabeled: bool,
    ) -> np.ndarray:
        """Label per scanned sample (-1: none); sets ``classes`` (inferred from the labels when not given)."""
        cls_values, json_classes = _stated_labels(scanned)
        samples = [(shard, s) for shard in scanned for s in shard.samples]
        if class_names is None:
            class_names = _infer_class_names(cls_values, json_classes, self.shard_paths[0])
        self.classes = class_names
        index_of = {name: i for i, name in enumerate(class_names)}
        where = f"class list {class_file!r}" if class_file else f"{len(class_names)} classes"

        labels = np.full(len(samples), -1, dtype=np.int64)
        first_missing = None
        for i, ((shard, sample), value, meta) in enumerate(zip(samples, cls_values, json_classes, strict=True)):
            label = _sample_label(shard, sample, value, meta, index_of, len(class_names), where)
            if label is None:
                first_missing = first_missing or (shard.path, sample.image_member)
                continue
            labels[i] = label
        if first_missing is not None and not unlabeled:
            _raise_missing_labels(labels, first_missing)
        return labels

    def _resolve_domains(
        self,
        scanned: list[_Shard],
        domain: str | None,
        domains: Sequence[str] | None,
        shard_domains: Sequence[str] | None,
    ) -> np.ndarray:
        """Domain id per scanned sample; -1 marks samples filtered out by ``domains``."""
        n = sum(len(s.samples) for s in scanned)
        if domain is not None:
            self.domain_names = [domain]
            return np.zeros(n, dtype=np.int64)
        if shard_domains is not None:
            names = list(dict.fromkeys(shard_domains))
            self.domain_names = names
            ids = []
            for shard, name in zip(scanned, shard_domains, strict=True):
                for sample in shard.samples:
                    stated = sample.meta.get("domain") if sample.meta else None
                    if stated is not None and stated != name:
                        raise DataError(
                            f"shard {shard.path!r}: member {sample.json_member!r} says domain "
                            f"{stated!r}, but the shard was given as domain {name!r}"
                        )
                    ids.append(names.index(name))
            return np.array(ids, dtype=np.int64)
        stated_all = [
            (shard, sample, sample.meta.get("domain") if sample.meta else None)
            for shard in scanned
            for sample in shard.samples
        ]
        if all(stated is None for _, _, stated in stated_all):
            if domains:
                raise DataError(
                    f"domains={','.join(domains)} given but the shards' samples name no domain "
                    "(no 'domain' in KEY.json)"
                )
            self.domain_names = [os.path.basename(os.path.dirname(self.shard_paths[0])) or "default"]
            return np.zeros(n, dtype=np.int64)
        for shard, sample, stated in stated_all:
            if stated is None:
                raise DataError(
                    f"shard {shard.path!r}: sample {sample.key!r} names no domain while others "
                    "do (add 'domain' to its .json or give domain=NAME)"
                )
        present = sorted({str(stated) for _, _, stated in stated_all})
        if domains:
            missing = [d for d in domains if d not in present]
            if missing:
                raise DataError(f"domains {missing} not found in the shards (present: {present})")
            names = list(domains)
        else:
            names = present
        self.domain_names = names
        index_of = {name: i for i, name in enumerate(names)}
        return np.array([index_of.get(str(s), -1) for _, _, s in stated_all], dtype=np.int64)

    # -- reading ----------------------------------------------------------------

    def _fd(self, shard: int) -> int:
        pid = os.getpid()
        if pid != self._pid:  # forked: the inherited descriptors belong to the parent
            self._close_fds()
            self._pid = pid
        fd = self._fds.get(shard)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN_SHARDS:
                os.close(self._fds.popitem(last=False)[1])
            fd = os.open(self.shard_paths[shard], os.O_RDONLY)
            self._fds[shard] = fd
        else:
            self._fds.move_to_end(shard)
        return fd

    def read_bytes(self, index: int) -> bytes:
        """The encoded image bytes of sample ``index``.

        Raises:
            DataError: The shard cannot be read (or was truncated since indexing).
        """
        shard = int(self._shard[index])
        offset, size = int(self._offset[index]), int(self._size[index])
        blob = self._blobs[shard]
        if blob is not None:
            return blob[offset : offset + size]
        try:
            data = os.pread(self._fd(shard), size, offset)
        except OSError as exc:
            raise DataError(f"cannot read {self._member_path(index)!r}: {exc}") from exc
        if len(data) != size:
            raise DataError(f"{self._member_path(index)!r} is truncated")
        return data

    def _member_path(self, index: int) -> str:
        return f"{self.shard_paths[int(self._shard[index])]}/{self._members[index]}"

    def read(self, index: int) -> np.ndarray:
        """Decode image ``index``; unreadable bytes raise DataError naming the member."""
        return decode_image(self.read_bytes(index), self._member_path(index))

    def name(self, index: int) -> str:
        """``SHARD_FILE_NAME/KEY``, e.g. ``train-0.tar.gz/000123``."""
        return f"{self._shard_names[int(self._shard[index])]}/{self._keys[index]}"

    def close(self) -> None:
        """Close the file descriptors this process opened."""
        if getattr(self, "_pid", None) == os.getpid():
            self._close_fds()
        self._fds = OrderedDict()

    def _close_fds(self) -> None:
        """Close every descriptor in ``_fds`` (one already closed is skipped) and forget them."""
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()
        state["_pid"] = -1
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass


def pacs_source(
    root: str,
    domains: Sequence[str] | None = None,
    *,
    image_size: int | None = None,
) -> WebDatasetSource:
    """PACS stored as one ``DOMAIN.tar`` per domain plus ``classes.txt``.

    Args:
        root: Directory of the domain shards.
        domains: Domains to load; domain ids follow this order. Default: the
            PACS order (photo, art_painting, cartoon, sketch) of those present,
            then any other shard in name order.
        image_size: Output side.

    Raises:
        DataError: Missing root or domain shard (the message lists the ones
            present), or any shard error of :class:`WebDatasetSource`.
    """
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise DataError(f"PACS directory not found: {root!r}")
    present: dict[str, str] = {}
    for file in sorted(os.listdir(root)):
        for suffix in (".tar", ".tar.gz", ".tgz"):
            if file.endswith(suffix):
                present.setdefault(file[: -len(suffix)], os.path.join(root, file))
    if not present:
        raise DataError(f"PACS directory {root!r} holds no DOMAIN.tar shards")
    if domains is None:
        domains = [d for d in PACS_DOMAINS if d in present]
        domains += [d for d in present if d not in PACS_DOMAINS]
    missing = [d for d in domains if d not in present]
    if missing:
        raise DataError(f"PACS domain(s) {missing} not found in {root!r} (present: {sorted(present)})")
    return WebDatasetSource([present[d] for d in domains], image_size=image_size, shard_domains=list(domains))
