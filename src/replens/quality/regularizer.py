"""Q-Score regularised fine-tuning (paper Eq. 3.3) and the lasso baseline (Table 3.1), as training plug-ins.

Eq. 3.3 maximises, for a batch of ``2N`` representations ``H`` (the two views'
online representations, ``out["h"]`` of every recipe),

    SSL objective + lambda1 / 2N * sum_i 1[Q_i < alpha] Q_i
                  - lambda2 * sum_k 1[||H_{*,k}||_1 > beta] ||H_{*,k}||_1

with ``alpha`` and ``beta`` the batch means of ``Q_i`` and of the column L1
norms (section 3.4). As a loss to minimise the plug-in adds

* ``q_bonus = -lambda1 * mean_i(1[Q_i < alpha] Q_i)`` (low-quality samples
  get their discriminative features pushed up), and
* ``l1_penalty = lambda2 * sum_k 1[||H_k||_1 > beta] ||H_k||_1`` (features
  active on most of the batch are pushed down, against the trivial solution
  of section 3.4).

``Q_i`` is Eq. 3.1 on the L2-normalised representation, as in the analysis;
the indicator sets (``L_i``, ``Q_i < alpha``, ``||H_k||_1 > beta``) are
computed without gradient, the values they select carry it (the gradient also
flows through ``mu_i`` and the normalisation). ``H`` in the L1 term is the
L2-normalised matrix too (``normalize=False`` uses the raw one).

Discriminative features ``D``: from a ``feature_sets.json`` written by
``replens qscore`` on the pre-trained model (``features=PATH``, the paper's
protocol: "we discover discriminative features for each pre-trained model
using the train set"), or, without one, re-estimated every step from running
counts of ``L_i`` over all training representations seen so far (buffers,
checkpointed with the model, so resume is exact).

The paper fine-tunes pre-trained encoders at a low learning rate (1e-5, 50
epochs, LARS) with ``lambda1 = lambda2 = 1e-4``::

    replens train --data D --method byol --from PRETRAINED --qscore-reg --lr 1e-5 --set optimizer=lars

With DDP each process uses its own batch for ``alpha``, ``beta`` and the counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from replens.quality.qscore import DEFAULT_BAND, DEFAULT_EPS, band_features, load_feature_sets
from replens.ssl.base import SSLMethod, TrainPlugin, register_plugin

__all__ = ["LassoRegularizer", "QScoreRegularizer", "highly_activating_mask", "qscore_regularizer_terms"]


def highly_activating_mask(h: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """``L_i`` as a bool mask: ``h_ij > mu_i + eps sigma_i`` per row (population std), without gradient."""
    with torch.no_grad():
        hn = F.normalize(h.detach().float(), dim=1)
        std, mean = torch.std_mean(hn, dim=1, correction=0, keepdim=True)
        return hn > mean + eps * std


def qscore_regularizer_terms(
    h: torch.Tensor, discriminative: torch.Tensor, eps: float = DEFAULT_EPS, normalize: bool = True
) -> dict[str, torch.Tensor]:
    """The two regularisation terms of Eq. 3.3 on a batch of representations.

    Args:
        h: (2N, r) representations, with gradient.
        discriminative: (r,) bool mask of ``D``.
        eps: ``epsilon`` of ``L_i``.
        normalize: Use the L2-normalised ``H`` in the L1 term (``Q`` always is).

    Returns:
        ``{"q_term": mean_i 1[Q_i < alpha] Q_i, "l1_term": sum_k 1[||H_k||_1 > beta] ||H_k||_1,
        "q": Q (detached), "alpha", "beta"}``.

    Shape:
        - h: (2N, r)
        - discriminative: (r,)
    """
    if h.ndim != 2 or discriminative.shape != (h.shape[1],):
        raise ValueError(f"h must be (2N, r) and discriminative (r,); got {tuple(h.shape)} and "
                         f"{tuple(discriminative.shape)}")
    h = h.float()
    hn = F.normalize(h, dim=1)
    mean = hn.mean(dim=1, keepdim=True)
    selected = highly_activating_mask(h, eps) & discriminative.to(h.device)[None, :]
    count = selected.sum(dim=1)
    q = ((hn - mean) * selected).sum(dim=1) / count.clamp_min(1)  # 0 when L_i & D is empty
    alpha = q.detach().mean()
    q_term = (q * (q.detach() < alpha)).mean()
    columns = (hn if normalize else h).abs().sum(dim=0)
    beta = columns.detach().mean()
    l1_term = (columns * (columns.detach() > beta)).sum()
    return {"q_term": q_term, "l1_term": l1_term, "q": q.detach(), "alpha": alpha, "beta": beta}


@register_plugin("qscore_reg", "Q-Score regularised fine-tuning, Eq. 3.3 (use with --from and a low --lr)")
class QScoreRegularizer(TrainPlugin):
    """Eq. 3.3 for every SSL recipe of the engine (see the module docstring).

    Args:
        lambda1: Weight of the Q-Score term (1e-4 in the paper).
        lambda2: Weight of the column-L1 term (1e-4 in the paper).
        eps: ``epsilon`` of ``L_i``.
        lower: Lower percentile of the ``D`` band (running estimate).
        upper: Upper percentile of the ``D`` band (running estimate).
        features: ``feature_sets.json`` (or ``.npy`` of indices) fixing ``D``.
        normalize: L2-normalise ``H`` in the L1 term.
    """

    cli_options = {
        "qscore-features": ("features", str, "feature_sets.json of `replens qscore` fixing D (default: running estimate)"),
    }

    def __init__(self, lambda1: float = 1e-4, lambda2: float = 1e-4, eps: float = DEFAULT_EPS,
                 lower: float = DEFAULT_BAND[0], upper: float = DEFAULT_BAND[1], features: str | None = None,
                 normalize: bool = True) -> None:
        super().__init__()
        if lambda1 < 0 or lambda2 < 0:
            raise ValueError(f"plugin_args.qscore_reg: lambda1 and lambda2 must be >= 0, got {lambda1}, {lambda2}")
        if not 0 <= lower <= upper <= 100:
            raise ValueError(f"plugin_args.qscore_reg: need 0 <= lower <= upper <= 100, got {lower}, {upper}")
        self.lambda1, self.lambda2, self.eps = float(lambda1), float(lambda2), float(eps)
        self.band = (float(lower), float(upper))
        self.normalize = bool(normalize)
        self.fixed = load_feature_sets(features) if features else None
        self.features_path = features
        self._last: dict[str, float] = {}

    def setup(self, method: SSLMethod, data_info: dict[str, Any]) -> None:
        dim = int(method.backbone.feature_dim)
        self.register_buffer("counts", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.float64))
        mask = torch.zeros(dim, dtype=torch.bool)
        if self.fixed is not None:
            if len(self.fixed) and self.fixed.max() >= dim:
                raise ValueError(f"{self.features_path}: feature {int(self.fixed.max())} does not exist in a "
                                 f"{dim}-dimensional representation")
            mask[torch.as_tensor(self.fixed)] = True
        self.register_buffer("discriminative", mask)

    def _update_estimate(self, h: torch.Tensor) -> None:
        if self.fixed is not None:
            return
        active = highly_activating_mask(h, self.eps)
        self.counts += active.sum(dim=0).to(self.counts.dtype)
        self.seen += h.shape[0]
        chosen = band_features((100.0 * self.counts / self.seen).cpu().numpy(), *self.band)
        mask = torch.zeros_like(self.discriminative)
        mask[torch.as_tensor(chosen, device=mask.device)] = True
        self.discriminative.copy_(mask)

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        h = out["h"]
        if h.ndim != 2 or h.shape[1] != self.discriminative.numel():
            raise ValueError(f"qscore_reg: out['h'] has shape {tuple(h.shape)}, expected (2N, "
                             f"{self.discriminative.numel()})")
        self._update_estimate(h)
        terms = qscore_regularizer_terms(h, self.discriminative, self.eps, self.normalize)
        self._last = {"alpha": float(terms["alpha"]), "beta": float(terms["beta"]),
                      "below_alpha": float((terms["q"] < terms["alpha"]).float().mean()),
                      "discriminative": float(self.discriminative.sum())}
        return {"q_bonus": -self.lambda1 * terms["q_term"], "l1_penalty": self.lambda2 * terms["l1_term"]}

    def after_step(self, step: int, total_steps: int, out: dict[str, torch.Tensor],
                   batch: dict[str, Any]) -> dict[str, float]:
        return dict(self._last)

    def discriminative_features(self) -> np.ndarray:
        """The current ``D`` (sorted indices)."""
        return torch.nonzero(self.discriminative).flatten().cpu().numpy()


@register_plugin("lasso_reg", "lasso (L1) penalty on the representations, the baseline of Table 3.1")
class LassoRegularizer(TrainPlugin):
    """Lasso baseline of Table 3.1: ``weight * mean_i ||h_i||_1`` added to the loss.

    "Lasso promotes sparsity by minimizing the L1 norm of representations"
    (section 3.4.2). The raw representations are penalised by default
    (``normalize=True`` penalises the L2-normalised ones).

    Args:
        weight: Coefficient (1e-4, the paper's lambda for Q-Score, by default).
        normalize: Penalise L2-normalised representations.
    """

    def __init__(self, weight: float = 1e-4, normalize: bool = False) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"plugin_args.lasso_reg.weight must be >= 0, got {weight}")
        self.weight, self.normalize = float(weight), bool(normalize)

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        h = out["h"].float()
        if self.normalize:
            h = F.normalize(h, dim=1)
        return {"l1": self.weight * h.abs().sum(dim=1).mean()}
