"""DINO (Caron et al. 2021): self-distillation with a momentum teacher and multi-crop.

The student sees 2 global and ``n_local`` local crops, the teacher only the
global ones; lightly's ``DINOLoss`` gives the cross-entropy between the
centred, sharpened teacher distribution and the student's, with the teacher
temperature warmed up (0.04 -> ``teacher_temp``) and the centre updated with
momentum 0.9. Heads are lightly's ``DINOProjectionHead``; the teacher momentum
follows the paper's cosine schedule from 0.996 to 1.
"""

from __future__ import annotations

import torch
from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.base import SSLMethod, ema_update, momentum_copy, register_method


def local_size(size: int) -> int:
    """Local crop side: 96/224 of the global side, at least 8 px."""
    return max(8, round(size * 96 / 224))


@register_method(
    "dino",
    "DINO: self-distillation, momentum teacher, multi-crop (Caron et al. 2021)",
    display_name="DINO",
)
class DINO(SSLMethod):
    """DINO recipe.

    Args:
        backbone: Encoder with ``feature_dim``.
        output_dim: Prototype count K (65,536 in the paper; 1024 by default for small runs).
        hidden_dim: Head hidden width.
        bottleneck_dim: Head bottleneck (256).
        n_local: Local crops per image.
        teacher_temp: Final teacher temperature.
        warmup_teacher_temp_epochs: Epochs of the teacher temperature warm-up.
        momentum_start: Initial teacher momentum.
    """

    def __init__(
        self,
        backbone: nn.Module,
        output_dim: int = 1024,
        hidden_dim: int | None = None,
        bottleneck_dim: int = 256,
        n_local: int = 2,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        momentum_start: float = 0.996,
    ) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        dim = int(backbone.feature_dim)
        head_args = (dim, hidden_dim or 2 * dim, min(bottleneck_dim, dim), output_dim)
        self.head = DINOProjectionHead(*head_args)
        self.teacher_backbone = momentum_copy(backbone)
        # a fresh head, not a deepcopy: the weight-normalised last layer cannot be deep-copied
        self.teacher_head = DINOProjectionHead(*head_args)
        self.teacher_head.load_state_dict(self.head.state_dict())
        self.teacher_head.requires_grad_(False)
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=min(0.04, teacher_temp),
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
        )
        self.n_local, self.momentum_start = n_local, momentum_start
        self.n_views = 2 + n_local

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        common = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
        g1 = recipe_view(size, mean, std, blur_prob=1.0, crop_scale=(0.4, 1.0), **common)
        g2 = recipe_view(size, mean, std, blur_prob=0.1, solarize_prob=0.2, crop_scale=(0.4, 1.0), **common)
        local = recipe_view(local_size(size), mean, std, blur_prob=0.5, crop_scale=(0.05, 0.4), **common)
        return [g1, g2] + [local] * self.n_local

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        globals_, locals_ = views[:2], views[2:]
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(globals_))).chunk(2)
        h = self.backbone(torch.cat(globals_))
        student = list(self.head(h).chunk(2))
        if locals_:
            student += list(self.head(self.backbone(torch.cat(locals_))).chunk(len(locals_)))
        loss = self.criterion(list(teacher), student, epoch=getattr(self, "epoch", 0))
        return {"loss": loss, "h": h, "representation": h[: len(views[0])].detach()}

    def on_step_end(self, step: int, total_steps: int) -> None:
        m = self.momentum(self.momentum_start, 1.0)
        ema_update(self.backbone, self.teacher_backbone, m)
        ema_update(self.head, self.teacher_head, m)
