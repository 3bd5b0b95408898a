"""The encoder as an SSL recipe sees it under DDM: only the invariant part h^p.

Section 2.4 trains h^p = h[:, k:] with the SSL loss and the domain prefix
h^d = h[:, :k] with L_d_var. :class:`DomainSplitBackbone` wraps any
``replens.models`` backbone so that the recipe's heads are built on and fed
h^p (``feature_dim = r - k``), while the DDM plug-in reads the full h of the
same forward passes from :meth:`DomainSplitBackbone.take_records`.

Only forward passes made in training mode, with gradients enabled and with
``recording`` switched on are recorded; momentum/teacher copies (deep copies
made by the recipe before the plug-in switches recording on, and run under
``no_grad``) never record, so nothing leaks.

The wrapper is transparent in checkpoints: its state dict has exactly the
wrapped encoder's keys (no ``encoder.`` prefix), so the ``backbone.safetensors``
a run writes loads into a plain ``create_backbone(name)``, which returns the
full r-dimensional representation (prefix first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_INNER = "encoder."


def _strip_inner_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict) -> None:
    inner = prefix + _INNER
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k == inner[:-1] or k.startswith(inner)]:
            new = prefix + key[len(inner):] if key.startswith(inner) else prefix[:-1]
            metadata.setdefault(new, metadata.pop(key))


def _add_inner_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict,
                      strict: bool, missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
    inner = prefix + _INNER
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


class DomainSplitBackbone(nn.Module):
    """A backbone whose forward returns h^p = h[:, k:] and records the full h (section 2.4).

    Args:
        encoder: Any backbone with ``feature_dim`` (r).
        prefix_dim: k, the size of the domain prefix (1 <= k < r).
        max_records: Recorded forwards kept at most (the oldest are dropped),
            a bound on memory when nobody consumes the records.

    Attributes:
        encoder: The wrapped backbone (full r-dim representation).
        feature_dim: r - k, what the recipe's heads see.
        full_dim: r.
        prefix_dim: k.
        recording: Record grad-enabled training forwards (the plug-in turns it on).
    """

    def __init__(self, encoder: nn.Module, prefix_dim: int, max_records: int = 64) -> None:
        super().__init__()
        full = int(encoder.feature_dim)
        if not 0 < prefix_dim < full:
            raise ValueError(f"DDM prefix_dim must be in [1, {full - 1}] for a {full}-d encoder, got {prefix_dim}")
        self.encoder = encoder
        self.full_dim, self.prefix_dim, self.feature_dim = full, int(prefix_dim), full - int(prefix_dim)
        self.max_records = max_records
        self.recording = False
        self._records: list[torch.Tensor] = []
        self.register_state_dict_post_hook(_strip_inner_prefix)
        self.register_load_state_dict_pre_hook(_add_inner_prefix)
        self.training = encoder.training  # wrapping changes no mode: an eval encoder stays in eval

    @property
    def base_backbone(self) -> nn.Module:
        """The wrapped encoder (the engine saves and monitors this one: the full representation)."""
        return self.encoder

    # the Backbone interface, delegated to the encoder
    @property
    def mean(self) -> tuple[float, ...]:
        return self.encoder.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.encoder.std

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's preprocessing."""
        return self.encoder.preprocess(images)

    @property
    def name(self) -> str:
        """The encoder's registry name."""
        return str(getattr(self.encoder, "name", type(self.encoder).__name__))

    @property
    def num_prefix_tokens(self) -> int:
        """The encoder's class/register tokens (0 for convolutional nets)."""
        return int(getattr(self.encoder, "num_prefix_tokens", 0))

    @property
    def input_size(self) -> int | None:
        return getattr(self.encoder, "input_size", None)

    def layer_names(self) -> list[str]:
        """The encoder's layer names."""
        return self.encoder.layer_names()

    def layer_root(self) -> nn.Module:
        """The module that names the layers: the encoder's (its modules run inside this forward)."""
        return self.encoder.layer_root()

    def require_layers(self, layers: Sequence[str | None]) -> None:
        """The encoder's layer-name check."""
        self.encoder.require_layers(layers)

    def find_layer(self, name: str | None = None) -> tuple[str, nn.Module]:
        """The encoder's layer lookup (Grad-CAM hooks these modules; h^p is computed from them)."""
        return self.encoder.find_layer(name)

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The encoder's intermediate layers (full, unsplit)."""
        return self.encoder.forward_layers(x, layers)

    def forward_full(self, x: torch.Tensor) -> torch.Tensor:
        """The full representation h (not recorded).

        Shape:
            x: (B, 3, H, W) -> (B, r).
        """
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h^p of the encoder's representation; records h when recording.

        Shape:
            x: (B, 3, H, W) -> (B, r - k).
        """
        h = self.encoder(x)
        if self.recording and self.training and torch.is_grad_enabled():
            self._records.append(h)
            if len(self._records) > self.max_records:
                del self._records[0]
        return h[:, self.prefix_dim:]

    def take_records(self) -> list[torch.Tensor]:
        """The full h of every recorded forward since the last call, oldest first; clears them."""
        records, self._records = self._records, []
        return records

    def clear_records(self) -> None:
        """Drop the recorded forwards (frees their autograd graphs)."""
        self._records = []

    def extra_repr(self) -> str:
        return f"prefix_dim={self.prefix_dim}, full_dim={self.full_dim}"
