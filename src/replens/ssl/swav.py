"""SwaV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes.

Projection head and prototypes from lightly; lightly's ``SwaVLoss`` computes
the codes of each high-resolution view with Sinkhorn-Knopp (3 iterations,
epsilon 0.05) and predicts them from every other view, including the
low-resolution multi-crop views. Prototypes are re-normalised every step and
frozen for the first ``freeze_prototypes_steps`` steps, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.base import SSLMethod, register_method
from replens.ssl.dino import local_size


@register_method("swav", "SwaV: swapped prediction of Sinkhorn cluster codes (Caron et al. 2020)", display_name="SwaV")
class SwaV(SSLMethod):
    """SwaV recipe.

    Args:
        backbone: Encoder with ``feature_dim``.
        output_dim: Projection size (128).
        n_prototypes: Prototypes (3000 for ImageNet; 256 for small runs).
        n_local: Low-resolution crops per image.
        temperature: Softmax temperature (0.1).
        freeze_prototypes_steps: Steps with frozen prototypes.
    """

    def __init__(
        self,
        backbone: nn.Module,
        output_dim: int = 128,
        n_prototypes: int = 256,
        n_local: int = 2,
        temperature: float = 0.1,
        freeze_prototypes_steps: int = 0,
    ) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
        dim = int(backbone.feature_dim)
        self.projection_head = SwaVProjectionHead(dim, dim, output_dim)
        self.prototypes = SwaVPrototypes(output_dim, n_prototypes, n_steps_frozen_prototypes=freeze_prototypes_steps)
        self.criterion = SwaVLoss(temperature=temperature)
        self.n_local = n_local
        self.n_views = 2 + n_local

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        common = dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
        high = recipe_view(size, mean, std, blur_prob=0.5, crop_scale=(0.14, 1.0), **common)
        low = recipe_view(local_size(size), mean, std, blur_prob=0.5, crop_scale=(0.05, 0.14), **common)
        return [high, high] + [low] * self.n_local

    def _scores(self, h: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.projection_head(h), dim=1)
        return self.prototypes(z, getattr(self, "step", 0))

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        self.prototypes.normalize()
        h = self.backbone(torch.cat(views[:2]))
        high = list(self._scores(h).chunk(2))
        low = list(self._scores(self.backbone(torch.cat(views[2:]))).chunk(self.n_local)) if self.n_local else []
        return {"loss": self.criterion(high, low), "h": h, "representation": h[: len(views[0])].detach()}
