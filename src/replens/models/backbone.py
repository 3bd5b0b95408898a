"""The common backbone interface and the backbone registry.

Every encoder in replens is a :class:`Backbone`: an ``nn.Module`` created
together with its preprocessing (``mean``/``std``), returning one pooled
representation of size ``feature_dim`` per image, and exposing intermediate
layers through :meth:`Backbone.forward_layers` (forward hooks that are always
removed). Backbones are registered by name (timm style) so that every test and
CLI listing covers them without new code::

    @register_backbone("small_cnn", help="4-conv CNN for 32-64 px on CPU")
    def small_cnn(*, pretrained: bool = False, **kwargs) -> Backbone: ...

    model = create_backbone("cifar_resnet20", weights="cifar10_resnet20.th")

Families are registered with ``family=True`` and receive the text after the
first colon: ``create_backbone("timm:resnet10t")`` calls the ``timm`` factory
with ``"resnet10t"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from replens.models.weights import checkpoint_backbone_args, load_weights
from replens.registry import Entry, Registry

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneFactory",
    "create_backbone",
    "list_backbones",
    "register_alias",
    "register_backbone",
    "unit_images",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def unit_images(images: torch.Tensor, device: torch.device | str, *, non_blocking: bool = False) -> torch.Tensor:
    """A batch of images as float32 in [0, 1] on ``device`` (the common first step of every ``preprocess``).

    Args:
        images: uint8 in [0, 255] or float in [0, 1], shape (B, 3, H, W) or (3, H, W).
        device: Where the batch goes.
        non_blocking: Passed to ``Tensor.to``.

    Raises:
        ValueError: Not (B, 3, H, W) or (3, H, W).
    """
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    x = images.to(device, non_blocking=non_blocking)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


class Backbone(nn.Module):
    """Base class: an encoder and its preprocessing, with one feature interface.

    Subclasses implement :meth:`forward` and :meth:`layer_names`, and set
    ``classifier_name`` when they keep a classification head.

    Args:
        feature_dim: Size ``r`` of the representation returned by :meth:`forward`.
        mean: Per-channel normalisation mean (RGB, for images in [0, 1]).
        std: Per-channel normalisation std.
        input_size: Recommended square input side (``None``: any size works).

    Attributes:
        name: Registry name (set by :func:`create_backbone`).
        feature_dim: Representation size ``r``.
        mean: Normalisation mean, a tuple of 3 floats.
        std: Normalisation std, a tuple of 3 floats.
        input_size: Recommended input side, or ``None``.
        num_prefix_tokens: Leading non-patch tokens (class/register tokens) in
            the token outputs of transformer layers; 0 for convolutional nets.
        classifier_name: Dotted module path of the classification head, or None.
    """

    classifier_name: str | None = None
    num_prefix_tokens: int = 0

    def __init__(
        self,
        *,
        feature_dim: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values, got {mean} and {std}")
        self.name = type(self).__name__
        self.feature_dim = int(feature_dim)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.input_size = input_size
        # non-persistent: they follow .to(device) but stay out of state_dict(),
        # so published checkpoints load with strict key matching
        self.register_buffer(
            "pixel_mean", torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )

    # ----------------------------------------------------------------- interface
    @property
    def classifier(self) -> nn.Module | None:
        """The classification head kept from the original model, or None."""
        if self.classifier_name is None:
            return None
        return self.get_submodule(self.classifier_name)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        for tensor in self.parameters():
            return tensor.device, tensor.dtype
        return self.pixel_mean.device, torch.float32

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Turn images into normalised model inputs on the module's device and dtype.

        Args:
            images: uint8 in [0, 255] or float in [0, 1], shape (B, 3, H, W) or (3, H, W).

        Returns:
            Float tensor (B, 3, H, W), ``(x - mean) / std``, on the parameters'
            device and in their dtype.

        Shape:
            - Input: (B, 3, H, W) or (3, H, W)
            - Output: (B, 3, H, W)
        """
        device, dtype = self._device_dtype()
        x = unit_images(images, device, non_blocking=True)
        x = (x - self.pixel_mean.float()) / self.pixel_std.float()
        return x.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Representation of normalised images, after global pooling, before any head.

        Shape:
            - Input: (B, 3, H, W), normalised (see :meth:`preprocess`)
            - Output: (B, feature_dim)
        """
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier output on normalised images (needs a classifier)."""
        head = self.classifier
        if head is None:
            raise RuntimeError(f"{self.name} has no classifier")
        return head(self.forward(x))

    def layer_names(self) -> list[str]:
        """Names of the meaningful intermediate layers, in execution order.

        :meth:`forward_layers` also accepts any other module name of
        :meth:`layer_root` (see ``named_modules()``).
        """
        raise NotImplementedError

    def layer_root(self) -> nn.Module:
        """The module whose ``named_modules()`` names the layers (default: self)."""
        return self

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename keys of an external checkpoint to this module's keys (default: none)."""
        return state

    def require_layers(self, layers: Sequence[str | None]) -> None:
        """Check layer names before any work (``None`` means the representation and passes).

        Raises:
            KeyError: A name is not a module of :meth:`layer_root`; the message lists the known layers.
        """
        modules = dict(self.layer_root().named_modules())
        unknown = [name for name in layers if name is not None and (not name or name not in modules)]
        if unknown:
            raise KeyError(
                f"unknown layers {', '.join(map(repr, unknown))} for {self.name}; known: "
                f"{', '.join(self.layer_names())} (or any name from layer_root().named_modules())"
            )

    def find_layer(self, name: str | None = None) -> tuple[str, nn.Module]:
        """The one layer lookup: a named module of :meth:`layer_root`, by default the last stage.

        Args:
            name: A layer name (see :meth:`layer_names`, or any name from
                ``layer_root().named_modules()``); ``None``: the last of
                :meth:`layer_names` (the last stage, Grad-CAM's default).

        Returns:
            ``(name, module)``.

        Raises:
            KeyError: Unknown name (the message lists the known layers).
            ValueError: ``name`` is None and the backbone lists no layers.
        """
        if name is None:
            names = self.layer_names()
            if not names:
                raise ValueError(f"{self.name} lists no layers: pass the layer name explicitly")
            name = names[-1]
        self.require_layers([name])
        return name, dict(self.layer_root().named_modules())[name]

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Run :meth:`forward` and return the outputs of the named layers.

        Forward hooks are registered for the call and removed in a ``finally``
        block, also when the forward raises. Gradients flow as usual (wrap the
        call in ``torch.no_grad()`` when not needed). A module returning a tuple
        contributes its first element; a module run several times keeps its
        last output.

        Args:
            x: Normalised images (B, 3, H, W).
            layers: Layer names (see :meth:`layer_names`).

        Returns:
            ``{name: output}`` in the order requested. Convolutional layers give
            (B, C, H, W), transformer blocks (B, N, D) with
            ``num_prefix_tokens`` leading class/register tokens.

        Raises:
            KeyError: A name is not a module of :meth:`layer_root`.
            RuntimeError: A named module did not run during the forward.
        """
        self.require_layers(layers)
        modules = dict(self.layer_root().named_modules())
        outputs: dict[str, torch.Tensor] = {}

        def store(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            outputs[name] = output[0] if isinstance(output, tuple | list) else output

        handles = []
        try:
            for name in dict.fromkeys(layers):
                handles.append(modules[name].register_forward_hook(functools.partial(store, name)))
            self.forward(x)
        finally:
            for handle in handles:
                handle.remove()
        not_run = [name for name in layers if name not in outputs]
        if not_run:
            raise RuntimeError(f"layers {not_run} did not run in the forward of {self.name}")
        return {name: outputs[name] for name in layers}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}"


BackboneFactory = Callable[..., Backbone]


#: Every backbone factory; the architecture modules of ``replens.models`` register theirs on import.
BACKBONES: Registry[BackboneFactory] = Registry("backbone")
_ALIASES: dict[str, str] = {}


def register_backbone(
    name: str, *, help: str, family: bool = False, placeholder: str = "<model>", display_name: str | None = None
) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register a backbone factory under ``name``.

    Args:
        name: Registry name (no colon). With ``family=True`` the factory serves
            ``name:<anything>`` and receives ``<anything>`` as first argument.
        help: One line for ``replens list``.
        family: Whether the name is a prefix family (``timm``, ``open_clip``).
        placeholder: How a family's spec is shown by :func:`list_backbones`
            (``timm:<model>``).
        display_name: How tables print it (default: the name).

    Returns:
        A decorator returning the factory unchanged. A factory is called as
        ``factory(pretrained=..., **kwargs)`` (or ``factory(spec, pretrained=...,
        **kwargs)`` for a family) and returns a :class:`Backbone`.
    """
    if ":" in name:
        raise ValueError(f"backbone names cannot contain ':' ({name!r})")
    return BACKBONES.register(name, help=help, display_name=display_name, family=family, placeholder=placeholder)


