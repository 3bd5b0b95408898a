"""The format transform's dual encoder (paper section 5.6.1, Figure 5.5).

One encoder ``g_im`` sees image views, a second encoder ``g_freq`` of the
same architecture sees frequency images (``replens.augment.frequency_image``:
real and imaginary parts of the RFFT2D interleaved to the image's shape,
rescaled to [0, 1]). The two share no weights: ``g_freq`` is a copy of the
backbone with every parameter re-initialised, and each has its own projection
head. Agreement between the two formats of the same image is maximised with
the InfoNCE loss of Eq. 5.2 (lightly's ``NTXentLoss`` over the 2N views).
Only ``g_im`` is kept for downstream tasks (it is the run's
``backbone.safetensors``).

The default views are Table 5.5's ``(x, f)``: the raw image against its
frequency image. ``left_view`` / ``right_view`` (or the fda plug-in's
``--left-view`` / ``--right-view``) select the other cells, e.g.
``right_view="freq-aug"`` for ``A_freq(f)`` or ``"image-aug+freq"`` for
``F(A_im(x))``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from replens.augment.views import VIEW_KINDS, ViewConfig, simclr_view_config, view_kind
from replens.ssl.base import SSLMethod, register_method


def independent_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every parameter and buffer re-initialised (no shared or copied weights)."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return twin


@register_method(
    "dual_encoder",
    "Format transform: image encoder vs frequency encoder, InfoNCE (chapter 5, Fig. 5.5)",
    display_name="Dual encoder",
)
class DualEncoder(SSLMethod):
    """Dual-encoder multi-format contrastive recipe.

    Args:
        backbone: The image encoder ``g_im`` (kept for downstream tasks).
        left_view: View kind of the image encoder's input (default ``raw``: ``x``).
        right_view: View kind of the frequency encoder's input (default ``freq``: ``f``).
        hidden_dim: Projection head hidden width (default: the feature size).
        output_dim: Projection size.
        temperature: InfoNCE temperature tau of Eq. 5.2.
    """

    def __init__(self, backbone: nn.Module, left_view: str = "raw", right_view: str = "freq",
                 hidden_dim: int | None = None, output_dim: int = 128, temperature: float = 0.5) -> None:
        super().__init__(backbone)
        # imported on use: lightly imports torchvision and torch._dynamo (over a second at `replens` start-up)
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        for key, kind in (("left_view", left_view), ("right_view", right_view)):
            if kind not in VIEW_KINDS:
                raise KeyError(f"method_args.{key}: unknown view kind {kind!r}; choose one of {', '.join(VIEW_KINDS)}")
        dim = int(backbone.feature_dim)
        self.freq_backbone = independent_copy(backbone)
        self.projection_head = SimCLRProjectionHead(dim, hidden_dim or dim, output_dim)
        self.freq_projection_head = SimCLRProjectionHead(dim, hidden_dim or dim, output_dim)
        self.criterion = NTXentLoss(temperature=temperature)
        self.left_view, self.right_view = left_view, right_view

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        base = simclr_view_config(size, tuple(mean), tuple(std))  # type: ignore[arg-type]
        return [view_kind(self.left_view, base), view_kind(self.right_view, base)]

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        image_view, freq_view = views[0], views[1]
        h = self.backbone(image_view)
        h_freq = self.freq_backbone(freq_view)
        loss = self.criterion(self.projection_head(h), self.freq_projection_head(h_freq))
        return {"loss": loss, "h": torch.cat([h, h_freq]), "representation": h.detach()}
