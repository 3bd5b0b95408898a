"""SimSiam (Chen & He 2021): predictor + stop-gradient, no negatives, no momentum.

Heads and the negative cosine similarity come from lightly; the loss is the
paper's symmetric D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2.
"""

from __future__ import annotations

import torch
from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.base import SSLMethod, register_method


@register_method("simsiam", "SimSiam: predictor and stop-gradient (Chen & He 2021)", display_name="SimSiam")
class SimSiam(SSLMethod):
    """SimSiam recipe.

    Args:
        backbone: Encoder with ``feature_dim``.
        output_dim: Projection size (2048 in the paper; default 2 x feature size).
        prediction_hidden_dim: Predictor bottleneck (512 for 2048; default output / 4).
    """

    def __init__(
        self, backbone: nn.Module, output_dim: int | None = None, prediction_hidden_dim: int | None = None
    ) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
        dim = int(backbone.feature_dim)
        out = output_dim or 2 * dim
        self.projection_head = SimSiamProjectionHead(dim, out, out)
        self.prediction_head = SimSiamPredictionHead(out, prediction_hidden_dim or max(8, out // 4), out)
        self.criterion = NegativeCosineSimilarity()

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        cfg = recipe_view(
            size, mean, std, blur_prob=0.5, crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1
        )
        return [cfg, cfg]

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = views
        h = self.backbone(torch.cat([x0, x1]))
        z = self.projection_head(h)
        p = self.prediction_head(z)
        z0, z1 = z.detach().chunk(2)
        p0, p1 = p.chunk(2)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        return {"loss": loss, "h": h, "representation": h[: len(x0)].detach()}
