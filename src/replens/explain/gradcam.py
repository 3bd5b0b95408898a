"""Grad-CAM crops of highly activating images (paper section 4.2.1, Figure 4.1).

Grad-CAM itself is :mod:`replens.models.gradcam` (the one implementation,
shared with the saliency of section 3.5) with the target
:class:`~replens.models.gradcam.FeatureGroupTarget` (the sum of the group's
features, as the authors' ``FeatureGroupOutput``). The authors' choices: the
cam is computed over **all blocks of the last stage** (their
``target_layers=encoder.layer4`` iterates over the stage's blocks), binarised
at 0.6, and the bounding box of the largest connected region is cropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from replens.models.gradcam import FeatureGroupTarget, cam_layers, grad_cam

__all__ = [
    "FeatureGroupTarget",
    "cam_boxes",
    "crop_images",
    "group_cams",
    "largest_region_box",
    "last_stage_blocks",
    "resize_crops",
]


def last_stage_blocks(backbone: nn.Module, layer: str | None = None) -> list[nn.Module]:
    """The modules FALCON's Grad-CAM hooks: every block of the last stage (or of ``layer``).

    See :func:`replens.models.gradcam.cam_layers`: a stage that is a container
    of blocks (e.g. ResNet ``layer4``) gives its children, any other stage itself.
    """
    return cam_layers(backbone, layer, blocks=True)


def group_cams(
    backbone: nn.Module,
    images: torch.Tensor,
    group: Sequence[int],
    *,
    target_layers: Sequence[nn.Module] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM maps of a feature group for a batch of images (:func:`replens.models.gradcam.grad_cam`).

    Args:
        backbone: The encoder (its ``preprocess`` normalises uint8 images and
            its forward returns (B, r) representations).
        images: uint8 (B, 3, H, W) images.
        group: Feature indices; the target is the sum of their activations.
        target_layers: Modules to hook (default :func:`last_stage_blocks`).
        batch_size: Images per Grad-CAM pass.

    Returns:
        (B, H, W) float32 maps in [0, 1] (each map min-max scaled by pytorch-grad-cam).
    """
    layers = list(target_layers) if target_layers is not None else last_stage_blocks(backbone)
    return grad_cam(backbone, images, FeatureGroupTarget(group), target_layers=layers, batch_size=batch_size)


def largest_region_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) of the connected region with the largest box area.

    8-connectivity; ties go to the first region in scan order. ``None`` when
    the mask is empty.
    """
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    best, best_area = None, -1
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        ys, xs = sl
        area = (ys.stop - ys.start) * (xs.stop - xs.start)
        if area > best_area:
            best, best_area = (xs.start, ys.start, xs.stop, ys.stop), area
    return best


def cam_boxes(cams: np.ndarray, threshold: float = 0.6) -> list[tuple[int, int, int, int]]:
    """One crop box per cam: the largest region of ``cam >= threshold`` (the whole image if none)."""
    boxes = []
    for cam in cams:
        box = largest_region_box(cam >= threshold)
        boxes.append(box if box is not None else (0, 0, cam.shape[1], cam.shape[0]))
    return boxes


def crop_images(images: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> list[torch.Tensor]:
    """Crop uint8 (B, 3, H, W) images to their boxes (each crop keeps its own size)."""
    return [img[:, y0:y1, x0:x1].clone() for img, (x0, y0, x1, y1) in zip(images, boxes, strict=True)]


def resize_crops(crops: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Resize every crop to ``size x size`` (bilinear, antialiased).

    The aspect ratio is not kept, as the authors' ``Resize((224, 224))``.

    Shape:
        - Input: crops of (3, h_i, w_i) uint8
        - Output: (B, 3, size, size) uint8
    """
    import torch.nn.functional as F

    if not crops:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    out = []
    for crop in crops:
        x = crop.float().unsqueeze(0)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
