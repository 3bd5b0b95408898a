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
from replens.registry import Entry, Registry


class SSLMethod(nn.Module):
    """Base class of SSL recipes.

    Args:
        backbone: A ``replens.models`` backbone (exposes ``feature_dim``).

    Subclasses set ``name`` and implement :meth:`training_step`. A recipe
    that learns from class labels (``supervised``) sets ``needs_labels``:
    the loop then builds it with ``num_classes`` (unless given in
    ``method_args``), refuses sources with unlabelled samples, and calls
    ``training_step(views, labels)`` with the batch's class ids on the device.
    """

    name: str = ""
    n_views: int = 2
    #: Whether :meth:`training_step` takes the batch labels as second argument (set by
    #: :func:`register_method` from the entry's ``needs_labels``).
    needs_labels: bool = False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def view_configs(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> list[ViewConfig]:
        """The view distributions of this recipe at ``size`` px (one per view)."""
        raise NotImplementedError

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss on a list of normalised view batches.

        Returns:
            A dict with at least ``"loss"`` (scalar), ``"h"`` (the online
            backbone outputs of the two main views, concatenated in view
            order, shape (2B, r), WITH gradient, for plug-ins such as DDM and
            the Q-Score regulariser; (B, r) for MoCo when not symmetric) and
            ``"representation"`` (the first view's h, detached, for monitors).
        """
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Same as :meth:`training_step` (the loop calls the module, so DDP and autocast apply).

        ``labels`` (B,) class ids are passed on to recipes with ``needs_labels`` and required by them.
        """
        if not self.needs_labels:
            return self.training_step(views)
        if labels is None:
            raise ValueError(f"SSL method {self.name!r} learns from labels: call it with (views, labels)")
        return self.training_step(views, labels)  # type: ignore[call-arg]

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


#: Every SSL recipe; the modules of ``replens.ssl`` register theirs on import.
METHODS: Registry[type[SSLMethod]] = Registry("SSL method", scan=("replens.ssl",))


def register_method(
    name: str, help: str, *, display_name: str | None = None, gathers: bool = False, needs_labels: bool = False
) -> Callable[[type[SSLMethod]], type[SSLMethod]]:
    """Class decorator registering an SSL recipe under ``name`` (sets ``cls.name`` and ``cls.needs_labels``).

    Args:
        name: Registry name (``--method``).
        help: One line for ``replens list``.
        display_name: How the paper's tables print it (default: the name).
        gathers: Its loss can gather embeddings across processes: the loop passes
            ``gather_distributed=True`` when it runs on several processes.
        needs_labels: It learns from class labels (see :class:`SSLMethod`).
    """

    def wrap(cls: type[SSLMethod]) -> type[SSLMethod]:
        cls.name = name
        cls.needs_labels = bool(needs_labels)
        METHODS.add(name, cls, help=help, display_name=display_name, gathers=gathers, needs_labels=needs_labels)
        return cls

    return wrap


def method_class(name: str) -> type[SSLMethod]:
    """The recipe class registered as ``name`` (KeyError listing the known names otherwise)."""
    return METHODS.get(name)


def method_entry(name: str) -> Entry[type[SSLMethod]]:
    """The registry entry of ``name``: display name, ``gathers``, ``needs_labels``."""
    return METHODS.entry(name)


def list_methods() -> dict[str, str]:
    """Registered SSL recipes and their one-line help, sorted."""
    return METHODS.help()


def create_method(name: str, backbone: nn.Module, **kwargs: Any) -> SSLMethod:
    """Instantiate the registered recipe ``name`` around ``backbone``."""
    return METHODS.get(name)(backbone, **kwargs)


class TrainPlugin(nn.Module):
    """A training plug-in that works with every SSL recipe (DDM, FDA, Q-Score regulariser).

    The training loop calls, in order:

    1. :meth:`wrap_backbone` before the recipe is built (e.g. DDM hands the
       recipe only the invariant part h^p of the representation);
    2. :meth:`view_configs` on the recipe's view distributions (e.g. FDA adds
       Fourier-domain ops to the left view);
    3. :meth:`setup` once the recipe exists, with facts about the data
       (``{"num_domains": int, "domains": np.ndarray, "num_samples": int}``);
    4. every step, :meth:`loss` on the recipe's output and the batch: the
       returned terms are added to the recipe's loss (and logged);
    5. after the optimiser step, :meth:`after_step` (e.g. a critic update or
       a re-clustering), returning numbers to log.

    A plug-in is an ``nn.Module``: its parameters and buffers are checkpointed
    with the model, and :meth:`extra_state` / :meth:`load_extra_state` carry
    anything else (e.g. an internal optimiser) so that resume is exact.
    Parameters that the encoder optimiser must NOT train (a critic) should be
    returned by :meth:`private_parameters`.
    """

    name: str = ""
    #: Extra ``replens train`` flags: ``{"flag-name": (kwarg, type, help)}``; giving one enables the plug-in.
    cli_options: dict[str, tuple[str, type, str]] = {}

    def wrap_backbone(self, backbone: nn.Module) -> nn.Module:
        return backbone

    def view_configs(self, configs: list[ViewConfig]) -> list[ViewConfig]:
        return configs

    def setup(self, method: SSLMethod, data_info: dict[str, Any]) -> None:
        """Called once the recipe is built."""

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        return {}

    def after_step(
        self, step: int, total_steps: int, out: dict[str, torch.Tensor], batch: dict[str, Any]
    ) -> dict[str, float]:
        return {}

    def private_parameters(self) -> list[nn.Parameter]:
        return []

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


#: Every training plug-in: FDA here, DDM in ``replens.ddm.plugin``, the regularisers in ``replens.quality``.
PLUGINS: Registry[type[TrainPlugin]] = Registry(
    "training plug-in", scan=("replens.ssl", "replens.ddm.plugin", "replens.quality.regularizer")
)


def register_plugin(name: str, help: str, *, display_name: str | None = None) -> Callable[[type[TrainPlugin]], type[TrainPlugin]]:
    """Class decorator registering a training plug-in under ``name`` (sets ``cls.name``)."""

    def wrap(cls: type[TrainPlugin]) -> type[TrainPlugin]:
        cls.name = name
        PLUGINS.add(name, cls, help=help, display_name=display_name)
        return cls

    return wrap


def plugin_class(name: str) -> type[TrainPlugin]:
    """The plug-in class registered as ``name`` (KeyError listing the known names otherwise)."""
    return PLUGINS.get(name)


def list_plugins() -> dict[str, str]:
    """Registered training plug-ins and their one-line help, sorted."""
    return PLUGINS.help()


def create_plugin(name: str, **kwargs: Any) -> TrainPlugin:
    """Instantiate the registered plug-in ``name``."""
    return plugin_class(name)(**kwargs)
