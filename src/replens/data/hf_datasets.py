"""Hugging Face ``datasets`` image datasets as a source (``hf:NAME`` specs).

``NAME`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``,
a parquet file or folder of parquet files, or a dataset on the Hugging Face hub
(``uoft-cs/cifar10``), which ``datasets`` downloads into its cache on first
use. Either way the rows live in memory-mapped Arrow files: opening a source
reads no pixels, labels come from their column, and an image is decoded only
when its sample is read.

The image column defaults to the first ``Image`` feature, the label column to
the first ``ClassLabel`` feature (else a column named ``label``), whose names
become the class names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from replens.data.arrays import default_class_names
from replens.data.base import DataError, ImageSource, decode_image
from replens.hub import offline_mode

__all__ = ["HFDatasetSource", "load_hf_dataset"]


def _pick_split(data: Any, split: str | None, where: str) -> Any:
    import datasets

    if isinstance(data, datasets.DatasetDict):
        chosen = split or ("train" if "train" in data else next(iter(data)))
        if chosen not in data:
            raise DataError(f"{where} has splits {', '.join(data)}, not {chosen!r}")
        return data[chosen]
    return data


def load_hf_dataset(name: str, split: str | None = None) -> Any:
    """A memory-mapped ``datasets.Dataset`` from a saved folder, parquet files or the hub.

    Raises:
        DataError: Nothing readable under ``name`` or no such split; offline
            (``REPLENS_OFFLINE``) and a hub dataset not in the cache.
    """
    import datasets

    path = Path(os.path.expanduser(name))
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json",
                                                               "state.json")):
            return _pick_split(datasets.load_from_disk(str(path)), split, name)
        if path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
            files = [str(path)] if path.is_file() else sorted(str(p) for p in path.rglob("*.parquet"))
            return datasets.load_dataset("parquet", data_files=files, split="train")
        if path.exists():
            raise DataError(f"hf:{name}: not a saved dataset (no dataset_info.json / dataset_dict.json) "
                            "and no parquet files")
        if offline_mode():
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # datasets' own switch: its cache only
        return datasets.load_dataset(name, split=split or "train")
    except DataError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        raise DataError(f"cannot open Hugging Face dataset {name!r} (split {split!r}): {exc}") from None


class HFDatasetSource(ImageSource):
    """An image dataset of Hugging Face ``datasets``.

    Args:
        name: Saved folder, parquet file(s) or hub dataset name (see the module docstring).
        split: Split of a ``DatasetDict`` or hub dataset (default ``train``).
        image: Image column (default: the first ``Image`` feature).
        label: Label column (default: the first ``ClassLabel`` feature, else ``label``);
            ``""`` for an unlabelled dataset (labels -1).
        domain: Name of the single domain (default: the dataset's name).
        image_size: Output side, see :class:`ImageSource`.

    Raises:
        DataError: Missing dataset, split or column (the message lists the columns).
    """

    def __init__(
        self,
        name: str,
        *,
        split: str | None = None,
        image: str | None = None,
        label: str | None = None,
        domain: str | None = None,
        image_size: int | None = None,
    ) -> None:
        import datasets

        super().__init__(image_size)
        data = load_hf_dataset(name, split)
        features = data.features
        columns = list(features)
        if image is None:
            image = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
            if image is None:
                raise DataError(f"hf:{name} has no Image column; name one with image=COLUMN (columns: {columns})")
        if label is None:
            label = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
            label = label or ("label" if "label" in features else "")
        for kind, column in (("image", image), ("label", label)):
            if column and column not in features:
                raise DataError(f"hf:{name} has no {kind} column {column!r}; columns: {columns}")
        self.dataset_name = name.rstrip("/").rsplit("/", 1)[-1]
        self.image_column = image
        self._images = data.select_columns([image])
        if label:
            self.labels = np.asarray(data.data.column(label).to_numpy(zero_copy_only=False), dtype=np.int64)
            feature = features[label]
            names = getattr(feature, "names", None)
            self.classes = list(names) if names else default_class_names(self.labels)
        else:
            self.labels = np.full(len(data), -1, dtype=np.int64)
            self.classes = []
        self.domain_names = [domain or self.dataset_name]
        self.domains = np.zeros(len(self.labels), dtype=np.int64)

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W, 3) uint8 (decoded from its Arrow row)."""
        try:
            value = self._images[int(index)][self.image_column]
        except Exception as exc:  # datasets/PIL raise many types while decoding; name the sample
            raise DataError(f"cannot read {self.name(index)}: {exc}") from exc
        if isinstance(value, dict) and value.get("bytes") is not None:
            return decode_image(value["bytes"], self.name(index))
        if hasattr(value, "convert"):
            return np.asarray(value.convert("RGB"))
        array = np.asarray(value)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] != 3:
            raise DataError(f"{self.name(index)}: column {self.image_column!r} is not an RGB image")
        return array.astype(np.uint8)

    def name(self, index: int) -> str:
        """``NAME[index]``."""
        return f"{self.dataset_name}[{index}]"
