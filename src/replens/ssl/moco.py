"""MoCo v2 (Chen et al. 2020b): InfoNCE against a queue of momentum-encoded keys.

lightly's ``NTXentLoss`` with a memory bank is exactly MoCo's InfoNCE: the
query's positive is its key and the negatives are the queued keys of earlier
batches. Heads from lightly (2-layer MLP), momentum 0.999 (MoCo v2 default,
or a cosine schedule from ``momentum_start``).
"""

from __future__ import annotations

import torch
from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.base import SSLMethod, ema_update, momentum_copy, register_method


@register_method("moco", "MoCo v2: InfoNCE against a queue of momentum keys (Chen et al. 2020)", display_name="MoCo")
class MoCo(SSLMethod):
    """MoCo v2 recipe.

    Args:
        backbone: Encoder with ``feature_dim``.
        output_dim: Projection size.
        temperature: InfoNCE temperature (0.2 in MoCo v2).
        queue_size: Negatives kept (65,536 in the paper; smaller for small data).
        momentum_start: Key-encoder momentum (constant when ``momentum_end`` is
            None, else cosine-scheduled to it).
        momentum_end: Final momentum of the schedule.
        symmetric: Also use view 2 as the query (symmetrised loss: the mean of the two directions,
            both against the queue as it was before the step; the 2B keys are enqueued after).
    """

    def __init__(
        self,
        backbone: nn.Module,
        output_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 4096,
        momentum_start: float = 0.999,
        momentum_end: float | None = None,
        symmetric: bool = True,
    ) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        dim = int(backbone.feature_dim)
        self.projection_head = MoCoProjectionHead(dim, dim, output_dim)
        self.backbone_momentum = momentum_copy(backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, output_dim))
        # lightly keeps the queue out of the state dict: checkpoint it, so that a resumed run goes on exactly
        queue = self.criterion.memory_bank
        queue.register_buffer("bank", queue.bank, persistent=True)
        queue.register_buffer("bank_ptr", queue.bank_ptr, persistent=True)
        self.momentum_start, self.momentum_end, self.symmetric = momentum_start, momentum_end, symmetric

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        cfg = recipe_view(
            size, mean, std, blur_prob=0.5, crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1
        )
        return [cfg, cfg]

    def _key(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = views
        h0 = self.backbone(x0)
        if not self.symmetric:
            loss = self.criterion(self.projection_head(h0), self._key(x1))
            return {"loss": loss, "h": h0, "representation": h0.detach()}
        h1 = self.backbone(x1)
        # one call: both directions against the same queue, whose update (k1 then k0) comes after, as in the
        # official symmetric MoCo; two calls would put k1 = key(x1) among the negatives of q1 = query(x1)
        queries = torch.cat([self.projection_head(h0), self.projection_head(h1)])
        loss = self.criterion(queries, torch.cat([self._key(x1), self._key(x0)]))  # mean of the two directions
        return {"loss": loss, "h": torch.cat([h0, h1]), "representation": h0.detach()}

    def on_step_end(self, step: int, total_steps: int) -> None:
        m = self.momentum_start if self.momentum_end is None else self.momentum(self.momentum_start, self.momentum_end)
        ema_update(self.backbone, self.backbone_momentum, m)
        ema_update(self.projection_head, self.projection_head_momentum, m)
