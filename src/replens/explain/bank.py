"""Caption banks: the text dataset ``S`` of FALCON (paper section 4.2.1) and its search.

A bank is a folder of float16 text-embedding shards plus their captions::

    bank.json                {"format": "replens-caption-bank", "version": 1, "dim": k,
                              "count": M, "model": <VL fingerprint>, "shards": [
                               {"embeddings": "emb-00000.npy", "captions": "captions-00000.txt",
                                "count": n}, ...], "faiss": {...} (optional)}
    emb-00000.npy            (n, k) float16, L2-normalised rows
    captions-00000.txt       n lines, one caption per line

Shards may also live elsewhere (absolute paths in ``bank.json``): that is how
precomputed LAION text embeddings (``text_emb_*.npy``, paper section 4.2.1:
"LAION also provides pre-computed text embeddings") are used in place by
:func:`import_embedding_shards`.

Captioning (:meth:`CaptionBank.search`) scores every caption of the bank for
every image by ``softmax(logit_scale * image @ text)`` over **all** ``M``
captions and keeps the top ``k`` (5 in the paper). The authors' code applies
the softmax per shard and merges per-shard top-5 lists, which makes the
probabilities depend on how the bank is sharded; we stream over the shards
once with a running log-sum-exp, so the result is the exact global softmax
whatever the sharding (a documented departure from their code).

An optional faiss index (:meth:`CaptionBank.build_faiss_index`) gives
approximate search: it retrieves the ``candidates`` nearest captions and
normalises the softmax over those alone; its recall against the exact search
is measured when the index is built and stored in ``bank.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.hub import fetch_url, replens_cache_dir
from replens.runs import atomic_write, atomic_write_json, atomic_write_text
from replens.world.vocab import (
    BACKGROUNDS,
    COLOURLESS_DOMAINS,
    COLOURS,
    DOMAIN_NOUN,
    MARKERS,
    PATTERNS,
    RELATIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    article,
)

__all__ = [
    "BANK_FORMAT",
    "BankError",
    "CaptionBank",
    "SearchResult",
    "build_bank",
    "default_world_bank",
    "fetch_laion400m_bank",
    "import_embedding_shards",
    "open_bank",
    "read_caption_file",
    "world_caption_texts",
]

BANK_FORMAT = "replens-caption-bank"
BANK_VERSION = 1


class BankError(ValueError):
    """A caption bank is missing, malformed or does not match its model."""


@dataclass
class SearchResult:
    """Top-k captions per query.

    Attributes:
        probs: (B, k) ``softmax(logit_scale * image @ text)`` of each kept
            caption, normalised over the whole bank (the CLIP confidence
            ``C_{q,p}`` of Eq. 4.1).
        indices: (B, k) caption indices in the bank, best first.
        similarity: (B, k) cosine similarities.
        log_normalizer: (B,) log-sum-exp of the logits over the whole bank
            (over the retrieved candidates for approximate search).
    """

    probs: torch.Tensor
    indices: torch.Tensor
    similarity: torch.Tensor
    log_normalizer: torch.Tensor


class _StreamState:
    """Running top-k and softmax normaliser of logits that arrive in column chunks.

    Written here because neither torch nor faiss returns a top-k together with
    the softmax normaliser of a matrix too large to materialise. Per chunk and
    block of queries: one GEMM with the running per-row maximum subtracted
    inside it (``addmm``), a top-k, and an in-place clamp + exp + sum, so the
    matmul dominates the cost. The clamp at -80 keeps ``exp`` out of float32
    denormals (which are very slow on CPUs); terms that small change the
    normaliser by less than 1e-30 relative.
    """

    _FLOOR = -80.0
    _RESHIFT = 60.0

    def __init__(self, rows: int, k: int, device: str | torch.device) -> None:
        self.k = k
        self.top_logits = torch.full((rows, k), -torch.inf, device=device)
        self.top_index = torch.full((rows, k), -1, dtype=torch.long, device=device)
        self.shift = torch.full((rows,), -torch.inf, device=device)
        self.total = torch.zeros(rows, device=device)
        self._buffers: dict[tuple[int, int], torch.Tensor] = {}

    def _buffer(self, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        key = (rows, cols)
        if key not in self._buffers:
            self._buffers = {key: torch.empty(rows, cols, device=device)}  # keep one: shapes repeat
        return self._buffers[key]

    def fold(self, scaled: torch.Tensor, emb: torch.Tensor, offset: int, query_block: int) -> None:
        """Fold the logits ``scaled @ emb.T`` (captions ``offset..offset+n``) into the state."""
        et = emb.T
        k = min(self.k, emb.shape[0])
        for lo in range(0, scaled.shape[0], query_block):
            rows = slice(lo, lo + query_block)
            q = scaled[rows]
            buf = self._buffer(q.shape[0], emb.shape[0], q.device)
            shift = self.shift[rows]
            top_logits, top_index = self.top_logits[rows], self.top_index[rows]
            if not bool(torch.isfinite(shift).all()):  # first chunk: shift by the chunk's own maximum
                torch.mm(q, et, out=buf)
                used = buf.amax(dim=1)
                buf.sub_(used[:, None])
                need = torch.arange(q.shape[0], device=q.device)
                new_shift, old_total = used, torch.zeros_like(used)
            else:  # buf = logits - running maximum, the subtraction fused into the GEMM
                torch.addmm(shift[:, None], q, et, beta=-1.0, out=buf)
                chunk_max = buf.amax(dim=1)
                # only rows whose chunk maximum beats their k-th best need a top-k
                need = torch.nonzero(chunk_max + shift > top_logits[:, -1]).flatten()
                jump = chunk_max.clamp(min=0.0)
                used = shift
                if bool((jump > self._RESHIFT).any()):
                    buf.sub_(jump[:, None])
                    used = shift + jump
                new_shift = torch.maximum(shift, shift + jump)
                old_total = self.total[rows] * torch.exp(shift - new_shift)
            if need.numel():
                vals, idx = buf[need].topk(k, dim=1)
                vals = vals + used[need, None]
                merged_vals = torch.cat([top_logits[need], vals], dim=1)
                merged_idx = torch.cat([top_index[need], idx + offset], dim=1)
                top, order = merged_vals.topk(self.k, dim=1)
                top_logits[need] = top
                top_index[need] = merged_idx.gather(1, order)
            chunk_sum = buf.clamp_(min=self._FLOOR).exp_().sum(dim=1)
            self.total[rows] = old_total + chunk_sum * torch.exp(used - new_shift)
            self.shift[rows] = new_shift

    def log_normalizer(self) -> torch.Tensor:
        """``log sum_j exp(logit_j)`` per row over everything folded."""
        return self.shift + self.total.log()


def _as_float_tensor(rows: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """A float32 tensor of (memory-mapped, read-only) rows; only ever read, so no copy is made first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about non-writable numpy arrays
        tensor = torch.from_numpy(np.ascontiguousarray(rows))
    return tensor.to(device=device, dtype=torch.float32)


