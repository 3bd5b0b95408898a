"""Extractor (b): torchvision Mask R-CNN with geometric relation predicates (paper section 6.4.1).

The paper segments with SEEM and relates objects with RAM. Neither can be
downloaded here; torchvision's COCO Mask R-CNN (ResNet-50 FPN) plays the
segmenter and :func:`~replens.tokens.geometry.geometric_relations` plays the
relation model:

* detections scoring at least ``score_threshold`` (0.9, the paper's SEEM
  threshold), at most ``max_objects``, most confident first;
* ``I``: each FPN level average pooled over the image (padding excluded), concatenated;
* ``V``: each FPN level mask pooled under each detection's mask, concatenated;
* ``U``/``E``: geometric predicates of every ordered pair, embedded by the VL text encoder.

Weights are read from a local file or torch's hub cache
(``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``), downloaded there on first use by
:mod:`replens.hub` (``REPLENS_OFFLINE=1`` turns that off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from replens.hub import checkpoints_dir, fetch_url
from replens.models.weights import WeightsError, load_weights
from replens.tokens.extract import RelationEmbedder, SceneGraph, build_batch_tokens, mask_pool
from replens.tokens.geometry import GeometryConfig, geometric_relations
from replens.tokens.sample import CONTEXT_LENGTH, N_NEIGHBOURS, VisualTokens

__all__ = ["MASKRCNN_FILE", "MaskRCNNTokenizer", "build_maskrcnn", "find_maskrcnn_weights"]

#: File name of torchvision's COCO Mask R-CNN ResNet-50 FPN weights.
MASKRCNN_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
#: Where torchvision publishes them.
MASKRCNN_URL = f"https://download.pytorch.org/models/{MASKRCNN_FILE}"


def find_maskrcnn_weights(weights: str | Path | None = None) -> Path:
    """The Mask R-CNN weights file: ``weights`` if given, else torch's hub cache (downloaded on first use).

    Raises:
        WeightsError: A given file does not exist.
        replens.hub.DownloadError: Not cached and not downloadable (the message says where it looked).
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"Mask R-CNN weights file not found: {path}")
        return path
    return fetch_url(MASKRCNN_URL, checkpoints_dir() / MASKRCNN_FILE, kind="weights",
                     what=f"Mask R-CNN weights ({MASKRCNN_FILE})", hint="or pass it with --maskrcnn-weights FILE")


def build_maskrcnn(
    weights: str | Path | None = None, *, min_size: int = 800, max_size: int = 1333, load: bool = True
) -> torch.nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` (91 COCO classes) with local weights.

    Args:
        weights: A weights file (default: torch's hub cache, see :func:`find_maskrcnn_weights`).
        min_size: Shorter side the detector resizes images to.
        max_size: Longest side cap.
        load: False builds a randomly initialised model (tests).

    Raises:
        WeightsError: Missing or mismatched weights.
    """
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    path = find_maskrcnn_weights(weights) if load else None
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=min_size, max_size=max_size
    )
    if path is not None:
        load_weights(model, path)
    return model.eval()


def _coco_names() -> list[str]:
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


class MaskRCNNTokenizer:
    """Images -> :class:`VisualTokens` with Mask R-CNN detections and geometric predicates.

    Args:
        relation_embedder: Embeds predicate words (``U``).
        model: A torchvision Mask R-CNN (default: :func:`build_maskrcnn` with ``weights``).
        weights: Weights file for the default model.
        score_threshold: Smallest detection score kept.
        mask_threshold: Mask probability threshold.
        max_objects: Most detections kept per image.
        geometry: Thresholds of the predicates.
        n_neighbours: Nearest neighbours per object.
        context_length: Token context length.
        device: Where the detector runs.
    """

    def __init__(
        self,
        relation_embedder: RelationEmbedder,
        *,
        model: torch.nn.Module | None = None,
        weights: str | Path | None = None,
        score_threshold: float = 0.9,
        mask_threshold: float = 0.5,
        max_objects: int = 16,
        geometry: GeometryConfig | None = None,
        n_neighbours: int = N_NEIGHBOURS,
        context_length: int = CONTEXT_LENGTH,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = (model if model is not None else build_maskrcnn(weights)).to(self.device).eval()
        self.relation_embedder = relation_embedder
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_objects = int(max_objects)
        self.geometry = geometry or GeometryConfig()
        self.n_neighbours = n_neighbours
        self.context_length = context_length
        self.class_names = _coco_names()

    @torch.no_grad()
    def detect(self, images: list[torch.Tensor]) -> tuple[list[SceneGraph], torch.Tensor, list[torch.Tensor]]:
        """Detect objects and pool FPN features.

        Args:
            images: (3, H, W) uint8 images (sizes may differ).

        Returns:
            ``(graphs, I, [V_i])``: scene graphs in image pixels, (B, d_i) image
            features and per-image (n_i, d_v) mask embeddings, on the CPU.
        """
        captured: dict[str, Any] = {}

        def keep_transform(_m: Any, _i: Any, out: Any) -> None:
            captured["images"] = out[0]

        def keep_features(_m: Any, _i: Any, out: Any) -> None:
            captured["features"] = out

        floats = [im.to(self.device).float() / 255.0 for im in images]
        handles = [
            self.model.transform.register_forward_hook(keep_transform),
            self.model.backbone.register_forward_hook(keep_features),
        ]
        try:
            detections = self.model(floats)
        finally:
            for h in handles:
                h.remove()
        image_list, features = captured["images"], captured["features"]
        padded_h, padded_w = image_list.tensors.shape[-2:]
        levels = list(features.values())
        graphs, image_features, tangible = [], [], []
        for b, (image, det) in enumerate(zip(floats, detections, strict=True)):
            height, width = image.shape[-2:]
            keep = torch.nonzero(det["scores"] >= self.score_threshold).flatten()[: self.max_objects]
            boxes = det["boxes"][keep].cpu().numpy()
            masks = (det["masks"][keep, 0] > self.mask_threshold).cpu().numpy()
            for k, (x0, y0, x1, y1) in enumerate(boxes):  # an empty mask falls back to its box
                if not masks[k].any():
                    r0, c0 = int(y0), int(x0)
                    masks[k, r0 : max(r0 + 1, int(np.ceil(y1))), c0 : max(c0 + 1, int(np.ceil(x1)))] = True
            labels = det["labels"][keep].cpu().tolist()
            names = [self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in labels]
            relations = geometric_relations(boxes, (height, width), masks, self.geometry)
            graphs.append(SceneGraph(boxes, relations, (height, width), masks=masks, names=names))
            # masks in the detector's resized, padded frame
            rh, rw = image_list.image_sizes[b]
            frame = torch.zeros(len(masks) + 1, padded_h, padded_w, device=self.device)
            frame[0, :rh, :rw] = 1.0  # the whole image, for I
            if len(masks):
                resized = F.interpolate(torch.from_numpy(masks).float()[:, None].to(self.device), size=(rh, rw),
                                        mode="bilinear", align_corners=False)[:, 0]
                frame[1:, :rh, :rw] = resized
            pooled = torch.cat([mask_pool(level[b].float(), frame) for level in levels], dim=1).cpu()
            image_features.append(pooled[0])
            tangible.append(pooled[1:])
        return graphs, torch.stack(image_features), tangible

    def tokenize(self, images: list[torch.Tensor]) -> list[VisualTokens]:
        """Visual tokens of (3, H, W) uint8 images."""
        graphs, image_features, tangible = self.detect(images)
        return build_batch_tokens(
            graphs, image_features, tangible, self.relation_embedder, self.n_neighbours, self.context_length
        )
