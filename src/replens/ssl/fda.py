"""Fourier Domain Augmentations as a training plug-in for every SSL recipe (paper chapter 5).

``replens train --fda`` inserts the four FDA operations of section 5.4 with
the probabilities and ranges of Table C.2 into the recipe's LEFT view, right
after the random resized crop and before the other image augmentations
(Figure 5.1); section 5.5.1 found the left view alone best. The view pairs of
Tables 5.3 to 5.5 are configuration: ``--left-view`` and ``--right-view`` take
a view kind of ``replens.augment.VIEW_KINDS`` (raw, image-aug, fda,
fda+image-aug, image-aug+fda (Table 5.4's order), freq, freq-aug,
image-aug+freq, method, method+fda). Any ``FDAConfig`` field is a plug-in
argument, e.g. ``--set plugin_args.fda.mask_prob=1.0``.

The views are made by the engine's batched view pipeline on the training
device; the plug-in adds no loss term and no parameters.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields
from typing import Any

from replens.augment.fourier import REFERENCE_SIZE, FDAConfig, fda_config
from replens.augment.views import VIEW_KINDS, ViewConfig, view_kind
from replens.ssl.base import SSLMethod, TrainPlugin, register_plugin

log = logging.getLogger(__name__)

_FREQUENCY_KINDS = ("freq", "freq-aug", "image-aug+freq")


def view_kind_arg(text: str) -> str:
    """``argparse`` type of ``--left-view`` / ``--right-view``: a key of ``VIEW_KINDS``."""
    if text not in VIEW_KINDS:
        raise argparse.ArgumentTypeError(f"unknown view kind {text!r}; choose one of {', '.join(VIEW_KINDS)}")
    return text


@register_plugin("fda", "Fourier Domain Augmentations on the left view (chapter 5, Table C.2)")
class FDAPlugin(TrainPlugin):
    """Fourier Domain Augmentations for any SSL recipe.

    Args:
        left_view: View kind of the first view (default ``method+fda``: the
            recipe's own view with FDA after the crop, i.e. ``fda+image-aug``
            for image-augmented recipes).
        right_view: View kind of the second view (default ``method``: unchanged).
        reference_size: Crop size at which ``gmm_sigma`` is given (224 in
            Table C.2); the sigmas are scaled to the view size.
        **fda: :class:`replens.augment.FDAConfig` fields overriding Table C.2.
    """

    cli_options = {
        "left-view": ("left_view", view_kind_arg, f"first view kind: {', '.join(VIEW_KINDS)} (default method+fda)"),
        "right-view": ("right_view", view_kind_arg, "second view kind, as --left-view (default method: the recipe's own)"),
    }

    def __init__(self, left_view: str = "method+fda", right_view: str = "method",
                 reference_size: int = REFERENCE_SIZE, **fda: Any) -> None:
        super().__init__()
        for key, kind in (("left_view", left_view), ("right_view", right_view)):
            if kind not in VIEW_KINDS:
                raise KeyError(f"plugin_args.fda.{key}: unknown view kind {kind!r}; choose one of {', '.join(VIEW_KINDS)}")
        known = {f.name for f in fields(FDAConfig)}
        unknown = sorted(set(fda) - known)
        if unknown:
            raise KeyError(f"plugin_args.fda: unknown option(s) {', '.join(unknown)}; known: left_view, right_view, "
                           f"reference_size, {', '.join(sorted(known))}")
        self.left_view, self.right_view, self.reference_size = left_view, right_view, int(reference_size)
        self.fda = dict(fda)
        fda_config(REFERENCE_SIZE, self.reference_size, **self.fda)  # validate now, not at the first step

    def fda_config(self, size: int) -> FDAConfig:
        """The FDA distributions at ``size`` px (Table C.2 with this plug-in's overrides)."""
        return fda_config(size, self.reference_size, **self.fda)

    def view_configs(self, configs: list[ViewConfig]) -> list[ViewConfig]:
        if len(configs) < 2:
            raise ValueError(f"the fda plug-in needs a recipe with two views, got {len(configs)}")
        out = list(configs)
        for i, kind in enumerate((self.left_view, self.right_view)):
            out[i] = view_kind(kind, configs[i], self.fda_config(configs[i].size))
        return out

    def setup(self, method: SSLMethod, data_info: dict[str, Any]) -> None:
        freq = [k for k in (self.left_view, self.right_view) if k in _FREQUENCY_KINDS]
        if freq and method.name != "dual_encoder":
            log.warning("fda: %s views go through the same encoder as image views in %s; section 5.6.1 gives "
                        "frequency views their own encoder (--method dual_encoder)", "/".join(freq), method.name)
