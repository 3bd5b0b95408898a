"""The sample protocol every data source follows, and bad-image accounting.

Every source is a map-style :class:`torch.utils.data.Dataset` whose items are
dicts::

    {"image": uint8 tensor (3, H, W) or None when the file could not be decoded,
     "label": int (-1 when unknown), "domain": int, "index": int, "name": str}

and which exposes ``classes`` (class names), ``domain_names``, ``labels`` and
``domains`` (int64 numpy arrays, one entry per sample, read without decoding an
image) so that probes and reports never have to iterate over pixels.

Decoding errors never raise inside a DataLoader worker: the source returns the
sample with ``image=None``; :func:`collate_samples` drops it and records its
name, and :class:`BadImageGuard` (in the main process) warns once per file and
stops the run with :class:`DataError` once more than ``max_bad_fraction`` of the
images seen were unreadable.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)


class DataError(RuntimeError):
    """A data source is malformed, missing or has too many unreadable images."""


class BadImageWarning(UserWarning):
    """An image could not be decoded and was skipped."""


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array.

    Args:
        data: The encoded file (JPEG, PNG, ...).
        name: The file or member name, for the error message.

    Returns:
        Array of shape (H, W, 3), dtype uint8.

    Raises:
        DataError: The bytes are not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # PIL raises many types; we name the file instead
        raise DataError(f"cannot decode image {name!r}: {exc}") from exc


def resize_center_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    """Resize the shorter side to ``size`` and center-crop to ``size x size``.

    Args:
        image: (H, W, 3) uint8.
        size: Target side; ``None`` returns the image unchanged.

    Returns:
        (size, size, 3) uint8 (or the input when size is None or already square
        at that size).
    """
    if size is None:
        return image
    h, w = image.shape[:2]
    if h == size and w == size:
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    pil = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(pil)[top : top + size, left : left + size]


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor (contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack good samples into a batch, keeping the names of unreadable ones.

    Returns:
        ``{"image": uint8 (B, 3, H, W), "label": int64 (B,), "domain": int64
        (B,), "index": int64 (B,), "name": list[str], "bad": list[str],
        "seen": int}``. ``image`` is an empty (0, 3, 1, 1) tensor if every
        sample was bad.
    """
    good = [s for s in samples if s["image"] is not None]
    bad = [s["name"] for s in samples if s["image"] is None]
    if good:
        images = torch.stack([s["image"] for s in good])
    else:
        images = torch.empty((0, 3, 1, 1), dtype=torch.uint8)
    return {
        "image": images,
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "domain": torch.tensor([s["domain"] for s in good], dtype=torch.long),
        "index": torch.tensor([s["index"] for s in good], dtype=torch.long),
        "name": [s["name"] for s in good],
        "bad": bad,
        "seen": len(samples),
    }


@dataclass
class BadImageGuard:
    """Counts unreadable images in the main process and enforces a limit.

    Args:
        max_bad_fraction: Largest tolerated fraction of unreadable images among
            those seen so far (checked once at least ``min_seen`` were seen, and
            always at the end via :meth:`finish`).
        min_seen: Samples to see before the fraction is enforced.
    """

    max_bad_fraction: float = 0.01
    min_seen: int = 200
    seen: int = 0
    bad_names: list[str] = field(default_factory=list)

    def update(self, batch: dict[str, Any]) -> None:
        """Record one collated batch; warn per bad file; raise past the limit."""
        self.seen += int(batch["seen"])
        for name in batch["bad"]:
            self.bad_names.append(name)
            warnings.warn(
                f"skipped unreadable image {name!r} ({len(self.bad_names)} so far)",
                BadImageWarning,
                stacklevel=2,
            )
        if self.seen >= self.min_seen:
            self._check()

    def finish(self) -> None:
        """Enforce the limit on everything seen."""
        self._check()

    def _check(self) -> None:
        if self.seen and len(self.bad_names) / self.seen > self.max_bad_fraction:
            shown = ", ".join(self.bad_names[:5])
            raise DataError(
                f"{len(self.bad_names)} of {self.seen} images were unreadable "
                f"(> max_bad_fraction={self.max_bad_fraction}); first: {shown}"
            )


def iterate_batches(
    loader: torch.utils.data.DataLoader, guard: BadImageGuard | None = None
) -> Iterator[dict[str, Any]]:
    """Yield non-empty batches from a loader built with :func:`collate_samples`.

    Args:
        loader: A loader whose ``collate_fn`` is :func:`collate_samples`.
        guard: Bad-image accounting; by default a fresh :class:`BadImageGuard`
            whose limit is the dataset's ``max_bad_fraction`` (the ``max_bad=``
            option of a source spec), else 0.01.

    Raises:
        DataError: More than the tolerated fraction of images were unreadable.
    """
    if guard is None:
        limit = getattr(loader.dataset, "max_bad_fraction", BadImageGuard.max_bad_fraction)
        guard = BadImageGuard(max_bad_fraction=float(limit))
    for batch in loader:
        guard.update(batch)
        if batch["image"].shape[0]:
            yield batch
    guard.finish()


class ImageSource(torch.utils.data.Dataset):
    """Base class of data sources: subclasses implement :meth:`read`.

    Args:
        image_size: Side of the square images returned (shorter-side resize +
            center crop); ``None`` keeps the stored size.

    Subclasses set ``classes``, ``domain_names``, ``labels``, ``domains`` and
    implement ``__len__``, :meth:`read` and :meth:`name`.

    Attributes:
        max_bad_fraction: Largest tolerated fraction of unreadable images, used
            by :func:`iterate_batches` when no guard is given (the ``max_bad=``
            option of a source spec).
        spec: The spec string the source was opened from (set by
            ``replens.data.open_source``), ``None`` for sources built in Python.
    """

    classes: list[str]
    domain_names: list[str]
    labels: np.ndarray
    domains: np.ndarray
    max_bad_fraction: float = 0.01
    spec: str | None = None

    def __init__(self, image_size: int | None = None) -> None:
        self.image_size = image_size

    def __len__(self) -> int:
        return int(len(self.labels))

    def read(self, index: int) -> np.ndarray:
        """Return image ``index`` as (H, W, 3) uint8; raise DataError if unreadable."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """A stable, human-readable id of sample ``index`` (file or member name)."""
        return str(index)

    def describe(self) -> str:
        """A short description for error messages: the spec, else the class name."""
        return self.spec if self.spec else f"{type(self).__name__}({len(self)} samples)"

    def checked_index(self, index: int) -> int:
        """``index`` as a position in ``range(len(self))`` (negative counts from the end, as for a list),
        or an ``IndexError`` naming the index, the source and its length."""
        n = len(self)
        position = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= position < n:
            raise IndexError(f"index {index} out of range for {self.describe()} ({n} samples)")
        return position

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self.checked_index(index)
        try:
            image = to_chw_tensor(resize_center_crop(self.read(index), self.image_size))
        except DataError as exc:
            log.debug("unreadable sample %d: %s", index, exc)
            image = None
        return {
            "image": image,
            "label": int(self.labels[index]),
            "domain": int(self.domains[index]),
            "index": int(index),
            "name": self.name(index),
        }