def _write_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    atomic_write(path, write)


def _clean_caption(text: str) -> str:
    return " ".join(str(text).split())


class CaptionBank:
    """A caption bank on disk (see the module docstring for the layout).

    Args:
        root: The bank folder (holding ``bank.json``).

    Raises:
        BankError: Missing or malformed ``bank.json`` or shard files.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / "bank.json"
        if not manifest_path.is_file():
            raise BankError(
                f"no caption bank at {self.root} (missing bank.json); build one with `replens captions build`"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BankError(f"{manifest_path}: invalid JSON ({exc})") from None
        if self.manifest.get("format") != BANK_FORMAT:
            raise BankError(f"{manifest_path}: format is {self.manifest.get('format')!r}, expected {BANK_FORMAT!r}")
        for key in ("dim", "count", "shards"):
            if key not in self.manifest:
                raise BankError(f"{manifest_path}: missing key {key!r}")
        self.dim = int(self.manifest["dim"])
        self.count = int(self.manifest["count"])
        self._shards: list[dict[str, Any]] = list(self.manifest["shards"])
        counts = [int(s["count"]) for s in self._shards]
        if sum(counts) != self.count:
            raise BankError(f"{manifest_path}: shard counts sum to {sum(counts)}, not count={self.count}")
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._embeddings: dict[int, np.ndarray] = {}
        self._captions: dict[int, list[str]] = {}

    # ------------------------------------------------------------------ access
    @property
    def model(self) -> str | None:
        """Fingerprint of the VL model whose text encoder made the embeddings."""
        return self.manifest.get("model")

    def __len__(self) -> int:
        return self.count

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def shard_embeddings(self, k: int) -> np.ndarray:
        """Shard ``k``'s (n, dim) embeddings, memory-mapped."""
        if k not in self._embeddings:
            entry = self._shards[k]
            path = self._path(entry["embeddings"])
            if not path.is_file():
                raise BankError(f"caption bank {self.root}: shard file missing: {path}")
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.ndim != 2 or array.shape != (int(entry["count"]), self.dim):
                raise BankError(
                    f"caption bank {self.root}: {path} has shape {array.shape}, expected ({entry['count']}, {self.dim})"
                )
            self._embeddings[k] = array
        return self._embeddings[k]

    def shard_captions(self, k: int) -> list[str]:
        """Shard ``k``'s captions."""
        if k not in self._captions:
            entry = self._shards[k]
            path = self._path(entry["captions"])
            if not path.is_file():
                raise BankError(f"caption bank {self.root}: captions file missing: {path}")
            lines = path.read_text(encoding="utf-8").split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            if len(lines) != int(entry["count"]):
                raise BankError(f"caption bank {self.root}: {path} has {len(lines)} lines, expected {entry['count']}")
            self._captions[k] = lines
        return self._captions[k]

    def captions(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> list[str]:
        """Captions at global indices."""
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.count):
            raise IndexError(f"caption index out of range [0, {self.count})")
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        return [self.shard_captions(int(s))[int(i - self.starts[s])] for s, i in zip(shard, flat, strict=True)]

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(global start, embeddings)`` of every shard, in order."""
        for k in range(len(self._shards)):
            yield int(self.starts[k]), self.shard_embeddings(k)

    def embeddings(self) -> np.ndarray:
        """All embeddings as one float16 (M, dim) array in memory (small banks only)."""
        return (
            np.concatenate([np.asarray(e) for _, e in self.iter_shards()])
            if self._shards
            else np.zeros((0, self.dim), np.float16)
        )

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: torch.Tensor | np.ndarray,
        k: int = 5,
        *,
        logit_scale: float = 100.0,
        chunk_rows: int = 65536,
        query_block: int = 1024,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> SearchResult:
        """Exact top-``k`` captions with one global softmax over the bank.

        Streams over the shards in chunks of ``chunk_rows`` captions: each chunk
        (converted to float32) is multiplied with blocks of the pre-scaled
        queries, and the logits are folded into a running log-sum-exp and a
        running top-``k`` (see :class:`_StreamState`).

        Args:
            queries: (B, dim) image embeddings (L2-normalised here).
            k: Captions per query.
            logit_scale: The softmax multiplier (100 in the authors' code, CLIP's scale).
            chunk_rows: Captions per matmul.
            query_block: Queries per matmul (blocks keep the logits cache-sized).
            device: Where to compute.
            progress: Show a tqdm bar over shards.

        Returns:
            The :class:`SearchResult`.
        """
        from tqdm.auto import tqdm

        q = torch.as_tensor(np.asarray(queries) if not isinstance(queries, torch.Tensor) else queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise BankError(f"queries must be (B, {self.dim}) for bank {self.root}, got {tuple(q.shape)}")
        if self.count == 0:
            raise BankError(f"caption bank {self.root} is empty")
        k = min(k, self.count)
        q = torch.nn.functional.normalize(q.float(), dim=1).to(device)
        scaled = q * float(logit_scale)
        state = _StreamState(len(q), k, device)
        for start, shard in tqdm(
            self.iter_shards(), total=len(self._shards), desc="caption search", disable=not progress, leave=False
        ):
            for lo in range(0, shard.shape[0], chunk_rows):
                state.fold(scaled, _as_float_tensor(shard[lo : lo + chunk_rows], device), start + lo, query_block)
        top_logits, top_index, lse = state.top_logits, state.top_index, state.log_normalizer()
        probs = (top_logits - lse[:, None]).exp()
        return SearchResult(
            probs=probs.cpu(),
            indices=top_index.cpu(),
            similarity=(top_logits / float(logit_scale)).cpu(),
            log_normalizer=lse.cpu(),
        )

    def caption_images(
        self, queries: torch.Tensor | np.ndarray, k: int = 5, *, logit_scale: float = 100.0, **kwargs: Any
    ) -> tuple[list[list[str]], list[list[float]]]:
        """Top-``k`` captions and their probabilities per image (exact search)."""
        result = self.search(queries, k, logit_scale=logit_scale, **kwargs)
        captions = self.captions(result.indices)
        per = result.indices.shape[1]
        return (
            [captions[i * per : (i + 1) * per] for i in range(result.indices.shape[0])],
            result.probs.tolist(),
        )

    # ------------------------------------------------------------------ faiss
    def build_faiss_index(
        self,
        kind: str = "ivf",
        *,
        nlist: int | None = None,
        nprobe: int = 8,
        hnsw_m: int = 32,
        recall_queries: int = 200,
        candidates: int = 64,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Build an approximate inner-product index, measure its recall, save it.

        Args:
            kind: ``"ivf"`` (IVF-Flat, inner product), ``"hnsw"`` or ``"flat"``
                (``IndexFlatIP``: exact top-k, only the softmax is truncated).
            nlist: IVF lists (default ``4 * sqrt(M)``).
            nprobe: IVF lists visited per query.
            hnsw_m: HNSW graph degree.
            recall_queries: Random bank rows, perturbed, used as queries to
                measure recall@5 against :meth:`search`.
            candidates: Neighbours retrieved per query by :meth:`approximate_search`.
            seed: Seed of training sample and recall queries.

        Returns:
            The ``faiss`` entry written to ``bank.json`` (``kind``, ``file``,
            ``nprobe``, ``candidates``, ``recall_at_5``, ``prob_abs_error``, ``build_seconds``).
        """
        import faiss

        t0 = time.perf_counter()
        data = self.embeddings().astype(np.float32)
        rng = np.random.default_rng(seed)
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * np.sqrt(self.count)))
            nlist = min(nlist, max(1, self.count // 39))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = data[rng.choice(self.count, size=min(self.count, 256 * nlist), replace=False)]
            index.train(sample)
            index.nprobe = nprobe
        else:
            raise ValueError(f"unknown faiss index kind {kind!r}; choose ivf, hnsw or flat")
        index.add(data)
        build_seconds = time.perf_counter() - t0
        file = "faiss.index"
        atomic_write(self.root / file, lambda tmp: faiss.write_index(index, str(tmp)))
        # recall: perturbed bank rows stand in for image embeddings near some captions
        picks = rng.choice(self.count, size=min(recall_queries, self.count), replace=False)
        queries = data[picks] + rng.normal(scale=0.5 / np.sqrt(self.dim), size=(len(picks), self.dim)).astype(
            np.float32
        )
        self.manifest["faiss"] = {"kind": kind, "file": file, "nprobe": nprobe, "candidates": candidates}
        self._faiss = index
        exact = self.search(torch.from_numpy(queries), 5)
        approx = self.approximate_search(torch.from_numpy(queries), 5)
        hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx.indices, exact.indices, strict=True)]
        entry = {
            "kind": kind,
            "file": file,
            "nprobe": nprobe,
            "candidates": candidates,
            "recall_at_5": float(np.mean(hits) / 5.0),
            "prob_abs_error": float((approx.probs[:, 0] - exact.probs[:, 0]).abs().mean()),
            "build_seconds": build_seconds,
            "recall_queries": len(picks),
        }
        self.manifest["faiss"] = entry
        atomic_write_json(self.root / "bank.json", self.manifest)
        return entry

    def approximate_search(
        self, queries: torch.Tensor | np.ndarray, k: int = 5, *, logit_scale: float = 100.0
    ) -> SearchResult:
        """Top-``k`` captions from the faiss index; the softmax is normalised over the retrieved candidates.

        Raises:
            BankError: The bank has no faiss index (:meth:`build_faiss_index`).
        """
        import faiss

        entry = self.manifest.get("faiss")
        if not entry:
            raise BankError(f"caption bank {self.root} has no faiss index; build one with `replens captions index`")
        index = getattr(self, "_faiss", None)
        if index is None:
            path = self._path(entry["file"])
            if not path.is_file():
                raise BankError(f"caption bank {self.root}: faiss index file missing: {path}")
            index = faiss.read_index(str(path))
            if hasattr(index, "nprobe"):
                index.nprobe = int(entry.get("nprobe", 8))
            self._faiss = index
        q = torch.nn.functional.normalize(torch.as_tensor(np.asarray(queries)).float(), dim=1).numpy()
        cand = max(k, int(entry.get("candidates", 64)))
        sims, idx = index.search(np.ascontiguousarray(q), cand)
        sims_t = torch.from_numpy(sims)
        idx_t = torch.from_numpy(idx).long()
        valid = idx_t >= 0
        logits = torch.where(valid, sims_t * float(logit_scale), torch.full_like(sims_t, -torch.inf))
        lse = torch.logsumexp(logits, dim=1)
        top, order = logits.topk(k, dim=1)
        return SearchResult(
            probs=(top - lse[:, None]).exp(),
            indices=idx_t.gather(1, order),
            similarity=top / float(logit_scale),
            log_normalizer=lse,
        )


