"""BYOL (Grill et al. 2020): predict the target network's projection of the other view.

Heads from lightly; loss is the symmetrised negative cosine similarity (equal to
the paper's normalised MSE up to the constant 2 + scale 2); the target
network's momentum follows the paper's cosine schedule from 0.996 to 1.
"""

from __future__ import annotations

import torch
from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.base import SSLMethod, ema_update, momentum_copy, register_method


def byol_views(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
    """BYOL's asymmetric pair: blur 1.0 / 0.1, solarisation 0 / 0.2, jitter (0.4, 0.4, 0.2, 0.1)."""
    common = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
    return [
        recipe_view(size, mean, std, blur_prob=1.0, solarize_prob=0.0, **common),
        recipe_view(size, mean, std, blur_prob=0.1, solarize_prob=0.2, **common),
    ]


@register_method("byol", "BYOL: online predictor vs momentum target (Grill et al. 2020)", display_name="BYOL")
class BYOL(SSLMethod):
    """BYOL recipe.

    Args:
        backbone: Encoder with ``feature_dim``.
        hidden_dim: MLP hidden width (4096 in the paper; default 2 x feature size).
        output_dim: Projection size (256).
        momentum_start: Initial target momentum (0.996), cosine-scheduled to 1.
    """

    def __init__(
        self, backbone: nn.Module, hidden_dim: int | None = None, output_dim: int = 256, momentum_start: float = 0.996
    ) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        dim = int(backbone.feature_dim)
        hidden = hidden_dim or 2 * dim
        self.projection_head = BYOLProjectionHead(dim, hidden, output_dim)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden, output_dim)
        self.backbone_momentum = momentum_copy(backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()
        self.momentum_start = momentum_start

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        return byol_views(size, mean, std)

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = views
        h = self.backbone(torch.cat([x0, x1]))
        p0, p1 = self.prediction_head(self.projection_head(h)).chunk(2)
        loss = 0.5 * (self.criterion(p0, self._target(x1)) + self.criterion(p1, self._target(x0)))
        return {"loss": loss, "h": h, "representation": h[: len(x0)].detach()}

    def on_step_end(self, step: int, total_steps: int) -> None:
        m = self.momentum(self.momentum_start, 1.0)
        ema_update(self.backbone, self.backbone_momentum, m)
        ema_update(self.projection_head, self.projection_head_momentum, m)
