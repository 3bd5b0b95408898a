"""torchvision dataset classes as a source (``tv:NAME:ROOT`` specs).

CIFAR-10, CIFAR-100 and STL-10 are downloaded on first use when no root is
given (into ``$XDG_CACHE_HOME/replens/datasets``) or with ``download=True``:
the archive through :func:`replens.hub.fetch_url` (md5-checked, resumable,
``REPLENS_OFFLINE=1`` turns it off), extracted beside it and renamed into place
only when complete. Otherwise a missing root gives a :class:`DataError` that
says where torchvision looked. Datasets that keep their
images as one array (CIFAR-10/100, MNIST family, STL10, SVHN) are read from
that array without PIL; others go through the dataset's ``__getitem__``.
Grey images (MNIST) are repeated to RGB.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.data.arrays import array_layout, default_class_names, image_from_array
from replens.data.base import DataError, ImageSource
from replens.hub import fetch_url, replens_cache_dir


def torchvision_dataset_class(name: str) -> type:
    """Look a torchvision dataset class up by name, case-insensitively.

    Raises:
        DataError: No such dataset class (the message lists the known ones).
    """
    import torchvision.datasets as tvd  # imported on use: torchvision costs over a second at `replens` start-up

    known = {
        n: obj for n, obj in vars(tvd).items() if inspect.isclass(obj) and issubclass(obj, torch.utils.data.Dataset)
    }
    for candidate, obj in known.items():
        if candidate.lower() == name.lower():
            return obj
    raise DataError(f"torchvision has no dataset class {name!r}; known: {', '.join(sorted(known))}")


def expected_location(cls: type, root: str) -> str:
    """Where a torchvision dataset class looks for its files under ``root``."""
    import torchvision.datasets as tvd
    base = getattr(cls, "base_folder", None)
    if isinstance(base, str):
        return os.path.join(root, base)
    if issubclass(cls, tvd.MNIST):
        return os.path.join(root, cls.__name__, "raw")
    return root


#: torchvision dataset classes whose archive replens downloads (``url``, ``filename``, ``tgz_md5``, ``base_folder``).
DOWNLOADABLE = ("CIFAR10", "CIFAR100", "STL10")


def default_dataset_root() -> str:
    """Where datasets without a root are downloaded: ``$XDG_CACHE_HOME/replens/datasets``."""
    return str(replens_cache_dir() / "datasets")


def download_dataset(cls: type, root: str, *, progress: bool = True) -> Path:
    """Download and extract a torchvision dataset archive into ``root`` unless it is there.

    Args:
        cls: ``torchvision.datasets.CIFAR10``, ``CIFAR100`` or ``STL10``.
        root: The root given to the class.
        progress: Show a progress bar.

    Returns:
        The dataset folder (``root/<base_folder>``).

    Raises:
        DataError: A class replens cannot download, or an archive without the expected folder.
        replens.hub.DownloadError: Offline, unreachable or md5 mismatch (nothing is left behind).
    """
    from torchvision.datasets.utils import extract_archive

    if cls.__name__ not in DOWNLOADABLE:
        raise DataError(f"replens downloads {', '.join(DOWNLOADABLE)}, not {cls.__name__}; put its files under "
                        f"{expected_location(cls, root)} (e.g. torchvision.datasets.{cls.__name__}(root, download=True))")
    target = Path(root) / cls.base_folder
    if target.is_dir():
        return target
    archive = fetch_url(cls.url, Path(root) / cls.filename, kind="datasets", md5=cls.tgz_md5,
                        what=f"torchvision {cls.__name__} ({cls.filename})", progress=progress)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=f".{cls.base_folder}."))
    try:
        extract_archive(str(archive), str(scratch))
        if not (scratch / cls.base_folder).is_dir():
            raise DataError(f"{archive} does not hold the folder {cls.base_folder} that torchvision {cls.__name__} reads")
        os.replace(scratch / cls.base_folder, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class TorchvisionSource(ImageSource):
    """A torchvision dataset read from a local root.

    Args:
        name: Dataset class name in ``torchvision.datasets`` (any case), e.g.
            ``CIFAR10``, ``CIFAR100``, ``STL10``, ``MNIST``, ``SVHN``.
        root: The root directory given to the class (None: :func:`default_dataset_root`, downloading on first use).
        split: ``"train"`` / ``"test"`` (or any split the class accepts, e.g.
            STL10's ``"unlabeled"``). Classes with a ``train`` flag get
            ``train = (split == "train")``.
        image_size: Output side, see :class:`ImageSource`.
        download: Download the archive into ``root`` when missing (always when ``root`` is None).
        **kwargs: Passed to the dataset class.

    Raises:
        DataError: Unknown class, missing or corrupt files (naming the expected
            location), or no labels found.
    """

    def __init__(
        self,
        name: str,
        root: str | None,
        *,
        split: str = "train",
        image_size: int | None = None,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size)
        cls = torchvision_dataset_class(name)
        if root is None:
            root, download = default_dataset_root(), True
        root = os.path.abspath(os.path.expanduser(root))
        if download:
            os.makedirs(root, exist_ok=True)
            download_dataset(cls, root)
        params = inspect.signature(cls.__init__).parameters
        if "train" in params:
            if split not in ("train", "test"):
                raise DataError(f"torchvision {cls.__name__} has splits train and test, not {split!r}")
            kwargs.setdefault("train", split == "train")
        elif "split" in params:
            kwargs.setdefault("split", split)
        if "download" in params:
            kwargs["download"] = False
        where = expected_location(cls, root)
        if not os.path.isdir(root):
            raise DataError(
                f"torchvision {cls.__name__}: root {root!r} does not exist; torchvision expects "
                f"the files under {where!r} (add ?download=1 to the spec, or leave the root out "
                f"to use the download cache: tv:{cls.__name__})"
            )
        try:
            dataset = cls(root, **kwargs)
        except (RuntimeError, FileNotFoundError, OSError, ValueError) as exc:
            raise DataError(
                f"torchvision {cls.__name__} could not load from {root!r}: {exc} "
                f"(torchvision expects the files under {where!r}; download=False here)"
            ) from exc
        self.dataset = dataset
        self.dataset_name = cls.__name__
        self._array, self._layout = self._image_array(dataset)
        self.labels = self._read_labels(dataset)
        classes = getattr(dataset, "classes", None)
        if classes and len(classes) > int(self.labels.max()):
            self.classes = [str(c) for c in classes]
        else:
            self.classes = default_class_names(self.labels)
        self.domain_names = [self.dataset_name.lower()]
        self.domains = np.zeros(len(self.labels), dtype=np.int64)

    @staticmethod
    def _image_array(dataset: Any) -> tuple[np.ndarray | None, str]:
        data = getattr(dataset, "data", None)
        if isinstance(data, torch.Tensor):
            data = data.numpy()
        if isinstance(data, np.ndarray) and data.shape[:1] == (len(dataset),):
            try:
                return data, array_layout(data.shape, "data")
            except DataError:
                pass
        return None, ""

    def _read_labels(self, dataset: Any) -> np.ndarray:
        for attr in ("targets", "labels", "_labels", "y"):
            values = getattr(dataset, attr, None)
            if values is not None and len(values) == len(dataset):
                return np.asarray(values, dtype=np.int64).reshape(len(dataset))
        # generic fallback: ask the dataset (decodes every image once)
        return np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W, 3) uint8."""
        if self._array is not None:
            return image_from_array(self._array, index, self._layout, self.name(index))
        try:
            image = self.dataset[index][0]
            return np.asarray(image.convert("RGB"))
        except Exception as exc:  # torchvision datasets raise anything; name the sample
            raise DataError(f"cannot read {self.name(index)}: {exc}") from exc

    def name(self, index: int) -> str:
        """``NAME[index]``, e.g. ``CIFAR10[12]``."""
        return f"{self.dataset_name}[{index}]"