#: LAION-400M's published text embeddings (open_clip ViT-B-32:openai) and their captions, one pair per shard.
LAION400M_TEXT_URL = "https://the-eye.eu/public/AI/cah/laion400m-met-release/laion400m-embeddings/texts/text_emb_{}.npy"
LAION400M_META_URL = (
    "https://the-eye.eu/public/AI/cah/laion400m-met-release/laion400m-embeddings/metadata/metadata_{}.parquet"
)
#: How ``--captions`` names the downloadable LAION-400M bank: ``laion400m:0`` or ``laion400m:0,1,2``.
LAION400M_PREFIX = "laion400m:"


def fetch_laion400m_bank(shards: Sequence[int], *, progress: bool = True) -> CaptionBank:
    """The LAION-400M caption bank of ``shards``, downloaded into ``$XDG_CACHE_HOME/replens/laion400m`` on first use.

    Each shard is a ``text_emb_<i>.npy`` (ViT-B-32:openai text embeddings, used in
    place) and its ``metadata_<i>.parquet`` captions (paper section 4.2.1), fetched
    through :func:`replens.hub.fetch_url` (resumable, atomic; LAION publishes no
    checksums; ``REPLENS_OFFLINE=1`` turns downloads off).

    Raises:
        replens.hub.DownloadError: A shard is not cached and cannot be downloaded.
    """
    shards = sorted({int(i) for i in shards})
    if not shards or shards[0] < 0:
        raise BankError(f"LAION-400M shard numbers must be >= 0, got {list(shards)}")
    root = replens_cache_dir() / "laion400m"
    embeddings, metadata = [], []
    for i in shards:
        for url, files in ((LAION400M_TEXT_URL, embeddings), (LAION400M_META_URL, metadata)):
            files.append(fetch_url(url.format(i), root / os.path.basename(url.format(i)), kind="banks", sha256="",
                                   what=f"LAION-400M shard {i} ({os.path.basename(url.format(i))})", progress=progress))
    bank_dir = root / "banks" / "-".join(map(str, shards))
    if (bank_dir / "bank.json").is_file():
        return CaptionBank(bank_dir)
    return import_embedding_shards(embeddings, metadata, bank_dir, model="open_clip:ViT-B-32:openai")


