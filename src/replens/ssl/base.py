"""The SSL method registry: a method is a small recipe of loss + heads + views.

A method subclasses :class:`SSLMethod`, takes the backbone and plain keyword
arguments, and implements :meth:`SSLMethod.training_step` on a list of views.
The one training loop (``replens.engine``) owns optimisation, devices,
checkpoints and logging; a method never copies it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from replens.augment.views import ViewConfig


class SSLMethod(nn.Module):
    """Base class of SSL recipes.

    Args:
        backbone: A ``replens.models`` backbone (exposes ``feature_dim``).

    Subclasses set ``name`` and implement :meth:`training_step`.
    """

    name: str = ""
    n_views: int = 2

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        """The view distributions of this recipe at ``size`` px (one per view)."""
        raise NotImplementedError

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss on a list of normalised view batches.

        Returns:
            A dict with at least ``"loss"`` (scalar) and ``"representation"``
            (the backbone output of the first view, detached, for monitors).
        """
        raise NotImplementedError

    def on_step_start(self, step: int, total_steps: int, epoch: int) -> None:
        """Called by the loop before each step; records the training progress."""
        self.step, self.total_steps, self.epoch = step, total_steps, epoch

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Hook for momentum/teacher updates after the optimiser step."""

    def momentum(self, start: float, end: float = 1.0) -> float:
        """Cosine momentum schedule from ``start`` to ``end`` over training (BYOL, DINO)."""
        total = max(1, getattr(self, "total_steps", 1))
        step = getattr(self, "step", 0)
        return end - (end - start) * (math.cos(math.pi * step / total) + 1) / 2


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` for a momentum/teacher branch."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad = False
    return twin


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """``target = m * target + (1 - m) * online`` for parameters; buffers copied."""
    for po, pt in zip(online.parameters(), target.parameters(), strict=True):
        pt.mul_(m).add_(po.detach(), alpha=1 - m)
    for bo, bt in zip(online.buffers(), target.buffers(), strict=True):
        bt.copy_(bo)


_METHODS: dict[str, tuple[type[SSLMethod], str]] = {}


def register_method(name: str, help: str) -> Callable[[type[SSLMethod]], type[SSLMethod]]:
    """Class decorator registering an SSL recipe under ``name``."""

    def wrap(cls: type[SSLMethod]) -> type[SSLMethod]:
        if name in _METHODS:
            raise ValueError(f"SSL method {name!r} registered twice")
        cls.name = name
        _METHODS[name] = (cls, help)
        return cls

    return wrap


def list_methods() -> dict[str, str]:
    """Registered method names and their one-line help."""
    return {name: help for name, (_, help) in sorted(_METHODS.items())}


def create_method(name: str, backbone: nn.Module, **kwargs: Any) -> SSLMethod:
    """Instantiate the registered recipe ``name`` around ``backbone``."""
    if name not in _METHODS:
        raise KeyError(f"unknown SSL method {name!r}; registered: {', '.join(sorted(_METHODS))}")
    return _METHODS[name][0](backbone, **kwargs)
