"""VICReg (Bardes et al. 2022): variance, invariance and covariance terms.

lightly's ``VICRegLoss`` implements the paper's loss with lambda = mu = 25,
nu = 1; the expander is the paper's 3-layer MLP with batch norm (the same
architecture as lightly's ``BarlowTwinsProjectionHead``).
"""

from __future__ import annotations

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.base import SSLMethod, register_method


@register_method("vicreg", "VICReg: variance-invariance-covariance (Bardes et al. 2022)")
class VICReg(SSLMethod):
    """VICReg recipe.

    Args:
        gather_distributed: Gather embeddings across DDP processes in the loss.
        backbone: Encoder with ``feature_dim``.
        projection_dim: Expander width and output (8192 in the paper; default 4 x feature size).
        lambda_param, mu_param, nu_param: Invariance, variance and covariance weights.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_dim: int | None = None,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(backbone)
        dim = int(backbone.feature_dim)
        out = projection_dim or 4 * dim
        self.projection_head = BarlowTwinsProjectionHead(dim, out, out)
        self.criterion = VICRegLoss(
            lambda_param=lambda_param, mu_param=mu_param, nu_param=nu_param, gather_distributed=gather_distributed
        )

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        cfg = recipe_view(
            size, mean, std, blur_prob=0.5, solarize_prob=0.1, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1
        )
        return [cfg, cfg]

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = views
        h = self.backbone(torch.cat([x0, x1]))
        z0, z1 = self.projection_head(h).chunk(2)
        return {"loss": self.criterion(z0, z1), "h": h, "representation": h[: len(x0)].detach()}
