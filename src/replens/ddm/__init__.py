"""The Domain-Disentanglement Module (paper chapter 2): domain prefix, Wasserstein critic, robust clustering.

``replens train --ddm`` (domain labels from the data) or ``--ddm-domains M``
(M pseudo-domains by robust clustering) plugs DDM into any SSL recipe of the
engine; ``replens ddm eval`` reports per-domain linear probes in the layout of
Tables 2.1-2.4 and draws Figures 2.3 and 2.4.
"""

from replens.ddm.backbone import DomainSplitBackbone
from replens.ddm.clustering import (
    RobustClustering,
    centroid_ratio,
    clustering_purity,
    is_inlier,
    robust_assign,
    squared_distances,
)
from replens.ddm.critic import (
    DomainCritic,
    critic_loss,
    encoder_invariance_loss,
    gradient_penalty,
    invariance_terms,
)
from replens.ddm.losses import domain_variant_loss, domain_variant_terms, split_representation
from replens.ddm.plugin import DDMPlugin, default_prefix_dim

_LAZY = {"TINTS": "replens.ddm.colored", "TintedSource": "replens.ddm.colored", "tint_image": "replens.ddm.colored"}


def __getattr__(name: str) -> object:
    # the Colored-CIFAR helpers import replens.data; load them on first use so that importing
    # replens.ssl (which registers the plug-in) stays light
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'replens.ddm' has no attribute {name!r}")

__all__ = [
    "DDMPlugin",
    "DomainCritic",
    "DomainSplitBackbone",
    "RobustClustering",
    "TINTS",
    "TintedSource",
    "centroid_ratio",
    "clustering_purity",
    "critic_loss",
    "default_prefix_dim",
    "domain_variant_loss",
    "domain_variant_terms",
    "encoder_invariance_loss",
    "gradient_penalty",
    "invariance_terms",
    "is_inlier",
    "robust_assign",
    "split_representation",
    "squared_distances",
    "tint_image",
]