def open_bank(path: str | Path) -> CaptionBank:
    """Open the caption bank folder at ``path``, or ``laion400m:I[,J...]`` (downloaded on first use)."""
    if str(path).startswith(LAION400M_PREFIX):
        try:
            shards = [int(i) for i in str(path)[len(LAION400M_PREFIX) :].split(",") if i.strip()]
        except ValueError:
            raise BankError(f"write laion400m:I[,J...] with shard numbers, got {str(path)!r}") from None
        return fetch_laion400m_bank(shards)
    return CaptionBank(path)


def _write_shards(
    root: Path, embeddings: Iterator[tuple[np.ndarray, list[str]]], model: str | None, extra: dict[str, Any]
) -> CaptionBank:
    root.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    dim = None
    for k, (emb, caps) in enumerate(embeddings):
        if dim is None:
            dim = int(emb.shape[1])
        name = f"emb-{k:05d}.npy"
        _write_npy(root / name, emb.astype(np.float16))
        cap_name = f"captions-{k:05d}.txt"
        atomic_write_text(root / cap_name, "".join(f"{c}\n" for c in caps))
        shards.append({"embeddings": name, "captions": cap_name, "count": len(caps)})
    return _write_manifest(root, int(dim or 0), model, shards, extra)


def _write_manifest(
    root: Path, dim: int, model: str | None, shards: list[dict[str, Any]], extra: dict[str, Any]
) -> CaptionBank:
    """Write ``bank.json`` for ``shards`` (the last step of making a bank) and open the bank."""
    manifest = {
        "format": BANK_FORMAT,
        "version": BANK_VERSION,
        "dim": dim,
        "count": int(sum(s["count"] for s in shards)),
        "model": model,
        "shards": shards,
        **extra,
    }
    atomic_write_json(root / "bank.json", manifest)
    return CaptionBank(root)


