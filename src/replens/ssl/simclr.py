"""SimCLR (Chen et al. 2020): NT-Xent between two views' projections.

Uses lightly's ``NTXentLoss`` and ``SimCLRProjectionHead``, which match the
paper: a 2-layer MLP head with batch norm, and the normalised-temperature
cross entropy over the 2N views of a batch (each view's positive is its pair,
the other 2N - 2 views are negatives).
"""

from __future__ import annotations

import torch
from torch import nn

from replens.augment.views import ViewConfig, simclr_view_config
from replens.ssl.base import SSLMethod, register_method


@register_method(
    "simclr",
    "SimCLR: NT-Xent over two views (Chen et al. 2020), lightly loss + head",
    display_name="SimCLR",
    gathers=True,
)
class SimCLR(SSLMethod):
    """SimCLR recipe.

    Args:
        backbone: Encoder with ``feature_dim``.
        hidden_dim: Projection head hidden width (default: the feature size).
        output_dim: Projection size.
        temperature: NT-Xent temperature tau.
        gather_distributed: Gather embeddings across DDP processes in the loss.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int | None = None,
        output_dim: int = 128,
        temperature: float = 0.5,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        dim = int(backbone.feature_dim)
        self.projection_head = SimCLRProjectionHead(dim, hidden_dim or dim, output_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        cfg = simclr_view_config(size, tuple(mean), tuple(std))  # type: ignore[arg-type]
        return [cfg, cfg]

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.backbone(torch.cat(views))
        z = self.projection_head(h)
        z0, z1 = z.chunk(2)
        loss = self.criterion(z0, z1)
        return {"loss": loss, "h": h, "representation": h[: len(views[0])].detach()}
