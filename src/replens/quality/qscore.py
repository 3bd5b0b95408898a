"""Highly activating features, discriminative features and the Q-Score (paper chapter 3).

Definitions (paper sections 3.3, 3.3.1 and 3.4), on L2-normalised
representations ``h_i / ||h_i||`` of ``N`` samples with ``r`` features:

* highly activating set ``L_i = {j : h_ij > mu_i + eps * sigma_i}`` with
  ``mu_i``, ``sigma_i`` the mean and the *population* standard deviation
  (``ddof = 0``) of the ``r`` entries of ``h_i``; ``eps = 4``;
* activation percentage ``A_j = 100 / N * sum_i 1[j in L_i]``;
* discriminative features ``D``: the features whose *percentile rank* in
  ``A`` lies in ``[lower, upper)`` (default ``[50, 95)``). Features are sorted
  by ascending ``A_j`` (ties by feature index, a stable sort); the feature at
  sorted position ``k`` (0-based) has percentile rank ``100 k / r``. This is
  the paper's "compute the percentile for each point in the distribution A"
  (section 3.3.1); a rank band keeps ``|D|`` fixed (``0.45 r`` by default)
  even when many features share ``A_j = 0``;
* Q-Score (Eq. 3.1) ``Q_i = 1 / |L_i & D| * sum_{j in L_i & D} (h_ij - mu_i)``;
  a sample with ``L_i & D`` empty gets ``Q_i = 0`` and is counted in
  :meth:`QScoreResult.summary` (``samples_without_discriminative``).

``L_i`` is invariant to a positive rescaling of ``h_i`` and
``h_ij / ||h_i|| - mu_i / ||h_i||`` is the normalised deviation, so the
streaming code tests raw rows against their own threshold and divides the
deviations by the row norm: one pass over the data, no normalised copy.

Streaming: :class:`QScoreStream` reads row blocks (a memory-mapped array, the
chunk files of ``replens embed``, or any iterator) once. Per block it keeps the
per-feature counts (for ``A``) and writes the sparse highly activating entries
(feature id and normalised deviation, a few per row) to a temporary spill
file; ``D`` is known only after the last row, and the Q-Scores are then
computed from the spill without a second pass over the data. Memory is one
block per thread (with its entries) plus O(r) counters plus 4 bytes per sample
(``|L_i|``); memory-mapped inputs have their pages released after each block
(``madvise(DONTNEED)``), so the resident set stays bounded whatever ``N``.

Each block runs through one compiled kernel (numba, ``_rows_entries``), row by
row: a first loop reads the row into an L1-resident float32 buffer (float16 is
read as its bit pattern and converted with the CPU's vector half-to-float
instruction; float32, a read-only memory map included, is read in place;
other dtypes are converted to a float32 copy first) while
it accumulates the float64 sum and sum of squares; a second loop over the
buffer compares with the threshold and emits the entries (feature id,
normalised deviation), ``|L_i|`` and the per-feature counts of ``A``. The
kernel is hand-written because numpy and torch need several passes over each
block (convert, sum, norm, compare, nonzero, gather, deviation, bincount), each
streaming the whole block through memory; the fused kernel reads it once. The
final scoring (Eq. 3.1 over the spill) is compiled too. The tests check the
kernel against a dense float64 implementation of the definitions above.

Exactness: row statistics are float64 sums of the float32 values; rows whose
``E[h^2] - mu^2`` would cancel (nearly constant rows) get the exact two-pass
float64 variance. The test ``h_ij > mu_i + eps sigma_i`` is exact against the
float64 threshold (a float32 ``v`` exceeds ``t`` iff it exceeds the largest
float32 ``<= t``), so ``L_i`` can differ from a float64 reference only for
entries within rounding of the threshold (ties). Rows with NaN or infinite
values, or whose sum of squares overflows float32, raise
:class:`NonFiniteRowsError` with their global row indices.

Threads: blocks are dealt round-robin to ``threads`` threads (the caller's and
``threads - 1`` background ones; by default torch's thread count, at least 2);
the kernel releases the GIL and results are committed in block order, so the
output does not depend on the thread count. A block handed to a background
thread is read after :meth:`QScoreStream.update` returns: float16 and
read-only float32 blocks are read in place (a caller that reuses such an array
must not overwrite it until ``threads - 1`` more updates, or ``result``, have
returned), writeable float32 blocks are copied first. The kernels compile on
first use (seconds) and are cached beside this module (``cache=True``); a new
process loads them in about half a second.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic, overload
from tqdm.auto import tqdm

from replens.models import EmbeddingsError, extract_features

__all__ = [
    "DEFAULT_BAND",
    "DEFAULT_EPS",
    "EmbeddingChunks",
    "NonFiniteRowsError",
    "QScoreResult",
    "QScoreStream",
    "band_features",
    "feature_order",
    "iter_row_blocks",
    "load_feature_sets",
    "qscore_array",
    "qscore_embeddings",
    "qscore_model",
    "tail_features",
    "eps_for_dim",
]

DEFAULT_EPS = 4.0
DEFAULT_BAND = (50.0, 95.0)


def eps_for_dim(dim: int) -> float:
    """The ``epsilon`` of ``L_i`` from the representation size alone: ``log2(r) / 4``, clipped to [1.5, 4].

    The paper selects eps = 4 empirically for ResNet-50 (r = 2048, section 3.3). Smaller
    representations have fewer features in their tail, so the same eps leaves most ``L_i``
    empty; a quarter of ``log2(r)`` gives 1.5 at r = 64 (CIFAR ResNet-20), 2 at r = 256
    (the world's small_cnn) and reaches the paper's 4 at r = 65,536. The rule depends on r
    only, never on labels or a test split.
    """
    if dim < 1:
        raise ValueError(f"representation size must be positive, got {dim}")
    return float(min(4.0, max(1.5, np.log2(dim) / 4.0)))
# rows whose one-pass E[h^2] - mu^2 is below this fraction of E[h^2] (cancellation) get mean and
# variance recomputed exactly in float64 (two-pass)
_NEAR_CONSTANT = 1e-3
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class NonFiniteRowsError(ValueError):
    """Rows with NaN or infinite values (``rows``: their global row indices)."""

    def __init__(self, message: str, rows: Sequence[int]) -> None:
        super().__init__(message)
        self.rows = [int(r) for r in rows]


# --------------------------------------------------------------------------- feature sets
def feature_order(percentages: np.ndarray) -> np.ndarray:
    """Features sorted by ascending ``A_j`` (stable: ties by feature index), the x-axis of Figure 3.1."""
    return np.argsort(np.asarray(percentages), kind="stable")


def _rank_slice(dim: int, lower: float, upper: float) -> slice:
    if not 0.0 <= lower <= upper <= 100.0:
        raise ValueError(f"percentile band must satisfy 0 <= lower <= upper <= 100, got ({lower}, {upper})")
    start = math.ceil(lower * dim / 100.0 - 1e-9)
    stop = dim if upper >= 100.0 else math.ceil(upper * dim / 100.0 - 1e-9)
    return slice(start, stop)


def band_features(percentages: np.ndarray, lower: float = DEFAULT_BAND[0], upper: float = DEFAULT_BAND[1]) -> np.ndarray:
    """Discriminative features: percentile rank of ``A_j`` in ``[lower, upper)`` (section 3.3.1).

    Args:
        percentages: (r,) activation percentages ``A``.
        lower: Lower percentile (inclusive).
        upper: Upper percentile (exclusive; 100 includes the top feature).

    Returns:
        Sorted feature indices (int64).
    """
    order = feature_order(percentages)
    return np.sort(order[_rank_slice(len(order), lower, upper)]).astype(np.int64)


def tail_features(percentages: np.ndarray, size: int, tail: str) -> np.ndarray:
    """The ``size`` features with the lowest (``tail="lower"``) or highest (``"upper"``) ``A_j`` (Figure A.7)."""
    order = feature_order(percentages)
    if not 0 <= size <= len(order):
        raise ValueError(f"tail size {size} outside [0, {len(order)}]")
    if tail == "lower":
        chosen = order[:size]
    elif tail == "upper":
        chosen = order[len(order) - size :]
    else:
        raise ValueError(f"tail must be 'lower' or 'upper', got {tail!r}")
    return np.sort(chosen).astype(np.int64)


# --------------------------------------------------------------------------- block reading
class _PageReleaser:
    """Drops the resident pages of a memory map behind a sequential reader.

    ``madvise(MADV_DONTNEED)`` unmaps pages from this process; for shared or
    read-only file mappings their content stays in the page cache and the
    file, and touching them again simply faults them back in. Copy-on-write
    maps (``mode="c"``) are left alone: their private changes would be lost.
    """

    def __init__(self, array: np.ndarray) -> None:
        self.raw = None
        raw = getattr(array, "_mmap", None)  # the mmap.mmap numpy keeps behind a memmap
        if (
            isinstance(array, np.memmap)
            and isinstance(raw, mmap.mmap)
            and getattr(array, "mode", "c") != "c"
            and array.flags.c_contiguous
            and hasattr(mmap, "MADV_DONTNEED")
            and len(raw) > 0
        ):
            view = np.frombuffer(raw, dtype=np.uint8, count=1)
            base = view.ctypes.data
            del view  # release the buffer export at once
            self.raw = raw
            self.origin = array.ctypes.data - base
            self.row_bytes = array.strides[0]
            self.done = (self.origin // mmap.PAGESIZE) * mmap.PAGESIZE

    def release_through(self, row: int) -> None:
        """Release every whole page before the end of ``row - 1``."""
        if self.raw is None:
            return
        end = ((self.origin + row * self.row_bytes) // mmap.PAGESIZE) * mmap.PAGESIZE
        if end > self.done:
            try:
                self.raw.madvise(mmap.MADV_DONTNEED, self.done, end - self.done)
            except (OSError, ValueError):  # unsupported here: the kernel keeps managing the pages
                self.raw = None
                return
            self.done = end


def iter_row_blocks(array: np.ndarray, block_rows: int = 512, keep_blocks: int = 4) -> Iterator[np.ndarray]:
    """Yield consecutive row blocks of a 2-D array; a memory map's pages are released behind the reader.

    Args:
        array: (N, r) array or ``np.memmap``.
        block_rows: Rows per block.
        keep_blocks: Blocks kept resident behind the newest one (a pipelined
            consumer may still read them); older pages are released. Released
            data stays valid: touching it again only faults it back in.
    """
    if array.ndim != 2:
        raise ValueError(f"features must be (N, r), got shape {array.shape}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    releaser = _PageReleaser(array)
    for start in range(0, array.shape[0], block_rows):
        yield array[start : start + block_rows]
        releaser.release_through(max(0, start - keep_blocks * block_rows))
    releaser.release_through(array.shape[0])


# --------------------------------------------------------------------------- the compiled kernel
# Hand-written because numpy and torch need several passes over each block (convert, sum, norm, compare,
# nonzero, gather, deviation, bincount), each streaming the whole block through memory; this kernel
# reads each row once into an L1-resident float32 buffer and does everything else there.
@intrinsic
def _half_bits_to_single(typingctx: Any, bits: Any) -> Any:
    """float32 value of a float16 bit pattern (uint16): LLVM's ``fpext half``, vectorised (F16C on x86)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 16:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


def _as_single(value: Any) -> Any:
    """A stored entry as float32 (compiled only: see the overload)."""
    raise NotImplementedError("compiled-only helper")


@overload(_as_single, jit_options={"nogil": True})
def _as_single_overload(value: Any) -> Any:
    # the implementations repeat the stub's signature, annotations included (numba compares them)
    def from_half(value: Any) -> Any:  # float16 read as its uint16 bit pattern
        return _half_bits_to_single(value)

    def from_other(value: Any) -> Any:
        return np.float32(value)

    return from_half if isinstance(value, types.Integer) else from_other


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _row_stats(row: np.ndarray, buf: np.ndarray, near: float) -> tuple[float, float, float]:
    """One row into ``buf`` (float32): float64 ``(mean, variance, sum of squares)``.

    One pass accumulates the sum and the sum of squares (float64; ``reassoc`` lets LLVM vectorise the
    sums, deterministic for a given build); rows whose ``E[h^2] - mu^2`` cancels (variance at most
    ``near`` of ``E[h^2]``) get the exact two-pass variance from the buffer.
    """
    dim = row.shape[0]
    total = 0.0
    squares = 0.0
    for j in range(dim):
        value = _as_single(row[j])
        buf[j] = value
        wide = np.float64(value)
        total += wide
        squares += wide * wide
    mean = total / dim
    second = squares / dim
    var = second - mean * mean
    if var <= near * second:
        acc = 0.0
        for j in range(dim):
            dev = np.float64(buf[j]) - mean
            acc += dev * dev
        var = acc / dim
    return mean, var, squares


@njit(cache=True, nogil=True)
def _row_emit(buf: np.ndarray, threshold: np.float32, mean: float, norm: float, flags: np.ndarray,
              cols: np.ndarray, devs: np.ndarray, counts: np.ndarray, pos: int) -> int:
    """Append the entries ``buf[j] > threshold`` (feature id, normalised deviation) at ``pos``; new ``pos``.

    A vectorised loop writes the comparison as bytes into ``flags`` (zero-padded to whole 8-byte
    words); the scan then reads 8 flags at a time and visits only the set ones (their byte index is
    the word's trailing zero bits / 8: little-endian, as on every target numba supports).
    """
    for j in range(buf.shape[0]):
        flags[j] = buf[j] > threshold
    words = flags.view(np.uint64)
    for w in range(words.shape[0]):
        word = words[w]
        while word:
            j = w * 8 + (trailing_zeros(word) >> 3)
            word &= word - np.uint64(1)
            cols[pos] = j
            devs[pos] = np.float32((np.float64(buf[j]) - mean) / norm)
            counts[j] += 1
            pos += 1
    return pos


@njit(cache=True, nogil=True)
def _rows_entries(src: np.ndarray, eps: float, near: float, cols: np.ndarray, devs: np.ndarray,
                  n_highly: np.ndarray, counts: np.ndarray) -> int:
    """L_i of every row of ``src`` (float32, or float16 read as uint16): the fused per-row kernel.

    Writes the entries row after row into ``cols``/``devs`` (room for every entry of the block),
    ``|L_i|`` into ``n_highly`` (-1, and no entries, for a row with NaN/inf or a sum of squares
    beyond float32) and adds 1 to ``counts[j]`` per entry. The test ``h_ij > mu_i + eps sigma_i``
    against the float64 threshold ``t`` is exact: for a float32 ``v``, ``v > t`` iff
    ``v > floor32(t)``, the largest float32 ``<= t``. Returns the number of entries written.
    """
    n_rows, dim = src.shape
    buf = np.empty(dim, np.float32)
    flags = np.zeros(-(-dim // 8) * 8, np.uint8)
    pos = 0
    for i in range(n_rows):
        mean, var, squares = _row_stats(src[i], buf, near)
        norm = np.sqrt(squares)
        if not (np.isfinite(mean) and np.isfinite(var) and squares <= _FLOAT32_MAX):
            n_highly[i] = -1
            continue
        limit = mean + eps * np.sqrt(max(var, 0.0))
        threshold = np.float32(limit)
        if threshold > limit:
            threshold = np.nextafter(threshold, np.float32(-np.inf))
        start = pos
        pos = _row_emit(buf, threshold, mean, norm, flags, cols, devs, counts, pos)
        n_highly[i] = pos - start
    return pos


@njit(cache=True, nogil=True)
def _score_rows(cols: np.ndarray, devs: np.ndarray, n_highly: np.ndarray, is_disc: np.ndarray,
                scores: np.ndarray, n_disc: np.ndarray) -> None:
    """Eq. 3.1 for consecutive rows: mean float64 deviation over ``L_i & D`` (0 where empty).

    ``is_disc`` is a 0/1 uint8 mask of ``D``; the entries are summed with it as a weight, not behind a branch:
    about half the entries are in ``D`` in no order, so a branch mispredicts often (16M entries: 76 ms with
    the branch, 12 ms without; the sums are the same, since the deviations are finite).
    """
    pos = 0
    for i in range(n_highly.shape[0]):
        total = 0.0
        count = 0
        for k in range(pos, pos + n_highly[i]):
            w = is_disc[cols[k]]
            total += np.float64(devs[k]) * w
            count += w
        pos += n_highly[i]
        scores[i] = total / count if count > 0 else 0.0
        n_disc[i] = count


def _kernel_source(rows: np.ndarray) -> tuple[np.ndarray, bool]:
    """``rows`` as the kernel reads them: C-contiguous read-only float32, or float16 viewed as uint16.

    Returns the array and whether it is a view of the caller's (not a copy made here). Read-only
    views keep one compiled variant per dtype (numba types writeable and read-only arrays apart).
    """
    source = np.asarray(rows)
    if source.dtype == np.float16:
        source = np.ascontiguousarray(source).view(np.uint16)
    elif source.dtype != np.float32 or not source.flags.c_contiguous:
        with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf: a non-finite row
            source = np.ascontiguousarray(source, dtype=np.float32)
    shared = np.may_share_memory(source, rows) if isinstance(rows, np.ndarray) else False
    source = source.view()
    source.flags.writeable = False
    return source, shared


@dataclass
class _Slot:
    """Output buffers of one block in flight (reused): entries, ``|L_i|`` and per-feature counts."""

    cols: np.ndarray
    devs: np.ndarray
    n_highly: np.ndarray
    counts: np.ndarray

    @classmethod
    def make(cls, n_rows: int, dim: int) -> _Slot:
        # room for every entry of the block; pages are touched only as entries are written
        return cls(np.empty(n_rows * dim, np.int32), np.empty(n_rows * dim, np.float32),
                   np.empty(n_rows, np.int32), np.zeros(dim, np.int64))


@dataclass
class _BlockOut:
    n_highly: np.ndarray  # (B,) int32 |L_i| (-1: a row with NaN/inf)
    cols: np.ndarray  # (k,) feature ids of the highly activating entries, row-major
    deviation: np.ndarray  # (k,) float32 normalised deviations (h_ij - mu_i) / ||h_i||
    counts: np.ndarray  # (r,) int64 entries per feature (the kernel's slot)


def _run_kernel(source: np.ndarray, eps: float, slot: _Slot) -> _BlockOut:
    """The compiled kernel on one block into ``slot``: ``n_highly`` is -1 on non-finite rows."""
    n_rows = source.shape[0]
    entries = _rows_entries(source, eps, _NEAR_CONSTANT, slot.cols, slot.devs, slot.n_highly, slot.counts)
    return _BlockOut(slot.n_highly[:n_rows], slot.cols[:entries], slot.devs[:entries], slot.counts)


# --------------------------------------------------------------------------- results
@dataclass
class QScoreResult:
    """Per-sample Q-Scores and the feature sets they were computed with.

    Attributes:
        scores: (N,) float32 Q-Scores (Eq. 3.1); 0 when ``L_i & D`` is empty.
        n_highly: (N,) |L_i|, the number of highly activating features.
        n_discriminative: (N,) |L_i & D|.
        counts: (r,) number of samples in which each feature is highly activating.
        percentages: (r,) ``A_j`` in percent.
        discriminative: Sorted indices of ``D``.
        band: The percentile band ``(lower, upper)`` of ``D``, or ``None``
            when ``D`` was given (e.g. discovered on a training split).
        eps: The ``epsilon`` of ``L_i``.
    """

    scores: np.ndarray
    n_highly: np.ndarray
    n_discriminative: np.ndarray
    counts: np.ndarray
    percentages: np.ndarray
    discriminative: np.ndarray
    band: tuple[float, float] | None
    eps: float

    @property
    def n_samples(self) -> int:
        return int(len(self.scores))

    @property
    def dim(self) -> int:
        return int(len(self.counts))

    def feature_sets(self) -> dict[str, Any]:
        """Discriminative features, lower/upper tails around the band, never-active features and ``A``."""
        order = feature_order(self.percentages)
        is_disc = np.zeros(self.dim, dtype=bool)
        is_disc[self.discriminative] = True
        ranks = np.empty(self.dim, dtype=np.int64)
        ranks[order] = np.arange(self.dim)
        disc_ranks = ranks[self.discriminative]
        lo = int(disc_ranks.min()) if len(disc_ranks) else self.dim
        hi = int(disc_ranks.max()) if len(disc_ranks) else -1
        return {
            "eps": self.eps,
            "band": list(self.band) if self.band is not None else None,
            "dim": self.dim,
            "discriminative": self.discriminative.tolist(),
            "lower_tail": np.sort(order[:lo]).tolist(),
            "upper_tail": np.sort(order[hi + 1 :]).tolist(),
            "never_active": np.flatnonzero(self.counts == 0).tolist(),
            "order": order.tolist(),
            "percentages": self.percentages.tolist(),
        }

    def summary(self) -> dict[str, Any]:
        """Numbers for ``metrics.json``."""
        without = int((self.n_discriminative == 0).sum())
        q = self.scores
        return {
            "samples": self.n_samples,
            "dim": self.dim,
            "eps": self.eps,
            "band": list(self.band) if self.band is not None else None,
            "discriminative_features": int(len(self.discriminative)),
            "discriminative_fraction": float(len(self.discriminative) / max(self.dim, 1)),
            "never_active_features": int((self.counts == 0).sum()),
            "samples_without_discriminative": without,
            "samples_without_highly_activating": int((self.n_highly == 0).sum()),
            "mean_highly_activating": float(self.n_highly.mean()) if self.n_samples else float("nan"),
            "qscore_mean": float(q.mean()) if self.n_samples else float("nan"),
            "qscore_median": float(np.median(q)) if self.n_samples else float("nan"),
            "qscore_mean_nonzero": float(q[self.n_discriminative > 0].mean()) if without < self.n_samples else 0.0,
        }


def load_feature_sets(path: str | Path) -> np.ndarray:
    """Discriminative feature indices from a ``feature_sets.json`` (``replens qscore``) or an ``.npy`` of indices."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature set file not found: {path}")
    if path.suffix == ".npy":
        indices = np.load(path, allow_pickle=False)
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "discriminative" not in data:
            raise KeyError(f"{path} has no 'discriminative' key (write it with `replens qscore`)")
        indices = np.asarray(data["discriminative"])
    indices = np.asarray(indices)
    if indices.ndim != 1 or (len(indices) and not np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(f"{path}: discriminative features must be a 1-D list of integers")
    return np.unique(indices.astype(np.int64))


# --------------------------------------------------------------------------- the stream
class QScoreStream:
    """One-pass, bounded-memory Q-Score over row blocks (see the module docstring).

    Example::

        with QScoreStream(eps=4.0) as stream:
            for block in iter_row_blocks(np.load("feats.npy", mmap_mode="r")):
                stream.update(block)
            result = stream.result(band=(50, 95))

    Args:
        eps: The ``epsilon`` of ``L_i`` (section 3.3; 4 in the paper).
        spill_dir: Folder for the temporary spill file (default: the system temp dir).
        background: Run blocks on background threads too (see the module docstring); ``False``
            runs every block in the caller's thread.
        threads: Threads that run blocks, the caller's included (default: torch's thread count, at
            least 2).
    """

    def __init__(
        self, eps: float = DEFAULT_EPS, *, spill_dir: str | Path | None = None, background: bool = True,
        threads: int | None = None,
    ) -> None:
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.eps = float(eps)
        # named like the run folders' half-written files (``.NAME.*.tmp``), so a run folder's stale-lock
        # cleanup removes the spill of a killed process
        self._dir = Path(tempfile.mkdtemp(prefix=".qscore.", suffix=".tmp", dir=spill_dir))
        self._cols = open(self._dir / "cols.bin", "wb")  # noqa: SIM115 (closed in close())
        self._devs = open(self._dir / "devs.bin", "wb")  # noqa: SIM115
        self._blocks: list[tuple[int, int]] = []  # (rows, entries) per block
        self._n_highly: list[np.ndarray] = []
        self.counts: np.ndarray | None = None
        self.n = 0
        self._col_dtype: type = np.uint16
        # default: torch's thread count, at least 2 (the caller and one background thread, as before)
        self.threads = 1 if not background else threads or max(2, torch.get_num_threads())
        # blocks are dealt round-robin: threads - 1 go to the pool, every threads-th runs in the caller;
        # results are committed in block order (the compiled kernel releases the GIL)
        self._pool = (ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="qscore")
                      if self.threads > 1 else None)
        self._pending: deque[tuple[Future[_BlockOut], int]] = deque()  # (kernel run, first row)
        self._slots: list[_Slot | None] = [None] * self.threads  # output buffers, one per block in flight

    @property
    def dim(self) -> int:
        """Feature count ``r`` (0 before the first block)."""
        return 0 if self.counts is None else int(len(self.counts))

    def update(self, rows: np.ndarray | torch.Tensor) -> None:
        """Add the next block of rows (raw representations, any float dtype).

        A float16 or read-only float32 block may be read after this returns (see the module
        docstring): do not overwrite it until ``threads - 1`` more updates, or :meth:`result`, have returned.

        Raises:
            NonFiniteRowsError: A row holds NaN/inf (the message names its global row index); for a
                block handed to a background thread, raised by a later update or by :meth:`result`.
            ValueError: The block is not 2-D or its width differs from earlier blocks.
        """
        if self._cols.closed:
            raise RuntimeError("QScoreStream is closed")
        if isinstance(rows, torch.Tensor):
            rows = rows.detach().cpu().numpy()
        if rows.ndim != 2:
            raise ValueError(f"a block of representations must be 2-D (rows, features), got shape {rows.shape}")
        if rows.shape[0] == 0:
            return
        if self.counts is None:
            if rows.shape[1] == 0:
                raise ValueError("representations have no features")
            self.counts = np.zeros(rows.shape[1], dtype=np.int64)
            self._col_dtype = np.uint16 if rows.shape[1] <= np.iinfo(np.uint16).max + 1 else np.uint32
        elif rows.shape[1] != self.dim:
            raise ValueError(f"block has {rows.shape[1]} features, earlier blocks had {self.dim}")
        source, shared = _kernel_source(rows)
        first_row, self.n = self.n, self.n + rows.shape[0]
        slot = self._slot(len(self._pending), source.shape[0])
        if self._pool is not None and len(self._pending) < self.threads - 1:
            if shared and source.dtype == np.float32 and np.asarray(rows).flags.writeable:
                source = source.copy()  # a writeable float32 array the caller may reuse: read a copy later
            self._pending.append((self._pool.submit(_run_kernel, source, self.eps, slot), first_row))
            return
        out = _run_kernel(source, self.eps, slot)
        self._drain()
        self._commit(out, first_row)

    def _slot(self, index: int, n_rows: int) -> _Slot:
        """The output buffers of the ``index``-th block in flight, large enough for ``n_rows`` rows."""
        slot = self._slots[index]
        if slot is None or len(slot.n_highly) < n_rows:  # first use, or a larger block than before
            slot = self._slots[index] = _Slot.make(n_rows, self.dim)
        return slot

    def _commit(self, out: _BlockOut, first_row: int) -> None:
        """One block's L_i entries to the counts and the spill (blocks arrive in order)."""
        bad = np.flatnonzero(out.n_highly < 0)
        if len(bad):
            rows = (bad + first_row).tolist()
            raise NonFiniteRowsError(f"non-finite values in rows {rows[:10]}{' ...' if len(rows) > 10 else ''}", rows)
        assert self.counts is not None and out.counts is not None
        self.counts += out.counts
        out.counts[:] = 0  # the slot's counts start again from zero for its next block
        self._cols.write(out.cols.astype(self._col_dtype))
        self._devs.write(out.deviation)
        self._blocks.append((len(out.n_highly), len(out.cols)))
        self._n_highly.append(out.n_highly.copy())

    def _drain(self) -> None:
        """Wait for the blocks in flight and commit them in order."""
        while self._pending:
            future, first_row = self._pending.popleft()
            self._commit(future.result(), first_row)

    def percentages(self) -> np.ndarray:
        """``A_j = 100 / N * #{i : j in L_i}`` so far."""
        self._drain()
        if self.counts is None or self.n == 0:
            raise ValueError("no representations were added")
        return 100.0 * self.counts / self.n

    def scores(self, discriminative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Q-Scores (Eq. 3.1) of every row seen, for the feature set ``discriminative``.

        Returns:
            ``(scores float32 (N,), n_discriminative int32 (N,))``.
        """
        self._drain()
        if self.counts is None:
            raise ValueError("no representations were added")
        discriminative = np.asarray(discriminative, dtype=np.int64)
        if len(discriminative) and (discriminative.min() < 0 or discriminative.max() >= self.dim):
            raise ValueError(f"discriminative feature ids must lie in [0, {self.dim}); got {discriminative.max()}")
        is_disc = np.zeros(self.dim, dtype=np.uint8)
        is_disc[discriminative] = 1
        self._cols.flush()
        self._devs.flush()
        scores = np.zeros(self.n, dtype=np.float32)
        n_disc = np.zeros(self.n, dtype=np.int32)
        n_highly = self.n_highly()
        row = block = 0
        with open(self._dir / "cols.bin", "rb") as cols_file, open(self._dir / "devs.bin", "rb") as devs_file:
            while block < len(self._blocks):
                # a group of consecutive blocks holding at most ~4M entries (bounded memory)
                n_rows = entries = 0
                while block < len(self._blocks) and (entries == 0 or entries + self._blocks[block][1] <= 4_000_000):
                    n_rows += self._blocks[block][0]
                    entries += self._blocks[block][1]
                    block += 1
                cols = np.fromfile(cols_file, dtype=self._col_dtype, count=entries)
                devs = np.fromfile(devs_file, dtype=np.float32, count=entries)
                _score_rows(cols, devs, n_highly[row : row + n_rows], is_disc,
                            scores[row : row + n_rows], n_disc[row : row + n_rows])
                row += n_rows
        return scores, n_disc

    def n_highly(self) -> np.ndarray:
        """(N,) |L_i| of every row seen."""
        self._drain()
        return np.concatenate(self._n_highly) if self._n_highly else np.zeros(0, np.int32)

    def result(
        self, band: tuple[float, float] = DEFAULT_BAND, discriminative: np.ndarray | None = None
    ) -> QScoreResult:
        """Feature sets and Q-Scores: ``D`` from the percentile ``band`` of this data's ``A``, or given.

        Args:
            band: ``(lower, upper)`` percentiles of ``A`` (section 3.3.1).
            discriminative: Use these features as ``D`` instead (e.g. discovered
                on the training split, as in section 3.4.1).
        """
        percentages = self.percentages()
        chosen = band_features(percentages, *band) if discriminative is None else np.unique(discriminative)
        scores, n_disc = self.scores(chosen)
        return QScoreResult(
            scores=scores,
            n_highly=self.n_highly(),
            n_discriminative=n_disc,
            counts=self.counts.copy(),
            percentages=percentages,
            discriminative=chosen.astype(np.int64),
            band=(float(band[0]), float(band[1])) if discriminative is None else None,
            eps=self.eps,
        )

    def close(self) -> None:
        """Finish pending work and delete the spill files."""
        try:
            if self._pool is not None:
                self._pending.clear()
                self._pool.shutdown(wait=True)
                self._pool = None
        finally:
            for handle in (self._cols, self._devs):
                if not handle.closed:
                    handle.close()
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> QScoreStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown: nothing left to report to)
            pass


# --------------------------------------------------------------------------- front ends
def _run_stream(
    blocks: Iterable[np.ndarray],
    *,
    eps: float,
    band: tuple[float, float],
    discriminative: np.ndarray | None,
    spill_dir: str | Path | None,
) -> QScoreResult:
    with QScoreStream(eps, spill_dir=spill_dir) as stream:
        for block in blocks:
            stream.update(block)
        if stream.n == 0:
            raise ValueError("no representations to score (0 rows)")
        return stream.result(band, discriminative)


def qscore_array(
    features: np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    band: tuple[float, float] = DEFAULT_BAND,
    discriminative: np.ndarray | None = None,
    block_rows: int = 512,
    spill_dir: str | Path | None = None,
    progress: bool = False,
) -> QScoreResult:
    """Q-Score of every row of an in-memory or memory-mapped (N, r) array.

    Args:
        features: Raw representations (normalisation is part of the method).
        eps: ``epsilon`` of ``L_i``.
        band: Percentile band of ``D``.
        discriminative: A given ``D`` (then ``band`` is ignored).
        block_rows: Rows per block.
        spill_dir: Folder for the temporary spill.
        progress: Show a progress bar.
    """
    features = features if isinstance(features, np.ndarray) else np.asarray(features)
    blocks = iter_row_blocks(features, block_rows)
    if progress:
        blocks = tqdm(blocks, total=-(-features.shape[0] // block_rows), desc="q-score", unit="block")
    return _run_stream(blocks, eps=eps, band=band, discriminative=discriminative, spill_dir=spill_dir)


@dataclass
class EmbeddingChunks:
    """The chunk files of a ``replens embed`` folder, read one at a time (bounded memory).

    Attributes:
        path: The folder.
        meta: Its ``meta.json``.
        files: Feature chunk paths in row order.
        labels, domains, index: (N,) int64 arrays over all chunks.
        names: N sample names.
    """

    path: Path
    meta: dict[str, Any]
    files: list[Path]
    labels: np.ndarray
    domains: np.ndarray
    index: np.ndarray
    names: list[str]

    @classmethod
    def open(cls, path: str | Path) -> EmbeddingChunks:
        """Validate and open a folder written by ``replens.models.extract_features``."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise EmbeddingsError(f"{path} has no meta.json: not an embeddings folder (write one with `replens embed`)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise EmbeddingsError(f"{meta_path} is unreadable: {exc}") from None
        if not meta.get("complete"):
            raise EmbeddingsError(f"{path} is incomplete; run `replens embed` again with the same arguments to finish it")
        files, labels, domains, index, names = [], [], [], [], []
        for entry in meta.get("chunks", []):
            stem = path / entry["file"]
            try:
                feats = np.load(f"{stem}.npy", mmap_mode="r", allow_pickle=False)
                parts = [np.load(f"{stem}.{p}.npy", allow_pickle=False) for p in ("labels", "domains", "index")]
                chunk_names = json.loads(Path(f"{stem}.names.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise EmbeddingsError(f"chunk {stem} is missing or corrupt: {exc}") from None
            count = int(entry["count"])
            if feats.ndim != 2 or feats.shape[0] != count or feats.shape[1] != int(meta["dim"]):
                raise EmbeddingsError(f"{stem}.npy has shape {feats.shape}, expected ({count}, {meta['dim']})")
            if any(len(p) != count for p in parts) or len(chunk_names) != count:
                raise EmbeddingsError(f"chunk {stem} has arrays of inconsistent length")
            files.append(Path(f"{stem}.npy"))
            labels.append(parts[0])
            domains.append(parts[1])
            index.append(parts[2])
            names.extend(chunk_names)

        def cat(arrays: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)

        return cls(path, meta, files, cat(labels), cat(domains), cat(index), names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def blocks(self, block_rows: int = 512) -> Iterator[np.ndarray]:
        """Row blocks over all chunks, in order."""
        for file in self.files:
            yield from iter_row_blocks(np.load(file, mmap_mode="r", allow_pickle=False), block_rows)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), r) float32 copy of the given global rows (e.g. a probe subset)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=np.float32)
        start = 0
        for file in self.files:
            feats = np.load(file, mmap_mode="r", allow_pickle=False)
            stop = start + feats.shape[0]
            sel = np.flatnonzero((indices >= start) & (indices < stop))
            if len(sel):
                out[sel] = feats[indices[sel] - start]
            start = stop
        return out


def qscore_embeddings(
    path: str | Path,
    *,
    eps: float = DEFAULT_EPS,
    band: tuple[float, float] = DEFAULT_BAND,
    discriminative: np.ndarray | None = None,
    block_rows: int = 512,
    spill_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[QScoreResult, EmbeddingChunks]:
    """Q-Score of a ``replens embed`` folder, streamed chunk by chunk.

    Returns:
        The result and the opened :class:`EmbeddingChunks` (labels, names, ...).

    Raises:
        NonFiniteRowsError: Rows with NaN/inf; the message names the samples and the folder.
    """
    chunks = EmbeddingChunks.open(path)  # raw or L2-normalised rows give the same result
    blocks: Iterable[np.ndarray] = chunks.blocks(block_rows)
    if progress:
        total = sum(-(-int(entry["count"]) // block_rows) for entry in chunks.meta.get("chunks", []))
        blocks = tqdm(blocks, total=total, desc="q-score", unit="block")
    try:
        result = _run_stream(blocks, eps=eps, band=band, discriminative=discriminative, spill_dir=spill_dir)
    except NonFiniteRowsError as exc:
        names = [chunks.names[r] for r in exc.rows[:10]]
        raise NonFiniteRowsError(
            f"{chunks.path}: non-finite representations in rows {exc.rows[:10]} (samples {names})", exc.rows
        ) from None
    return result, chunks


def qscore_model(
    backbone: Any,
    source: Any,
    work_dir: str | Path,
    *,
    layer: str | None = None,
    eps: float = DEFAULT_EPS,
    band: tuple[float, float] = DEFAULT_BAND,
    discriminative: np.ndarray | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[QScoreResult, EmbeddingChunks]:
    """Embed ``source`` with ``backbone`` into ``work_dir`` (resumable) and stream its Q-Scores.

    The representations are written raw (``normalize=False``): the method
    normalises them itself.
    """
    out = extract_features(backbone, source, work_dir, layer=layer, normalize=False, batch_size=batch_size,
                           device=device, num_workers=num_workers, progress=progress)
    return qscore_embeddings(out, eps=eps, band=band, discriminative=discriminative,
                             spill_dir=os.fspath(work_dir), progress=progress)