def build_bank(
    captions: Sequence[str],
    vl: Any,
    out_dir: str | Path,
    *,
    shard_size: int = 100_000,
    batch_size: int = 512,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
) -> CaptionBank:
    """Encode captions with a VL model's text encoder into a sharded float16 bank.

    Args:
        captions: The caption texts (whitespace is collapsed; empty ones are dropped).
        vl: A :class:`~replens.vl.VLModel`.
        out_dir: The bank folder.
        shard_size: Captions per shard.
        batch_size: Captions per text-encoder batch.
        progress: Show a tqdm bar.
        extra: More entries for ``bank.json`` (e.g. the source file).
    """
    from tqdm.auto import tqdm

    texts = [c for c in (_clean_caption(c) for c in captions) if c]
    if not texts:
        raise BankError("no non-empty captions to build a bank from")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")

    def shards() -> Iterator[tuple[np.ndarray, list[str]]]:
        bar = tqdm(total=len(texts), desc="encode captions", unit="caption", disable=not progress)
        for lo in range(0, len(texts), shard_size):
            part = texts[lo : lo + shard_size]
            emb = vl.embed_texts(part, batch_size=batch_size).numpy()
            bar.update(len(part))
            yield emb, part
        bar.close()

    meta = {"vl_name": getattr(vl, "name", None), **(extra or {})}
    return _write_shards(Path(out_dir), shards(), getattr(vl, "fingerprint", None), meta)


