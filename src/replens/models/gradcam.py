"""The one Grad-CAM of replens, on the :class:`~replens.models.Backbone` interface, with pluggable targets.

pytorch-grad-cam's ``GradCAM`` does the work; this module adds its small
extension points and the choices replens makes everywhere:

* a **target** is any callable from one sample's (r,) representation to a
  scalar (pytorch-grad-cam's target protocol). Two ship here:
  :class:`FeatureGroupTarget` (the sum of a feature group, FALCON's target,
  paper section 4.2.1) and :class:`DiscriminativeSetTarget` (the sum of a
  sample's highly activating discriminative features, the saliency of paper
  section 3.5);
* the **layers** hooked come from :meth:`Backbone.find_layer
  <replens.models.Backbone.find_layer>` through :func:`cam_layers`: every
  block of the last stage (the FALCON authors' ``encoder.layer4``) or the
  stage as one module;
* transformer token outputs (B, N, D) are laid out on a square grid, prefix
  tokens dropped (:func:`token_reshape`);
* the hooks are always released and gradients cleared, also when the forward
  or a target raises; the train/eval mode of every module is put back.

Used by :func:`replens.explain.gradcam.group_cams` and
:func:`replens.quality.saliency.discriminative_cams`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DiscriminativeSetTarget",
    "FeatureGroupTarget",
    "Target",
    "cam_layers",
    "grad_cam",
    "token_reshape",
]

Target = Callable[[torch.Tensor], torch.Tensor]
"""A Grad-CAM target: one sample's (r,) model output (or a (B, r) batch) -> a scalar (or (B,))."""


class FeatureGroupTarget:
    """Grad-CAM target: the sum of a feature group's activations (the authors' ``FeatureGroupOutput``).

    Args:
        features: Feature indices of the group.
    """

    def __init__(self, features: Sequence[int]) -> None:
        self.features = [int(f) for f in features]

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if model_output.ndim == 1:
            return model_output[self.features].sum()
        return model_output[:, self.features].sum(dim=1)


class DiscriminativeSetTarget:
    """Grad-CAM target: the sum of a sample's highly activating discriminative features (paper section 3.5).

    ``L_i`` (features above ``mean + eps * std`` of the L2-normalised
    representation) is recomputed from the detached model output, so one
    target object serves every sample. On an output without such a feature
    it returns a zero that still depends on the graph (a zero heatmap).

    Args:
        discriminative: Indices of ``D``.
        eps: ``epsilon`` of ``L_i``.
    """

    def __init__(self, discriminative: Sequence[int] | np.ndarray, eps: float) -> None:
        self.discriminative = torch.as_tensor(np.asarray(discriminative, dtype=np.int64))
        self.eps = float(eps)

    def features(self, output: torch.Tensor) -> torch.Tensor:
        """Indices of ``L_i & D`` for one representation (r,)."""
        with torch.no_grad():
            hn = F.normalize(output.detach().float(), dim=0)
            std, mean = torch.std_mean(hn, correction=0)
            active = torch.nonzero(hn > mean + self.eps * std).flatten()
        disc = self.discriminative.to(active.device)
        return active[torch.isin(active, disc)]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.features(output)].sum()


def cam_layers(backbone: Any, layer: str | None = None, *, blocks: bool = True) -> list[nn.Module]:
    """The modules Grad-CAM hooks.

    Args:
        backbone: A :class:`~replens.models.Backbone` (or a wrapper with ``find_layer``).
        layer: A layer name (default: the last stage, see ``find_layer``).
        blocks: Hook every block of the stage when it is a container of
            blocks (each child has its own sub-modules, e.g. ResNet
            ``layer4``); ``False``: the stage as one module.

    Returns:
        The modules, in execution order.
    """
    _, stage = backbone.find_layer(layer)
    children = list(stage.children())
    if (
        blocks
        and isinstance(stage, nn.Sequential | nn.ModuleList)
        and children
        and all(any(True for _ in c.children()) for c in children)
    ):
        return children
    return [stage]


def token_reshape(num_prefix_tokens: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Turn (B, N, D) transformer tokens into a (B, D, h, w) map (prefix tokens dropped); other outputs pass."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            return tokens
        patches = tokens[:, num_prefix_tokens:, :]
        side = int(round(patches.shape[1] ** 0.5))
        if side * side != patches.shape[1]:
            raise ValueError(f"cannot reshape {patches.shape[1]} patch tokens into a square grid for Grad-CAM")
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def grad_cam(
    backbone: Any,
    images: torch.Tensor,
    target: Target,
    *,
    target_layers: Sequence[nn.Module] | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Grad-CAM maps of one target for a batch of images.

    Args:
        backbone: The encoder: ``preprocess`` normalises images onto its
            device, its forward returns (B, r) representations, ``find_layer``
            names its layers.
        images: uint8 (B, 3, H, W) images (or float in [0, 1]).
        target: Applied to every sample's representation (see :data:`Target`).
        target_layers: Modules to hook (default :func:`cam_layers`: the blocks of the last stage).
        batch_size: Images per pass (``None``: all in one).

    Returns:
        (B, H, W) float32 maps in [0, 1] (each min-max scaled by pytorch-grad-cam).
    """
    from pytorch_grad_cam import GradCAM

    layers = list(target_layers) if target_layers is not None else cam_layers(backbone)
    reshape = token_reshape(int(getattr(backbone, "num_prefix_tokens", 0)))
    step = batch_size or max(len(images), 1)
    modes = [(m, m.training) for m in backbone.modules()]  # every module's own mode (they may differ)
    backbone.eval()
    cam = GradCAM(model=backbone, target_layers=layers, reshape_transform=reshape)
    try:
        out = []
        for lo in range(0, len(images), step):
            x = backbone.preprocess(images[lo : lo + step])
            out.append(np.asarray(cam(input_tensor=x, targets=[target] * len(x)), dtype=np.float32))
    finally:
        cam.activations_and_grads.release()
        backbone.zero_grad(set_to_none=True)
        for module, training in modes:
            module.training = training
    if not out:
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    return np.concatenate(out)
