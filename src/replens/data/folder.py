"""ImageFolder trees as a source (``folder:`` specs).

``ROOT/CLASS/**/IMAGE`` with class folders sorted by name (torchvision's
``find_classes`` / ``make_dataset``); labels come from the folder names, so no
image is opened to list the dataset.
"""

from __future__ import annotations

import os

import numpy as np

from replens.data.base import DataError, ImageSource, decode_image


class FolderSource(ImageSource):
    """One ImageFolder tree, one domain.

    Args:
        root: Directory with one sub-folder per class.
        image_size: Output side, see :class:`ImageSource`.
        domain: Name of the domain (default: the root's base name).
        extensions: File endings counted as images (case-insensitive; default torchvision's ``IMG_EXTENSIONS``).

    Raises:
        DataError: The root is missing, has no class folders or no images.
    """

    def __init__(
        self,
        root: str,
        *,
        image_size: int | None = None,
        domain: str | None = None,
        extensions: tuple[str, ...] | None = None,
    ) -> None:
        # imported on use: torchvision imports torch._dynamo (over a second at `replens` start-up)
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        super().__init__(image_size)
        extensions = IMG_EXTENSIONS if extensions is None else tuple(extensions)
        root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(root):
            raise DataError(f"image folder not found: {root!r}")
        try:
            classes, class_to_idx = find_classes(root)
        except FileNotFoundError as exc:
            raise DataError(f"image folder {root!r} has no class sub-folders") from exc
        samples = make_dataset(root, class_to_idx, extensions=extensions, allow_empty=True)
        if not samples:
            raise DataError(f"image folder {root!r} holds no images with extensions {', '.join(extensions)}")
        self.root = root
        self.classes = list(classes)
        self.domain_names = [domain or os.path.basename(root)]
        self._paths = [path for path, _ in samples]
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.domains = np.zeros(len(samples), dtype=np.int64)
        self._base = os.path.dirname(root)

    def read(self, index: int) -> np.ndarray:
        """Decode image ``index``; a missing or unreadable file raises DataError."""
        path = self._paths[index]
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise DataError(f"cannot read image file {path!r}: {exc}") from exc
        return decode_image(data, path)

    def name(self, index: int) -> str:
        """Path relative to the root's parent, e.g. ``photo/dog/001.jpg``."""
        return os.path.relpath(self._paths[index], self._base)

    def path(self, index: int) -> str:
        """Absolute path of image ``index``."""
        return self._paths[index]