def read_caption_file(path: str | Path, column: str = "caption") -> list[str]:
    """Captions from a text file (one per line) or a parquet file (a string column).

    Raises:
        BankError: Missing file, unknown format or missing column.
    """
    path = Path(path)
    if not path.is_file():
        raise BankError(f"caption file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if column not in table.column_names:
            raise BankError(f"{path}: no column {column!r} (columns: {table.column_names})")
        return ["" if c is None else str(c) for c in table.column(column).to_pylist()]
    if path.suffix in {".txt", ".csv", ".tsv", ""} or path.suffix.startswith(".txt"):
        return path.read_text(encoding="utf-8").splitlines()
    raise BankError(f"{path}: unsupported caption file (use .txt with one caption per line, or .parquet)")


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _open_embedding_shards(files: list[Path]) -> tuple[list[np.ndarray], int]:
    """The (n_i, k) shards memory-mapped, and their common width ``k``."""
    arrays = []
    for f in files:
        if not f.is_file():
            raise BankError(f"embedding shard not found: {f}")
        arr = np.load(f, mmap_mode="r", allow_pickle=False)
        if arr.ndim != 2:
            raise BankError(f"{f}: expected a (n, k) array, got shape {arr.shape}")
        arrays.append(arr)
    dims = {a.shape[1] for a in arrays}
    if len(dims) != 1:
        raise BankError(f"embedding shards have different widths {sorted(dims)}")
    return arrays, int(dims.pop())


def _captions_per_shard(
    captions: Sequence[str] | str | Path | Sequence[str | Path], files: list[Path], counts: list[int], column: str
) -> list[list[str]]:
    """The captions of each shard: from one file or list for all shards in order, or one file per shard."""
    if isinstance(captions, str | Path):
        per_shard = None
        all_caps = read_caption_file(captions, column)
    elif captions and all(
        isinstance(c, Path) or (isinstance(c, str) and Path(c).suffix in {".parquet", ".txt"}) and Path(c).is_file()
        for c in captions
    ):
        per_shard = [read_caption_file(c, column) for c in captions]
        all_caps = None
    else:
        per_shard = None
        all_caps = [str(c) for c in captions]
    if per_shard is not None:
        if len(per_shard) != len(files):
            raise BankError(f"{len(per_shard)} caption files for {len(files)} embedding shards")
        for f, caps, n in zip(files, per_shard, counts, strict=True):
            if len(caps) != n:
                raise BankError(f"{f}: {n} embedding rows but {len(caps)} captions")
        return per_shard
    assert all_caps is not None
    if len(all_caps) != sum(counts):
        raise BankError(f"{sum(counts)} embedding rows in {len(files)} shards but {len(all_caps)} captions")
    bounds = np.cumsum([0, *counts])
    return [all_caps[bounds[i] : bounds[i + 1]] for i in range(len(files))]


def _check_normalised(path: Path, rows: np.ndarray) -> None:
    """Raise unless the first 256 rows are L2-normalised (to 1e-2)."""
    probe = np.asarray(rows[: min(256, len(rows))], dtype=np.float32)
    norms = np.linalg.norm(probe, axis=1) if len(probe) else np.ones(1)
    if np.abs(norms - 1).max() > 1e-2:
        raise BankError(f"{path}: rows are not L2-normalised (norms {norms.min():.3f}..{norms.max():.3f})")


def import_embedding_shards(
    embedding_files: Sequence[str | Path],
    captions: Sequence[str] | str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    column: str = "caption",
    model: str | None = None,
) -> CaptionBank:
    """Use precomputed text-embedding ``.npy`` shards (LAION style) in place as a bank.

    The shards are referenced by absolute path, not copied; their rows are
    checked to be L2-normalised (LAION's are). Captions come either as one
    caption list / text file for all shards in order, or one parquet/text file
    per shard (LAION's ``metadata_<i>.parquet`` with a ``caption`` column).

    Args:
        embedding_files: ``.npy`` files in order (sorted naturally when given
            as a glob result), each (n_i, k), float16 or float32.
        captions: See above.
        out_dir: The bank folder (``bank.json`` and the caption text files).
        column: Parquet caption column.
        model: Fingerprint of the VL model that made the embeddings (e.g.
            ``"open_clip:ViT-B-32:openai"`` for LAION's).

    Raises:
        BankError: Missing files, wrong shapes or caption counts that do not
            match the embedding rows (naming the shard).
    """
    files = sorted((Path(f).resolve() for f in embedding_files), key=_natural_key)
    if not files:
        raise BankError("no embedding shards given")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    arrays, dim = _open_embedding_shards(files)
    per_shard = _captions_per_shard(captions, files, [a.shape[0] for a in arrays], column)
    shards = []
    for k, (f, caps, arr) in enumerate(zip(files, per_shard, arrays, strict=True)):
        _check_normalised(f, arr)
        cap_name = f"captions-{k:05d}.txt"
        atomic_write_text(root / cap_name, "".join(f"{_clean_caption(c)}\n" for c in caps))
        shards.append({"embeddings": str(f), "captions": cap_name, "count": int(arr.shape[0])})
    return _write_manifest(root, dim, model, shards, {"imported": True})


#: Nouns and adjectives outside the world, for distractor captions.
_DISTRACTOR_NOUNS = (
    "dog",
    "cat",
    "car",
    "tree",
    "house",
    "bird",
    "flower",
    "boat",
    "chair",
    "table",
    "horse",
    "guitar",
    "mountain",
    "beach",
    "bicycle",
    "cup",
    "book",
    "lamp",
    "shoe",
    "bottle",
    "clock",
    "bridge",
    "train",
    "pizza",
    "apple",
    "elephant",
    "window",
    "door",
    "road",
    "cloud",
)
_DISTRACTOR_ADJECTIVES = (
    "old",
    "wooden",
    "shiny",
    "fluffy",
    "broken",
    "tall",
    "tiny",
    "bright",
    "dark",
    "wet",
    "rusty",
    "happy",
    "vintage",
    "modern",
    "golden",
    "soft",
)
_DISTRACTOR_PLACES = (
    "in a park",
    "on the street",
    "in a kitchen",
    "at night",
    "in the snow",
    "on a table",
    "near the sea",
    "in a forest",
)
_EXTRA_SHAPES = ("oval", "pentagon", "arrow", "spiral", "rectangle", "octagon")


def _a(word: str) -> str:
    """``word`` with its indefinite article."""
    return f"{article(word)} {word}"


def _tex(texture: str) -> str:
    """A texture word after a colour (nothing for solid)."""
    return "" if texture == "solid" else f" {texture}"


def _object_captions(nouns: list[str]) -> list[str]:
    """Every object description, domain captions and object-on-background captions."""
    out = [f"{_a(size)} {colour}{_tex(texture)} {shape}"
           for size in SIZES for colour in COLOURS for texture in TEXTURES for shape in SHAPES]
    out += [f"{_a(colour)}{_tex(texture)} {shape}" for colour in COLOURS for texture in TEXTURES for shape in SHAPES]
    for noun in nouns:
        for shape in SHAPES:
            out.append(f"{_a(noun)} of {_a(shape)}")
            out += [f"{_a(noun)} of {_a(colour)} {shape}" for colour in COLOURS]
    out += [f"{_a(colour)}{_tex(texture)} {shape} on {_a(bg)} background"
            for colour in COLOURS for texture in TEXTURES for shape in SHAPES for bg in BACKGROUNDS]
    return out


def _colourless_captions(relational: int, seed: int) -> list[str]:
    """Captions of the domains that draw no colour (generator 2.1.0): "a sketch of a large star",
    "a large star", "a large star left of a small cross" (``relational / 10`` of those sampled)."""
    out = [f"{_a(noun)} of {_a(size)} {shape}"
           for noun in sorted({DOMAIN_NOUN[d] for d in COLOURLESS_DOMAINS}) for size in SIZES for shape in SHAPES]
    out += [f"{_a(size)} {shape}" for size in SIZES for shape in SHAPES]
    plain = random.Random(seed + 1)
    for _ in range(relational // 10):
        o1, o2 = (f"{_a(plain.choice(SIZES))} {plain.choice(SHAPES)}" for _ in range(2))
        out.append(f"{o1} {plain.choice(['left of', 'right of', 'above', 'below'])} {o2}")
    return out


def _marker_captions(nouns: list[str], markers: Sequence[str] = MARKERS) -> list[str]:
    """Bare marker patches and objects with a marker patch."""
    out: list[str] = []
    for marker in markers:
        out.append(f"{_a(marker)} patch")
        for shape in SHAPES:
            out += [f"{_a(noun)} of {_a(shape)} with {_a(marker)} patch" for noun in nouns]
            out += [f"{_a(colour)} {shape} with {_a(marker)} patch" for colour in COLOURS]
    return out


def _sampled_captions(rng: random.Random, nouns: list[str], relational: int, distractors: int) -> list[str]:
    """``relational`` two-object relational captions, then ``distractors`` about things not in the world."""
    out: list[str] = []
    spatial = [r for r in RELATIONS if r in ("left of", "right of", "above", "below")]
    for _ in range(relational):
        o1 = f"{_a(rng.choice(SIZES))} {rng.choice(COLOURS)}{_tex(rng.choice(TEXTURES))} {rng.choice(SHAPES)}"
        o2 = f"{_a(rng.choice(SIZES))} {rng.choice(COLOURS)}{_tex(rng.choice(TEXTURES))} {rng.choice(SHAPES)}"
        out.append(f"{o1} {rng.choice(spatial)} {o2}")
    for _ in range(distractors):
        kind = rng.random()
        noun = rng.choice(_DISTRACTOR_NOUNS)
        adj = rng.choice(_DISTRACTOR_ADJECTIVES)
        if kind < 0.4:
            out.append(f"{_a(adj)} {noun} {rng.choice(_DISTRACTOR_PLACES)}")
        elif kind < 0.7:
            out.append(f"{_a(rng.choice(nouns))} of {_a(adj)} {noun}")
        else:
            out.append(f"{_a(rng.choice(COLOURS))} {rng.choice(_EXTRA_SHAPES)} {rng.choice(_DISTRACTOR_PLACES)}")
    return out


def world_caption_texts(*, relational: int = 3000, distractors: int = 2000, seed: int = 0,
                        patterns: bool = False) -> list[str]:
    """The default caption bank: the world's caption grammar over its whole vocabulary, with distractors.

    Covers every object description (size, colour, texture, shape), domain
    captions, the colourless captions of sketches and tints ("a sketch of a
    large star", "a large star left of a small cross", ``relational / 10`` of
    those sampled), object-on-background and object-with-marker captions, bare
    marker patches, a random sample of two-object relational captions, and
    ``distractors`` captions about things that are not in the world (animals,
    vehicles, other shapes) so that a caption has to be earned.

    Args:
        relational: Two-object relational captions sampled.
        distractors: Distractor captions sampled.
        seed: Seed of the samples.
        patterns: Also the patterned marker patches of the ``"pattern"`` spurious cue ("a striped patch",
            "a sketch of a star with a striped patch"); off, the bank is the one every colour-cue world uses.

    Returns:
        Distinct captions (deterministic order).
    """
    nouns = list(dict.fromkeys(DOMAIN_NOUN.values()))
    out = _object_captions(nouns) + _colourless_captions(relational, seed) + _marker_captions(nouns)
    out += _sampled_captions(random.Random(seed), nouns, relational, distractors)
    if patterns:  # last, so the colour-cue bank is a prefix of this one
        out += _marker_captions(nouns, PATTERNS)
    return list(dict.fromkeys(out))


def default_world_bank(vl: Any, cache_dir: str | Path = "runs/cache", *, progress: bool = False,
                       patterns: bool = False) -> CaptionBank:
    """The world-grammar bank encoded with ``vl``, cached under ``cache_dir`` (keyed by model and grammar);
    ``patterns`` adds the patterned-marker captions (see :func:`world_caption_texts`; pass
    :func:`replens.explain.ground_truth.is_pattern_world` of the probe set)."""
    texts = world_caption_texts(patterns=patterns)
    key = hashlib.sha256(("\n".join(texts) + f"|{vl.fingerprint}").encode()).hexdigest()[:12]
    root = Path(cache_dir) / "banks" / f"world-{key}"
    if (root / "bank.json").is_file():
        try:
            bank = CaptionBank(root)
            if bank.count == len(texts) and bank.model == vl.fingerprint:
                return bank
        except BankError:
            pass
    return build_bank(texts, vl, root, progress=progress, extra={"source": "world grammar"})
