"""Saliency IoU of discriminative features against core and spurious masks (paper section 3.5).

For image ``i``, the Grad-CAM heatmap (:mod:`replens.models.gradcam`) of its discriminative
features uses the target ``sum_{j in L_i & D} h_ij`` (the sample's own highly
activating discriminative features, recomputed from the model output; the
paper "combines each individual feature heatmap") at the last stage of the
backbone. With ``Ar_i = {p : cam_i(p) > threshold}`` the heatmap area and
``s(X) = sum_{p in X} cam_i(p)`` the heat inside a region,

    IoU_i^core = s(Ar_i & core_i) / s(Ar_i | core_i)     (and the same for sp)

and ``mIoU`` is the mean over the images (Figure 3.7). ``threshold = 0``
makes ``Ar_i`` the support of the heatmap, and the IoU the fraction of its
heat inside the mask. Images whose ``L_i & D`` is empty have no target and are
skipped (counted in the result), as are images with an all-zero heatmap.

Masks come from any source with ``core_mask(i)`` / ``spurious_mask(i)`` (the
embedded world) or from Salient ImageNet (Singla & Feizi, 2022) through
:class:`SalientImageNetSource`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from replens.data.base import DataError, ImageSource, decode_image, resize_center_crop
from replens.models.gradcam import DiscriminativeSetTarget, cam_layers, grad_cam
from replens.quality.qscore import DEFAULT_EPS

__all__ = [
    "DiscriminativeTarget",
    "SalientImageNetSource",
    "SaliencyResult",
    "discriminative_cams",
    "heat_iou",
    "saliency_iou",
]


class DiscriminativeTarget(DiscriminativeSetTarget):
    """:class:`~replens.models.gradcam.DiscriminativeSetTarget` with Q-Score's default ``epsilon``.

    Args:
        discriminative: Indices of ``D``.
        eps: ``epsilon`` of ``L_i``.
    """

    def __init__(self, discriminative: Sequence[int] | np.ndarray, eps: float = DEFAULT_EPS) -> None:
        super().__init__(discriminative, eps)


def discriminative_cams(
    backbone: Any,
    images: torch.Tensor,
    discriminative: Sequence[int] | np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    layer: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps of each image's discriminative features.

    Args:
        backbone: A ``replens.models`` backbone.
        images: (B, 3, H, W) uint8 (or float in [0, 1]) images.
        discriminative: Indices of ``D``.
        eps: ``epsilon`` of ``L_i``.
        layer: Target layer (default: the backbone's last listed layer, its
            last stage). Token outputs (B, N, D) are laid out on a square grid.
        device: Where to run.

    Returns:
        ``(cams, n_targets)``: (B, H, W) float32 heatmaps in [0, 1]
        (pytorch-grad-cam's per-image min-max scaling; all zero when the image
        has no target) and (B,) the number of features in each target.

    Grad-CAM is :func:`replens.models.gradcam.grad_cam` on the stage as one
    module (all images in one pass); its hooks are released in every case.
    """
    backbone.to(device)
    target = DiscriminativeTarget(discriminative, eps)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            outputs = backbone(backbone.preprocess(images))
    finally:
        backbone.train(was_training)
    n_targets = np.array([len(target.features(o)) for o in outputs], dtype=np.int64)
    heat = grad_cam(backbone, images, target, target_layers=cam_layers(backbone, layer, blocks=False))
    heat = np.asarray(heat, dtype=np.float32)
    heat[n_targets == 0] = 0.0
    return heat, n_targets


