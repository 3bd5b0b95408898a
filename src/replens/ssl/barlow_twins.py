"""Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views to identity.

lightly's ``BarlowTwinsLoss`` is the paper's loss (batch-normalised embeddings,
on-diagonal (1 - C_ii)^2 plus lambda times off-diagonal C_ij^2, lambda = 0.0051);
the 3-layer projector is lightly's ``BarlowTwinsProjectionHead``.
"""

from __future__ import annotations

import torch
from torch import nn

from replens.augment.views import ViewConfig
from replens.ssl.base import SSLMethod, register_method
from replens.ssl.byol import byol_views


@register_method(
    "barlow_twins",
    "Barlow Twins: cross-correlation to identity (Zbontar et al. 2021)",
    display_name="Barlow Twins",
    gathers=True,
)
class BarlowTwins(SSLMethod):
    """Barlow Twins recipe.

    Args:
        backbone: Encoder with ``feature_dim``.
        projection_dim: Projector width and output (8192 in the paper; default 4 x feature size).
        lambda_param: Off-diagonal weight.
        gather_distributed: Gather embeddings across DDP processes in the loss.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_dim: int | None = None,
        lambda_param: float = 0.0051,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import BarlowTwinsLoss
        from lightly.models.modules import BarlowTwinsProjectionHead
        dim = int(backbone.feature_dim)
        out = projection_dim or 4 * dim
        self.projection_head = BarlowTwinsProjectionHead(dim, out, out)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=gather_distributed)

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        return byol_views(size, mean, std)

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = views
        h = self.backbone(torch.cat([x0, x1]))
        z0, z1 = self.projection_head(h).chunk(2)
        return {"loss": self.criterion(z0, z1), "h": h, "representation": h[: len(x0)].detach()}
