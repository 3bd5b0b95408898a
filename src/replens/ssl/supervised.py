"""Supervised and l2-robust reference encoders as a recipe of the one loop (paper appendices A.7, B.1, B.6).

The paper compares the Q-Score of self-supervised representations with that of
a supervised ResNet and its robust version under the l2 threat model
(Figure A.9, following Engstrom et al. 2020), and explains the features of a
supervised ResNet with FALCON (Table B.1, Figure B.8). The ``supervised``
method trains such reference encoders in ``replens.engine.train``: a linear
head on the representation and cross-entropy with the batch labels (the loop
passes them to methods with ``needs_labels``), on one view made of a random
resized crop and a horizontal flip (no colour augmentation; ``view_args``
change it, e.g. ``{"crop_scale": [1.0, 1.0]}`` for flips only).

With ``adversarial_eps > 0`` it is adversarial training (Madry et al. 2018):
each view is replaced by ``x + delta``, ``||delta||_2 <= adversarial_eps`` in
[0, 1] pixel units of the un-normalised view, found by :func:`l2_pgd`.
The encoder is in eval mode during the attack (batch-norm statistics are not
updated by adversarial passes). The attack starts from ``delta = 0``, so a run
stays a pure function of its seed and resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from replens.augment.views import ViewConfig, recipe_view
from replens.ssl.base import SSLMethod, register_method

__all__ = ["Supervised", "l2_pgd"]


def l2_pgd(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    steps: int,
) -> torch.Tensor:
    """l2-bounded adversarial images by projected gradient ascent on the cross-entropy (Madry et al. 2018).

    Each step moves ``delta`` by ``2.5 * eps / steps`` along the l2-normalised
    gradient of ``cross_entropy(logits_fn(x + delta), labels)``, projects it
    onto the l2 ball of radius ``eps`` and keeps ``x + delta`` in [0, 1].

    Args:
        logits_fn: Maps (B, 3, H, W) images in [0, 1] to (B, C) logits
            (normalisation included).
        images: (B, 3, H, W) float images in [0, 1].
        labels: (B,) class ids.
        eps: l2 radius per image (pixel units in [0, 1]); 0 returns ``images``.
        steps: Ascent steps; 0 returns ``images``.

    Returns:
        (B, 3, H, W) detached images in [0, 1] with ``||x_adv - x||_2 <= eps`` per image.
    """
    if eps <= 0 or steps <= 0:
        return images
    step = 2.5 * eps / steps
    images = images.detach()
    delta = torch.zeros_like(images, requires_grad=True)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(logits_fn((images + delta).clamp(0, 1)).float(), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta += step * grad / norm
                dnorm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta *= torch.clamp(eps / dnorm, max=1.0)
                delta.copy_((images + delta).clamp(0, 1) - images)
    return (images + delta.detach()).clamp(0, 1)


def _base_encoder(backbone: nn.Module) -> nn.Module:
    while isinstance(getattr(backbone, "base_backbone", None), nn.Module):
        backbone = backbone.base_backbone
    return backbone


@register_method(
    "supervised",
    "Supervised cross-entropy with a linear head; l2-PGD adversarial with adversarial_eps",
    display_name="Supervised",
    needs_labels=True,
)
class Supervised(SSLMethod):
    """Supervised recipe: a linear head on the representation, cross-entropy, optional l2 PGD training.

    Args:
        backbone: Encoder with ``feature_dim`` (and ``mean`` / ``std``, the
            normalisation of its views).
        num_classes: Size of the head (the loop passes the source's).
        adversarial_eps: l2 radius of the PGD perturbation in [0, 1] pixel
            units (0: standard training).
        pgd_steps: PGD steps per batch (step size ``2.5 * eps / pgd_steps``).
    """

    n_views = 1

    def __init__(self, backbone: nn.Module, num_classes: int, adversarial_eps: float = 0.0,
                 pgd_steps: int = 3) -> None:
        super().__init__(backbone)
        if int(num_classes) < 2:
            raise ValueError(f"method_args.num_classes must be at least 2, got {num_classes}")
        if float(adversarial_eps) < 0:
            raise ValueError(f"method_args.adversarial_eps must be >= 0, got {adversarial_eps}")
        if int(pgd_steps) < 1:
            raise ValueError(f"method_args.pgd_steps must be >= 1, got {pgd_steps}")
        self.adversarial_eps = float(adversarial_eps)
        self.pgd_steps = int(pgd_steps)
        self.head = nn.Linear(int(backbone.feature_dim), int(num_classes))
        base = _base_encoder(backbone)
        mean, std = getattr(base, "mean", (0.0, 0.0, 0.0)), getattr(base, "std", (1.0, 1.0, 1.0))
        # normalisation of the views, to attack the un-normalised image (not saved: the view config sets it)
        self.register_buffer("view_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("view_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        self.view_mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.view_std.copy_(torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        return [recipe_view(size, mean, std, jitter_prob=0.0, gray_prob=0.0)]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of normalised views."""
        return self.head(self.backbone(x))

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.view_mean) / self.view_std

    def adversarial(self, views: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The l2-PGD version of normalised ``views`` (normalised again), the encoder in eval mode meanwhile."""
        images = (views.float() * self.view_std + self.view_mean).clamp(0, 1)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            adv = l2_pgd(lambda z: self.logits(self._normalize(z)), images, labels, self.adversarial_eps,
                         self.pgd_steps)
        finally:
            self.backbone.train(was_training)
        return self._normalize(adv).to(views.dtype)

    def training_step(  # type: ignore[override]
        self, views: list[torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy of the head on the (adversarial) view.

        Returns:
            ``"loss"``, ``"h"`` (B, r) with gradient, ``"representation"`` (detached h) and ``"logits"``.
        """
        (x,) = views
        labels = labels.long()
        if self.adversarial_eps > 0:
            x = self.adversarial(x, labels)
        h = self.backbone(x)
        logits = self.head(h)
        loss = F.cross_entropy(logits.float(), labels)
        return {"loss": loss, "h": h, "representation": h.detach(), "logits": logits.detach()}
