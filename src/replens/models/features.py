"""Stream representations of a data source to disk, resumably, and read them back.

Directory format (``out_dir``)::

    meta.json                 written atomically after every chunk; see below
    chunk-00000.npy           (n_k, dim) float32 or float16 features
    chunk-00000.labels.npy    (n_k,) int64
    chunk-00000.domains.npy   (n_k,) int64
    chunk-00000.index.npy     (n_k,) int64 sample index in the source
    chunk-00000.names.json    list of n_k sample names
    chunk-00001.npy ...

Chunk ``k`` holds the readable samples among source positions
``[k * chunk_size, (k + 1) * chunk_size)`` (unreadable images are skipped and
listed in ``meta["chunks"][k]["bad"]``). Every file is written to a temporary
name and moved into place with ``os.replace``, and a chunk counts as finished
only once ``meta.json`` lists it, so an interrupted run leaves a consistent
prefix of chunks; running :func:`extract_features` again with the same
arguments skips those chunks and starts the loader at the next source index
(a ``Subset``).

``meta.json`` keys: ``format`` ("replens-embeddings"), ``version``,
``complete`` (bool), ``model``, ``layer`` (None: the backbone's representation),
``normalize``, ``token_pool``, ``dtype``, ``dim``, ``count`` (rows over all
chunks), ``num_samples`` (source length), ``chunk_size``, ``source`` (the
source's spec string when known), ``classes``,
``domain_names``, ``chunks`` (list of ``{"file", "start", "stop", "count",
"bad"}``) and ``bad`` (all skipped sample names, when complete).

Pooling of layer outputs: (B, C, H, W) maps are global-average-pooled over
H, W (convolutional layout is assumed: channels-last 4-D outputs, e.g. timm
Swin stages, are not supported); (B, N, D) tokens are pooled with
``token_pool="mean"`` (mean over the patch tokens, i.e. after the backbone's
``num_prefix_tokens`` class/register tokens) or ``token_pool="cls"`` (token 0);
(B, D) outputs are kept. ``normalize=True`` L2-normalises each pooled row
(FALCON normalises representations per sample).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from replens.data.base import BadImageGuard, collate_samples, iterate_batches
from replens.models.backbone import Backbone
from replens.runs import atomic_write

__all__ = [
    "Embeddings",
    "EmbeddingsError",
    "extract_features",
    "load_embeddings",
    "pool_features",
]

FORMAT = "replens-embeddings"
VERSION = 1
TokenPool = Literal["mean", "cls"]
_DTYPES = {"float32": np.float32, "float16": np.float16}
# arguments that must match for a resume to continue an existing directory
_RESUME_KEYS = ("model", "weights_sha256", "source", "image_size", "layer", "normalize", "token_pool", "dtype",
                "chunk_size", "num_samples")


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes): which weights made a result."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class EmbeddingsError(RuntimeError):
    """An embeddings directory is incomplete, corrupt or from different arguments."""


@dataclass
class Embeddings:
    """Features of a source with their sample metadata.

    Attributes:
        features: (N, D) float32/float16 array (a memory map when the directory
            has a single chunk and ``mmap=True``).
        labels: (N,) int64 class indices (-1 unknown).
        domains: (N,) int64 domain indices.
        index: (N,) int64 sample indices in the source.
        names: N sample names.
        meta: The directory's ``meta.json``.
    """

    features: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    index: np.ndarray
    names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(self.features.shape[1])

    @property
    def classes(self) -> list[str]:
        """Class names of the source."""
        return list(self.meta.get("classes", []))

    @property
    def domain_names(self) -> list[str]:
        """Domain names of the source."""
        return list(self.meta.get("domain_names", []))


def pool_features(output: torch.Tensor, *, token_pool: TokenPool = "mean", num_prefix_tokens: int = 0) -> torch.Tensor:
    """Pool a layer output to one vector per sample.

    Args:
        output: (B, C, H, W) map, (B, N, D) tokens or (B, D) vectors.
        token_pool: ``"mean"`` over the patch tokens or ``"cls"`` (token 0).
        num_prefix_tokens: Leading class/register tokens excluded from the mean.

    Returns:
        (B, C) or (B, D) tensor.

    Shape:
        - Input: (B, C, H, W), (B, N, D) or (B, D)
        - Output: (B, C) or (B, D)
    """
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        if token_pool == "cls":
            if num_prefix_tokens < 1:
                raise ValueError("token_pool='cls' needs a backbone with a class token")
            return output[:, 0]
        if token_pool != "mean":
            raise ValueError(f"token_pool must be 'mean' or 'cls', got {token_pool!r}")
        tokens = output[:, num_prefix_tokens:] if output.shape[1] > num_prefix_tokens else output
        return tokens.mean(dim=1)
    if output.ndim == 2:
        return output
    raise ValueError(f"cannot pool a layer output of shape {tuple(output.shape)}")


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    atomic_write(path, write)


def _save_json(path: Path, obj: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=1)

    atomic_write(path, write)


def _chunk_stem(k: int) -> str:
    return f"chunk-{k:05d}"


def _chunk_ok(out_dir: Path, entry: dict[str, Any], dim: int | None, dtype: str) -> bool:
    """Whether a chunk listed in meta.json is fully on disk with the right shape."""
    stem = out_dir / entry["file"]
    try:
        feats = np.load(f"{stem}.npy", mmap_mode="r", allow_pickle=False)
        if feats.ndim != 2 or feats.shape[0] != entry["count"] or feats.dtype != _DTYPES[dtype]:
            return False
        if dim is not None and feats.shape[1] != dim:
            return False
        for part in ("labels", "domains", "index"):
            arr = np.load(f"{stem}.{part}.npy", mmap_mode="r", allow_pickle=False)
            if arr.shape != (entry["count"],):
                return False
        with open(f"{stem}.names.json", encoding="utf-8") as handle:
            return len(json.load(handle)) == entry["count"]
    except (OSError, ValueError):
        return False


def _read_meta(meta_path: Path, unreadable: Callable[[Exception], str], foreign: str) -> dict[str, Any]:
    """The ``meta.json`` at ``meta_path``, checked to be an embeddings manifest.

    Raises:
        EmbeddingsError: ``unreadable(exc)`` when it cannot be read or parsed,
            ``foreign`` when its format is not :data:`FORMAT`.
    """
    try:
        with meta_path.open(encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError) as exc:
        raise EmbeddingsError(unreadable(exc)) from None
    if meta.get("format") != FORMAT:
        raise EmbeddingsError(foreign)
    return meta


def _init_meta(out_dir: Path, wanted: dict[str, Any], source: Dataset, overwrite: bool) -> dict[str, Any]:
    """Load a resumable meta.json matching ``wanted`` or start a fresh one."""
    meta_path = out_dir / "meta.json"
    meta: dict[str, Any] | None = None
    if meta_path.is_file() and not overwrite:
        meta = _read_meta(
            meta_path,
            lambda exc: f"{meta_path} is unreadable ({exc}); pass overwrite=True",
            f"{out_dir} is not a replens embeddings directory",
        )
        differ = {k: (meta.get(k), wanted[k]) for k in _RESUME_KEYS if meta.get(k) != wanted[k]}
        if differ:
            shown = ", ".join(f"{k}: on disk {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise EmbeddingsError(
                f"{out_dir} holds embeddings made with other arguments ({shown}); use another out_dir or overwrite=True"
            )
        # keep the longest valid prefix of finished chunks
        valid = []
        for k, entry in enumerate(meta.get("chunks", [])):
            if entry.get("file") != _chunk_stem(k) or not _chunk_ok(out_dir, entry, meta.get("dim"), meta["dtype"]):
                break
            valid.append(entry)
        if len(valid) < len(meta.get("chunks", [])):
            meta["complete"] = False  # a damaged chunk: recompute it and the ones after
        meta["chunks"] = valid
        return meta
    if overwrite:
        for path in out_dir.glob("chunk-*"):
            path.unlink()
        meta_path.unlink(missing_ok=True)
    return {
        "format": FORMAT,
        "version": VERSION,
        "complete": False,
        **wanted,
        "dim": None,
        "count": 0,
        "classes": list(getattr(source, "classes", []) or []),
        "domain_names": list(getattr(source, "domain_names", []) or []),
        "chunks": [],
    }


def _wanted(
    backbone: Backbone, source: Dataset, layer: str | None, normalize: bool, token_pool: TokenPool, dtype: str,
    chunk_size: int,
) -> dict[str, Any]:
    """The arguments recorded in ``meta.json`` (the :data:`_RESUME_KEYS` a resume must match)."""
    return {
        "model": getattr(backbone, "name", type(backbone).__name__),
        "weights_sha256": state_digest(backbone),
        "source": getattr(source, "spec", None),
        "image_size": getattr(source, "image_size", None),
        "layer": layer,
        "normalize": bool(normalize),
        "token_pool": token_pool,
        "dtype": dtype,
        "chunk_size": int(chunk_size),
        "num_samples": int(len(source)),  # type: ignore[arg-type]
    }


@dataclass
class _ChunkRows:
    """The rows of one chunk as its batches come in."""

    features: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    domains: list[np.ndarray] = field(default_factory=list)
    index: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add(self, features: np.ndarray, batch: dict[str, Any]) -> None:
        self.features.append(features)
        self.labels.append(batch["label"].numpy())
        self.domains.append(batch["domain"].numpy())
        self.index.append(batch["index"].numpy())
        self.names.extend(batch["name"])


def _embed_rows(
    loader: DataLoader, guard: BadImageGuard, embed: Callable[[torch.Tensor], np.ndarray], bar: tqdm
) -> _ChunkRows:
    """Embed every readable sample of ``loader`` (unreadable ones are counted by ``guard``), advancing ``bar``."""
    rows = _ChunkRows()
    seen_before = guard.seen
    for batch in iterate_batches(loader, guard):
        rows.add(embed(batch["image"]), batch)
        bar.update(guard.seen - seen_before)
        seen_before = guard.seen
    bar.update(guard.seen - seen_before)
    return rows


def _store_chunk(
    out_dir: Path, meta: dict[str, Any], k: int, stop: int, rows: _ChunkRows, bad: list[str],
    probe_dim: Callable[[], int],
) -> None:
    """Write chunk ``k`` and list it in ``meta.json`` (which makes it count as finished)."""
    dim = meta["dim"] if meta["dim"] is not None else (rows.features[0].shape[1] if rows.features else None)
    if dim is None:  # every image of the first chunks was unreadable: find the size
        dim = probe_dim()
    meta["dim"] = int(dim)
    features = np.concatenate(rows.features) if rows.features else np.zeros((0, dim), _DTYPES[meta["dtype"]])
    _write_chunk(out_dir, k, features, _cat(rows.labels), _cat(rows.domains), _cat(rows.index), rows.names)
    meta["chunks"].append(
        {"file": _chunk_stem(k), "start": k * meta["chunk_size"], "stop": stop, "count": len(rows.names), "bad": bad}
    )
    meta["count"] = sum(c["count"] for c in meta["chunks"])
    _save_json(out_dir / "meta.json", meta)


def _extract_chunks(
    backbone: Backbone, source: Dataset, out_dir: Path, meta: dict[str, Any], *, batch_size: int, device: torch.device,
    num_workers: int, progress: bool,
) -> None:
    """Embed and store the chunks ``meta`` does not list yet; the backbone runs in eval mode meanwhile.

    The layer, pooling, dtype and sizes are read from ``meta``, which records the call's arguments
    (:func:`_init_meta` refuses a directory whose recorded ones differ).
    """
    layer, chunk_size, num_samples = meta["layer"], meta["chunk_size"], meta["num_samples"]
    start = len(meta["chunks"]) * chunk_size
    was_training = backbone.training
    backbone.to(device).eval()

    def embed(images: torch.Tensor) -> np.ndarray:
        feats = _embed(backbone, images, layer, meta["normalize"], meta["token_pool"])
        return feats.astype(_DTYPES[meta["dtype"]], copy=False)

    # the source's tolerance (the max_bad= spec option), shared by all chunks
    guard = BadImageGuard(max_bad_fraction=float(getattr(source, "max_bad_fraction", BadImageGuard.max_bad_fraction)))
    bar = tqdm(total=num_samples, initial=min(start, num_samples), unit="img",
               desc=f"features {meta['model']}" + (f"[{layer}]" if layer else ""), disable=not progress)
    try:
        for k in range(len(meta["chunks"]), math.ceil(num_samples / chunk_size)):
            stop = min((k + 1) * chunk_size, num_samples)
            loader = DataLoader(
                Subset(source, range(k * chunk_size, stop)), batch_size=batch_size, shuffle=False,
                collate_fn=collate_samples, num_workers=num_workers, pin_memory=device.type == "cuda",
            )
            bad_before = len(guard.bad_names)
            rows = _embed_rows(loader, guard, embed, bar)
            _store_chunk(out_dir, meta, k, stop, rows, guard.bad_names[bad_before:],
                         lambda: _probe_dim(backbone, source, layer, meta["token_pool"]))
    finally:
        bar.close()
        backbone.train(was_training)


def extract_features(
    backbone: Backbone,
    source: Dataset,
    out_dir: str | Path,
    *,
    layer: str | None = None,
    normalize: bool = False,
    token_pool: TokenPool = "mean",
    dtype: Literal["float32", "float16"] = "float32",
    batch_size: int = 256,
    chunk_size: int = 4096,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Compute pooled representations of every readable sample and stream them to disk.

    Memory stays bounded by one chunk of features. The backbone is moved to
    ``device`` and put in eval mode for the run (its training flag is restored
    afterwards); inference runs under ``torch.inference_mode()``.

    Args:
        backbone: The encoder (its ``preprocess`` normalises the uint8 images).
        source: A map-style dataset following :mod:`replens.data.base`'s sample
            protocol (e.g. an :class:`~replens.data.base.ImageSource`).
        out_dir: Output directory (created). See the module docstring for its format.
        layer: A layer name (see ``backbone.layer_names()``) or ``None`` for the
            backbone's representation (``forward``).
        normalize: L2-normalise each row.
        token_pool: Pooling of (B, N, D) token outputs: ``"mean"`` or ``"cls"``.
        dtype: Storage dtype, ``"float32"`` or ``"float16"``.
        batch_size: Images per forward pass.
        chunk_size: Source positions per chunk file.
        device: Where the forward runs.
        num_workers: DataLoader worker processes.
        progress: Show a tqdm bar.
        overwrite: Delete an existing directory's chunks instead of resuming.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        EmbeddingsError: ``out_dir`` holds embeddings made with other arguments.
        replens.data.base.DataError: Too many unreadable images.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = _init_meta(out_dir, _wanted(backbone, source, layer, normalize, token_pool, dtype, chunk_size), source,
                      overwrite)
    if meta.get("complete"):
        return out_dir
    meta["complete"] = False
    _extract_chunks(backbone, source, out_dir, meta, batch_size=batch_size, device=torch.device(device),
                    num_workers=num_workers, progress=progress)
    if meta["dim"] is None:  # empty source
        meta["dim"] = _probe_dim(backbone, source, layer, token_pool) if meta["num_samples"] else backbone.feature_dim
    meta["bad"] = [name for c in meta["chunks"] for name in c["bad"]]
    meta["complete"] = True
    _save_json(out_dir / "meta.json", meta)
    return out_dir


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)


def _embed(
    backbone: Backbone, images: torch.Tensor, layer: str | None, normalize: bool, token_pool: TokenPool
) -> np.ndarray:
    with torch.inference_mode():
        x = backbone.preprocess(images)
        out = backbone(x) if layer is None else backbone.forward_layers(x, [layer])[layer]
        feats = pool_features(out, token_pool=token_pool, num_prefix_tokens=backbone.num_prefix_tokens)
        feats = feats.float()
        if normalize:
            feats = F.normalize(feats, dim=1)
        return feats.cpu().numpy()


def _probe_dim(backbone: Backbone, source: Dataset, layer: str | None, token_pool: TokenPool) -> int:
    if layer is None:
        return backbone.feature_dim
    size = backbone.input_size or 32
    probe = torch.zeros((1, 3, size, size), dtype=torch.uint8)
    return int(_embed(backbone, probe, layer, False, token_pool).shape[1])


def _write_chunk(
    out_dir: Path,
    k: int,
    features: np.ndarray,
    labels: np.ndarray,
    domains: np.ndarray,
    index: np.ndarray,
    names: list[str],
) -> None:
    stem = out_dir / _chunk_stem(k)
    _save_npy(Path(f"{stem}.npy"), np.ascontiguousarray(features))
    _save_npy(Path(f"{stem}.labels.npy"), labels)
    _save_npy(Path(f"{stem}.domains.npy"), domains)
    _save_npy(Path(f"{stem}.index.npy"), index)
    _save_json(Path(f"{stem}.names.json"), names)


def load_embeddings(out_dir: str | Path, mmap: bool = True) -> Embeddings:
    """Read a directory written by :func:`extract_features`.

    Args:
        out_dir: The directory.
        mmap: Memory-map the chunk files. With one chunk the returned features
            are the memory map itself; with several they are concatenated into
            one in-memory array (read once from the maps).

    Returns:
        The :class:`Embeddings`, rows in source order.

    Raises:
        EmbeddingsError: Missing or unreadable ``meta.json``, an unfinished run
            (resume it by calling :func:`extract_features` again), or a chunk
            file that is missing, truncated or of the wrong shape.
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise EmbeddingsError(f"{out_dir} has no meta.json: not an embeddings directory")
    meta = _read_meta(
        meta_path, lambda exc: f"{meta_path} is unreadable: {exc}", f"{meta_path} is not a replens embeddings manifest"
    )
    chunks = meta.get("chunks", [])
    expected = math.ceil(meta["num_samples"] / meta["chunk_size"]) if meta["chunk_size"] else 0
    if not meta.get("complete"):
        raise EmbeddingsError(
            f"{out_dir} is incomplete: {len(chunks)} of {expected} chunks finished; run "
            "extract_features again with the same arguments to resume"
        )
    if len(chunks) != expected:
        raise EmbeddingsError(f"{out_dir} lists {len(chunks)} chunks but needs {expected}")
    dim, dtype = int(meta["dim"]), _DTYPES[meta["dtype"]]
    mode = "r" if mmap else None
    feats, labels, domains, index, names = [], [], [], [], []
    for entry in chunks:
        stem = out_dir / entry["file"]
        count = int(entry["count"])
        try:
            f = np.load(f"{stem}.npy", mmap_mode=mode, allow_pickle=False)
            parts = [
                np.load(f"{stem}.{p}.npy", mmap_mode=mode, allow_pickle=False) for p in ("labels", "domains", "index")
            ]
            with open(f"{stem}.names.json", encoding="utf-8") as handle:
                chunk_names = json.load(handle)
        except (OSError, ValueError) as exc:
            raise EmbeddingsError(f"chunk {entry['file']} in {out_dir} is missing or corrupt: {exc}") from None
        if f.shape != (count, dim) or f.dtype != dtype:
            raise EmbeddingsError(
                f"{stem}.npy has shape {f.shape} {f.dtype}, expected ({count}, {dim}) {dtype.__name__}"
            )
        if any(p.shape != (count,) for p in parts) or len(chunk_names) != count:
            raise EmbeddingsError(f"chunk {entry['file']} in {out_dir} has arrays of inconsistent length")
        feats.append(f)
        labels.append(parts[0])
        domains.append(parts[1])
        index.append(parts[2])
        names.extend(chunk_names)
    if len(feats) == 1:
        features, lab, dom, idx = feats[0], labels[0], domains[0], index[0]
    elif feats:
        features = np.concatenate(feats)
        lab, dom, idx = np.concatenate(labels), np.concatenate(domains), np.concatenate(index)
    else:
        features = np.zeros((0, dim), dtype)
        lab = dom = idx = np.zeros(0, np.int64)
    return Embeddings(features=features, labels=lab, domains=dom, index=idx, names=names, meta=meta)
