"""Grad-CAM crops of highly activating images (seed section 4.2.1, Figure 4.1).

We use pytorch-grad-cam's ``GradCAM`` with one small extension point, the
target :class:`FeatureGroupTarget` (the sum of the group's features, as the
authors' ``FeatureGroupOutput``), and the authors' choices: the cam is computed
over **all blocks of the last stage** (their ``target_layers=encoder.layer4``
iterates over the stage's blocks), binarised at 0.6, and the bounding box of
the largest connected region is cropped. The hooks pytorch-grad-cam registers
are always released, also when the forward raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

__all__ = [
    "FeatureGroupTarget",
    "cam_boxes",
    "crop_images",
    "group_cams",
    "largest_region_box",
    "last_stage_blocks",
    "resize_crops",
]


class FeatureGroupTarget:
    """Grad-CAM target: the sum of a feature group's activations.

    Args:
        features: Feature indices of the group.
    """

    def __init__(self, features: Sequence[int]) -> None:
        self.features = [int(f) for f in features]

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if model_output.ndim == 1:
            return model_output[self.features].sum()
        return model_output[:, self.features].sum(dim=1)


def _resolve(backbone: nn.Module, name: str) -> nn.Module:
    root = backbone.layer_root() if hasattr(backbone, "layer_root") else backbone
    modules = dict(root.named_modules())
    if name not in modules:
        names = backbone.layer_names() if hasattr(backbone, "layer_names") else list(modules)
        raise KeyError(f"unknown layer {name!r} for Grad-CAM; known: {names}")
    return modules[name]


def last_stage_blocks(backbone: nn.Module, layer: str | None = None) -> list[nn.Module]:
    """The modules Grad-CAM hooks: every block of the last stage.

    Args:
        backbone: A :class:`~replens.models.Backbone` (``layer_names()`` in execution order).
        layer: A stage name to use instead of the last one.

    Returns:
        The stage's children when it is a container of blocks (each child has
        its own sub-modules, e.g. ResNet ``layer4``), else the stage itself
        (e.g. a conv-BN-ReLU block, or one transformer block).
    """
    if layer is None:
        names = backbone.layer_names() if hasattr(backbone, "layer_names") else []
        if not names:
            raise ValueError("cannot find the last stage: pass the Grad-CAM layer explicitly")
        layer = names[-1]
    stage = _resolve(backbone, layer)
    children = list(stage.children())
    if (
        isinstance(stage, nn.Sequential | nn.ModuleList)
        and children
        and all(any(True for _ in c.children()) for c in children)
    ):
        return children
    return [stage]


def _token_reshape(num_prefix_tokens: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Turn (B, N, D) transformer tokens into a (B, D, h, w) map (prefix tokens dropped)."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            return tokens
        patches = tokens[:, num_prefix_tokens:, :]
        side = int(round(patches.shape[1] ** 0.5))
        if side * side != patches.shape[1]:
            raise ValueError(f"cannot reshape {patches.shape[1]} patch tokens into a square grid for Grad-CAM")
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def group_cams(
    backbone: nn.Module,
    images: torch.Tensor,
    group: Sequence[int],
    *,
    target_layers: Sequence[nn.Module] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM maps of a feature group for a batch of images.

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
    from pytorch_grad_cam import GradCAM

    layers = list(target_layers) if target_layers is not None else last_stage_blocks(backbone)
    reshape = _token_reshape(int(getattr(backbone, "num_prefix_tokens", 0)))
    was_training = backbone.training
    backbone.eval()
    cam = GradCAM(model=backbone, target_layers=layers, reshape_transform=reshape)
    try:
        out = []
        for lo in range(0, len(images), batch_size):
            x = backbone.preprocess(images[lo : lo + batch_size])
            targets = [FeatureGroupTarget(group) for _ in range(len(x))]
            out.append(np.asarray(cam(input_tensor=x, targets=targets), dtype=np.float32))
    finally:
        cam.activations_and_grads.release()
        backbone.zero_grad(set_to_none=True)
        backbone.train(was_training)
    if not out:
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    return np.concatenate(out)


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
