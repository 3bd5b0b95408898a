"""In-memory and on-disk numpy arrays as a source (``npz:`` and ``npy:`` specs).

Layouts accepted for ``images``: (N, H, W, 3), (N, 3, H, W), (N, H, W, 1),
(N, 1, H, W) or (N, H, W) (grey, repeated to RGB); dtype uint8, or float with
values in [0, 1] (converted per image with ``round(x * 255)``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from replens.data.base import DataError, ImageSource


def array_layout(shape: tuple[int, ...], what: str) -> str:
    """Name the layout of an image stack: ``"nhwc"``, ``"nchw"`` or ``"nhw"``.

    Args:
        shape: Shape of the stack.
        what: Name of the array, for the error message.

    Raises:
        DataError: The shape is not one of the layouts in the module docstring.
    """
    if len(shape) == 3:
        return "nhw"
    if len(shape) == 4:
        if shape[-1] in (1, 3):
            return "nhwc"
        if shape[1] in (1, 3):
            return "nchw"
    raise DataError(f"{what} has shape {tuple(shape)}; expected (N,H,W,3), (N,3,H,W), (N,H,W,1), (N,1,H,W) or (N,H,W)")


def image_from_array(images: np.ndarray, index: int, layout: str, name: str) -> np.ndarray:
    """Take image ``index`` of a stack as (H, W, 3) uint8.

    Args:
        images: The stack (numpy array, memory map or CPU tensor converted with
            ``numpy()``).
        index: Which image.
        layout: From :func:`array_layout`.
        name: Sample name, for the error message.

    Raises:
        DataError: A float image has values outside [0, 1] (or NaN), or the
            dtype is neither uint8 nor float.
    """
    image = np.asarray(images[index])
    if layout == "nchw":
        image = image.transpose(1, 2, 0)
    elif layout == "nhw":
        image = image[:, :, None]
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise DataError(f"{name}: image dtype {image.dtype} is neither uint8 nor float")
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise DataError(f"{name}: float image values span [{lo}, {hi}], expected [0, 1]")
        image = np.rint(image * 255.0).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def default_class_names(labels: np.ndarray) -> list[str]:
    """``["0", ..., str(max label)]`` (empty when there is no label >= 0)."""
    top = int(labels.max()) if labels.size else -1
    return [str(i) for i in range(top + 1)]


class ArraySource(ImageSource):
    """A stack of images held as a numpy array (or memory map).

    Args:
        images: Image stack, see the module docstring for layouts and dtypes.
        labels: Class index per image; ``None`` means unlabeled (all -1).
        domains: Domain index per image (default all 0).
        classes: Class names (default ``"0" ... str(max label)``).
        domain_names: Domain names (default: ``[domain]`` for one domain, else
            ``"0" ... str(max domain)``).
        domain: Name of the single domain when ``domains`` is not given.
        image_size: Output side, see :class:`ImageSource`.
        name_prefix: Prefix of sample names (``PREFIX[i]``).
        names: One name per image, replacing ``PREFIX[i]`` (e.g. the names of
            the source an array was decoded from).

    Raises:
        DataError: Inconsistent lengths, a bad layout, labels outside the class
            list.

    Example:
        >>> import numpy as np
        >>> src = ArraySource(np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1]))
        >>> src[1]["label"], src.classes
        (1, ['0', '1'])
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | Sequence[int] | None = None,
        *,
        domains: np.ndarray | Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        domain_names: Sequence[str] | None = None,
        domain: str = "default",
        image_size: int | None = None,
        name_prefix: str = "array",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(image_size)
        what = f"{name_prefix} images"
        self._layout = array_layout(tuple(images.shape), what)
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise DataError(f"{what} have dtype {images.dtype}; expected uint8 or float in [0, 1]")
        n = int(images.shape[0])
        if n == 0:
            raise DataError(f"{what} are empty")
        self._images = images
        self._prefix = name_prefix
        self._names = list(names) if names is not None else None
        if self._names is not None and len(self._names) != n:
            raise DataError(f"{name_prefix}: {len(self._names)} names for {n} images")
        self.labels = self._index_array(labels, n, "labels", default=-1)
        self.domains = self._index_array(domains, n, "domains", default=0)
        if self.domains.min() < 0:
            raise DataError(f"{name_prefix}: negative domain index {int(self.domains.min())}")
        if classes is None:
            self.classes = default_class_names(self.labels)
        else:
            self.classes = [str(c) for c in classes]
            if self.labels.max() >= len(self.classes):
                raise DataError(
                    f"{name_prefix}: label {int(self.labels.max())} is out of range for {len(self.classes)} classes"
                )
        if self.labels.min() < -1:
            raise DataError(f"{name_prefix}: negative label {int(self.labels.min())}")
        n_domains = int(self.domains.max()) + 1
        if domain_names is None:
            self.domain_names = [domain] if n_domains == 1 else [str(i) for i in range(n_domains)]
        else:
            self.domain_names = [str(d) for d in domain_names]
            if n_domains > len(self.domain_names):
                raise DataError(
                    f"{name_prefix}: domain {n_domains - 1} is out of range for {len(self.domain_names)} domain names"
                )

    def _index_array(self, values: object, n: int, what: str, *, default: int) -> np.ndarray:
        if values is None:
            return np.full(n, default, dtype=np.int64)
        array = np.asarray(values)
        if array.shape != (n,):
            raise DataError(f"{self._prefix}: {what} have shape {array.shape}, expected ({n},) (one per image)")
        if not np.issubdtype(array.dtype, np.integer):
            if not np.all(np.mod(array, 1) == 0):
                raise DataError(f"{self._prefix}: {what} are not integers ({array.dtype})")
        return array.astype(np.int64)

    @classmethod
    def from_file(
        cls,
        path: str,
        *,
        image_size: int | None = None,
        domain: str | None = None,
        unlabeled: bool = False,
    ) -> ArraySource:
        """Open an ``.npz`` file or a directory of ``.npy`` files.

        An ``.npz`` holds ``images``, ``labels`` and optionally ``domains``,
        ``classes`` and ``domain_names`` (string arrays). A directory holds the
        same names as ``NAME.npy`` (``images.npy`` is memory-mapped, so stacks
        larger than memory work); class and domain names may also be given as
        ``classes.txt`` / ``domain_names.txt`` (one per line).

        Args:
            path: The file or directory.
            image_size: Output side.
            domain: Name of the single domain (default: the file stem).
            unlabeled: Accept a missing ``labels`` array (labels -1).

        Raises:
            DataError: Missing path, missing ``images`` or ``labels``, unreadable
                file, inconsistent arrays.
        """
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            raise DataError(f"array file or directory not found: {path!r}")
        arrays: dict[str, np.ndarray] = {}
        try:
            if os.path.isdir(path):
                for key in ("images", "labels", "domains", "classes", "domain_names"):
                    file = os.path.join(path, f"{key}.npy")
                    if os.path.exists(file):
                        mode = "r" if key == "images" else None
                        arrays[key] = np.load(file, mmap_mode=mode, allow_pickle=False)
                    text = os.path.join(path, f"{key}.txt")
                    if key in ("classes", "domain_names") and os.path.exists(text):
                        with open(text, encoding="utf-8") as handle:
                            arrays[key] = np.array([ln.strip() for ln in handle if ln.strip()])
                stem = os.path.basename(os.path.normpath(path))
            else:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {key: data[key] for key in data.files}
                stem = os.path.splitext(os.path.basename(path))[0]
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read arrays from {path!r}: {exc}") from exc
        if "images" not in arrays:
            raise DataError(f"{path!r} has no 'images' array (found: {sorted(arrays)})")
        if "labels" not in arrays and not unlabeled:
            raise DataError(
                f"{path!r} has no 'labels' array (found: {sorted(arrays)}); use unlabeled=1 to open it without labels"
            )

        def names(key: str) -> list[str] | None:
            return [str(x) for x in arrays[key].tolist()] if key in arrays else None

        return cls(
            arrays["images"],
            arrays.get("labels"),
            domains=arrays.get("domains"),
            classes=names("classes"),
            domain_names=names("domain_names"),
            domain=domain or stem,
            image_size=image_size,
            name_prefix=os.path.basename(os.path.normpath(path)),
        )

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W, 3) uint8."""
        return image_from_array(self._images, index, self._layout, self.name(index))

    def name(self, index: int) -> str:
        """The given name, else ``PREFIX[index]``."""
        if self._names is not None:
            return self._names[index]
        return f"{self._prefix}[{index}]"
