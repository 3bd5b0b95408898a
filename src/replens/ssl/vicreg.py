"""VICReg (Bardes et al. 2022): variance, invariance and covariance terms.

lightly's ``VICRegLoss`` implements the paper's loss with lambda = mu = 25,
nu = 1; the expander is the paper's 3-layer MLP with batch norm (the same
architecture as lightly's ``BarlowTwinsProjectionHead``, so the recipe extends
:class:`~replens.ssl.barlow_twins.BarlowTwins`).
"""

from __future__ import annotations

from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.barlow_twins import BarlowTwins
from replens.ssl.base import register_method


@register_method(
    "vicreg",
    "VICReg: variance-invariance-covariance (Bardes et al. 2022)",
    display_name="VICReg",
    gathers=True,
)
class VICReg(BarlowTwins):
    """VICReg recipe: Barlow Twins' two-view expander with the VICReg loss and views.

    Args:
        backbone: Encoder with ``feature_dim``.
        projection_dim: Expander width and output (8192 in the paper; default 4 x feature size).
        lambda_param, mu_param, nu_param: Invariance, variance and covariance weights.
        gather_distributed: Gather embeddings across DDP processes in the loss.
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
        super().__init__(backbone, projection_dim=projection_dim)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import VICRegLoss
        self.criterion = VICRegLoss(
            lambda_param=lambda_param, mu_param=mu_param, nu_param=nu_param, gather_distributed=gather_distributed
        )

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        cfg = recipe_view(
            size, mean, std, blur_prob=0.5, solarize_prob=0.1, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1
        )
        return [cfg, cfg]