def heat_iou(cam: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> float:
    """``s(Ar & M) / s(Ar | M)`` with ``Ar = {cam > threshold}`` and ``s`` the heat in a region (section 3.5).

    Returns NaN when the union holds no heat.
    """
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if cam.shape != mask.shape:
        raise ValueError(f"heatmap {cam.shape} and mask {mask.shape} differ in shape")
    area = cam > threshold
    union = float(cam[area | mask].sum())
    return float(cam[area & mask].sum()) / union if union > 0 else float("nan")


@dataclass
class SaliencyResult:
    """Per-image saliency IoUs and their means (percent in :meth:`summary`)."""

    indices: np.ndarray
    iou_core: np.ndarray
    iou_spurious: np.ndarray
    n_targets: np.ndarray
    threshold: float
    layer: str

    def summary(self, correct: np.ndarray | None = None) -> dict[str, Any]:
        """mIoU^core and mIoU^sp over scored images, also split by correctness (Figure 3.7)."""
        valid = ~np.isnan(self.iou_core) & ~np.isnan(self.iou_spurious)

        def means(sel: np.ndarray) -> dict[str, Any]:
            sel = sel & valid
            return {
                "miou_core": float(100 * self.iou_core[sel].mean()) if sel.any() else float("nan"),
                "miou_spurious": float(100 * self.iou_spurious[sel].mean()) if sel.any() else float("nan"),
                "images": int(sel.sum()),
            }

        out = {
            **means(np.ones(len(valid), dtype=bool)),
            "skipped_no_discriminative": int((self.n_targets == 0).sum()),
            "skipped_zero_heatmap": int(((self.n_targets > 0) & ~valid).sum()),
            "threshold": self.threshold,
            "layer": self.layer,
        }
        if correct is not None:
            correct = np.asarray(correct, dtype=bool)
            out["correct"] = means(correct)
            out["misclassified"] = means(~correct)
        return out


def saliency_iou(
    backbone: Any,
    source: Any,
    discriminative: Sequence[int] | np.ndarray,
    indices: Sequence[int] | np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    layer: str | None = None,
    threshold: float = 0.5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> SaliencyResult:
    """Heat IoU of discriminative-feature Grad-CAMs with each image's core and spurious masks.

    Args:
        backbone: The encoder.
        source: An image source with ``core_mask(i)`` and ``spurious_mask(i)``
            ((H, W) masks at the resolution its images are returned).
        discriminative: Indices of ``D``.
        indices: Source positions to score.
        eps: ``epsilon`` of ``L_i``.
        layer: Grad-CAM target layer (default: the last stage).
        threshold: Heatmap area threshold (see :func:`heat_iou`).
        batch_size: Images per Grad-CAM call.
        device: Where to run.
        progress: Progress bar.
    """
    if not (hasattr(source, "core_mask") and hasattr(source, "spurious_mask")):
        raise TypeError(f"{type(source).__name__} has no core_mask/spurious_mask: saliency IoU needs masked images "
                        "(a world source, or SalientImageNetSource)")
    layer_name, _ = backbone.find_layer(layer)
    indices = np.asarray(indices, dtype=np.int64)
    iou_core = np.full(len(indices), np.nan)
    iou_sp = np.full(len(indices), np.nan)
    n_targets = np.zeros(len(indices), dtype=np.int64)
    starts = range(0, len(indices), batch_size)
    for start in tqdm(starts, desc="grad-cam", unit="batch", disable=not progress):
        batch_idx = indices[start : start + batch_size]
        samples = [source[int(i)] for i in batch_idx]
        bad = [s["name"] for s in samples if s["image"] is None]
        if bad:
            raise DataError(f"unreadable images for saliency: {bad[:5]}")
        images = torch.stack([s["image"] for s in samples])
        cams, counts = discriminative_cams(backbone, images, discriminative, eps=eps, layer=layer, device=device)
        n_targets[start : start + len(batch_idx)] = counts
        for k, i in enumerate(batch_idx):
            if counts[k] == 0:
                continue
            iou_core[start + k] = heat_iou(cams[k], source.core_mask(int(i)), threshold)
            iou_sp[start + k] = heat_iou(cams[k], source.spurious_mask(int(i)), threshold)
    return SaliencyResult(indices, iou_core, iou_sp, n_targets, float(threshold), layer_name)


# --------------------------------------------------------------------------- Salient ImageNet
def _spurious_votes(csv_path: Path) -> dict[tuple[int, int], str]:
    """(class_index, feature_index) -> "core"/"spurious" from the Mechanical Turk answers.

    A feature is spurious for a class when at least 3 workers answered
    ``separate_object`` or ``background`` (the rule of the dataset's own
    ``MTurk_Results``), core otherwise.
    """
    votes: dict[tuple[int, int], int] = defaultdict(int)
    seen: set[tuple[int, int]] = set()
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        need = {"Input.class_index", "Input.feature_index", "Answer.main"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise KeyError(f"{csv_path}: missing column(s) {sorted(missing)}")
        for row_number, row in enumerate(reader, start=2):
            try:
                key = (int(row["Input.class_index"]), int(row["Input.feature_index"]))
            except ValueError:
                raise ValueError(f"{csv_path}, line {row_number}: class/feature index is not an integer") from None
            seen.add(key)
            if row["Answer.main"] in ("separate_object", "background"):
                votes[key] += 1
    return {key: ("spurious" if votes[key] >= 3 else "core") for key in seen}


class SalientImageNetSource(ImageSource):
    """Salient ImageNet images with core and spurious masks, from local folders.

    Layout (the dataset's own)::

        masks_root/<wnid>/image_names_map.csv      one column per feature index, image names in it
        masks_root/<wnid>/feature_<k>/<image>.JPEG  soft mask of feature k on that image (grayscale)
        csv_path (discover_spurious_features.csv)   Mechanical Turk answers per (class, feature)
        images_root/<wnid>/<image>.JPEG             the ImageNet images

    The core mask of an image is the pixel-wise max of its core features'
    masks, the spurious mask that of its spurious features (as the dataset's
    loaders do), binarised at ``mask_threshold``. Images and masks are
    resized and center-cropped to ``image_size``.

    Args:
        masks_root: The ``salient_imagenet_dataset`` folder.
        images_root: ImageNet train images, one folder per wordnet id.
        csv_path: The Mechanical Turk results (default: ``masks_root/discover_spurious_features.csv``).
        image_size: Side of returned images and masks.
        mask_threshold: Soft-mask binarisation threshold in [0, 1].
        classes: Restrict to these class indices.
    """

    def __init__(self, masks_root: str | Path, images_root: str | Path, csv_path: str | Path | None = None,
                 image_size: int = 224, mask_threshold: float = 0.5, classes: Sequence[int] | None = None) -> None:
        super().__init__(image_size)
        self.masks_root, self.images_root = Path(masks_root), Path(images_root)
        csv_path = Path(csv_path) if csv_path else self.masks_root / "discover_spurious_features.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"Salient ImageNet answers not found: {csv_path}")
        self.mask_threshold = float(mask_threshold)
        kinds = _spurious_votes(csv_path)
        wnids = self._wnids(csv_path)
        items: list[tuple[int, str, str, list[int], list[int]]] = []
        for class_index in sorted({c for c, _ in kinds} if classes is None else set(classes)):
            wnid = wnids.get(class_index)
            if wnid is None:
                raise KeyError(f"class index {class_index} is not in {csv_path}")
            folder = self.masks_root / wnid
            names_file = folder / "image_names_map.csv"
            if not names_file.is_file():
                continue  # a class without localised masks
            per_image: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"core": [], "spurious": []})
            with open(names_file, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                for row in reader:
                    for feature, image in row.items():
                        if not image:
                            continue
                        try:
                            key = (class_index, int(feature))
                        except ValueError:
                            raise ValueError(f"{names_file}: column {feature!r} is not a feature index") from None
                        if key in kinds:
                            per_image[image][kinds[key]].append(int(feature))
            for image in sorted(per_image):
                entry = per_image[image]
                items.append((class_index, wnid, image, entry["core"], entry["spurious"]))
        if not items:
            raise DataError(f"no Salient ImageNet masks found under {self.masks_root}")
        self.items = items
        class_ids = sorted({c for c, *_ in items})
        self.classes = [wnids[c] for c in class_ids]
        position = {c: k for k, c in enumerate(class_ids)}
        self.class_indices = np.array([c for c, *_ in items], dtype=np.int64)
        self.labels = np.array([position[c] for c, *_ in items], dtype=np.int64)
        self.domains = np.zeros(len(items), dtype=np.int64)
        self.domain_names = ["imagenet"]

    @staticmethod
    def _wnids(csv_path: Path) -> dict[int, str]:
        out: dict[int, str] = {}
        with open(csv_path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if "Input.wordnet_id" in row:
                    out[int(row["Input.class_index"])] = row["Input.wordnet_id"]
        return out

    def name(self, index: int) -> str:
        _, wnid, image, _, _ = self.items[index]
        return f"{wnid}/{image}"

    def read(self, index: int) -> np.ndarray:
        _, wnid, image, _, _ = self.items[index]
        path = self.images_root / wnid / f"{image}.JPEG"
        try:
            return decode_image(path.read_bytes(), str(path))
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from None

    def _mask(self, index: int, features: list[int]) -> np.ndarray:
        _, wnid, image, _, _ = self.items[index]
        size = self.image_size
        out: np.ndarray | None = None
        for feature in features:
            path = self.masks_root / wnid / f"feature_{feature}" / f"{image}.JPEG"
            try:
                with Image.open(path) as handle:
                    soft = np.asarray(handle.convert("L"), dtype=np.float32) / 255.0
            except OSError as exc:
                raise DataError(f"cannot read mask {path}: {exc}") from None
            out = soft if out is None else np.maximum(out, soft)
        if out is None:
            h, w = self.read(index).shape[:2]
            out = np.zeros((h, w), dtype=np.float32)
        if size is not None:
            grey = (np.clip(out, 0, 1) * 255).astype(np.uint8)
            out = resize_center_crop(np.repeat(grey[:, :, None], 3, axis=2), size)[:, :, 0].astype(np.float32) / 255
        return out > self.mask_threshold

    def core_mask(self, index: int) -> np.ndarray:
        """(H, W) bool union of the image's core-feature masks."""
        return self._mask(index, self.items[index][3])

    def spurious_mask(self, index: int) -> np.ndarray:
        """(H, W) bool union of the image's spurious-feature masks."""
        return self._mask(index, self.items[index][4])