def register_alias(alias: str, target: str) -> None:
    """Make ``alias`` resolve to the backbone spec ``target`` (e.g. ``timm:vit_small_patch16_224``)."""
    if alias in BACKBONES or alias in _ALIASES:
        raise ValueError(f"backbone name {alias!r} is already taken")
    _ALIASES[alias] = target


def list_backbones() -> dict[str, str]:
    """Registered backbone names mapped to their one-line help.

    Families appear as ``timm:<model>``-style keys; aliases as
    ``alias`` with ``"alias of <target>"``.
    """
    listing: dict[str, str] = {}
    for entry in BACKBONES.entries():
        key = f"{entry.name}:{entry.meta['placeholder']}" if entry.meta["family"] else entry.name
        listing[key] = entry.help
    for alias, target in sorted(_ALIASES.items()):
        listing[alias] = f"alias of {target}"
    return listing


def _resolve(name: str) -> tuple[Entry[BackboneFactory], str | None]:
    spec = _ALIASES.get(name, name)
    family, sep, rest = spec.partition(":")
    entry = BACKBONES.find(family)
    if entry is None or entry.meta["family"] != bool(sep) or (sep and not rest):
        known = ", ".join(list_backbones())
        raise KeyError(f"unknown backbone {name!r}; registered: {known}")
    return entry, (rest if sep else None)


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    weights_strict: bool = True,
    **kwargs: Any,
) -> Backbone:
    """Create a registered backbone, optionally with weights.

    Args:
        name: Registry name (``"cifar_resnet20"``), family spec
            (``"timm:resnet10t"``, ``"open_clip:ViT-B-32:openai"``) or alias.
        pretrained: Load the library's published weights from its cache
            (downloading only when reachable); raises
            :class:`~replens.models.weights.WeightsError` otherwise.
        weights: A local safetensors/torch file to load with
            :func:`~replens.models.weights.load_weights` (excludes ``pretrained``).
        weights_strict: Require an exact key match for ``weights``.
        **kwargs: Factory options (e.g. ``stem="cifar"``, ``num_classes=10``). None given with
            ``weights``: the options the checkpoint records
            (:func:`~replens.models.weights.checkpoint_backbone_args`, written by ``replens train``).

    Returns:
        The backbone on CPU, in training mode (call ``.eval()`` for inference).

    Raises:
        KeyError: Unknown name.
        ValueError: Both ``pretrained`` and ``weights`` given.
        WeightsError: Weights unavailable or mismatched.
    """
    if pretrained and weights is not None:
        raise ValueError("pass either pretrained=True or weights=PATH, not both")
    entry, spec = _resolve(name)
    if weights is not None and not kwargs:  # a trained non-default architecture (e.g. wider SmallCNN)
        kwargs = checkpoint_backbone_args(weights)
    if spec is None:
        backbone = entry.obj(pretrained=pretrained, **kwargs)
    else:
        backbone = entry.obj(spec, pretrained=pretrained, **kwargs)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"factory of {name!r} returned {type(backbone).__name__}, not a Backbone")
    backbone.name = name
    if weights is not None:
        load_weights(backbone, weights, strict=weights_strict)
    return backbone
