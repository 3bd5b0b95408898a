"""The domain-variant contrastive loss L_d_var of the paper's section 2.4.

For the 2N views of a batch, with representations split into the domain
prefix h^d = h[:, :k] and the invariant part h^p = h[:, k:], the paper defines
for view i with domain y_i

    L_i_d_var = log( sum_j 1[j != i] 1[y_i = y_j] sim(h^d_i, h^d_j)
                     / sum_j 1[y_i != y_j] sim(h^d_i, h^d_j) ),
    sim(a, b) = exp( a.b / (tau ||a|| ||b||) ),

which the encoder *maximises* (Eq. 2.1). We compute it in log space
(``logsumexp``) so that small temperatures cannot overflow, and return the
negated mean over views as a loss to minimise (Eq. 2.1 sums over the 2N views;
the mean only rescales it, like the SSL losses of the engine, which are means).

Views whose domain is unknown (label < 0: an outlier of robust clustering,
section 2.5) take no part, neither as anchor i nor as partner j. A view with
no other view of its own domain or none of another domain has an undefined
ratio (0/x or x/0) and is left out of the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_representation(h: torch.Tensor, prefix_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``h`` into the domain prefix h^d (first ``prefix_dim`` features) and h^p (section 2.4).

    Shape:
        h: (N, r) -> ((N, k), (N, r - k)).
    """
    if not 0 < prefix_dim < h.shape[-1]:
        raise ValueError(f"prefix_dim must be in [1, {h.shape[-1] - 1}] for {h.shape[-1]}-d representations, "
                         f"got {prefix_dim}")
    return h[..., :prefix_dim], h[..., prefix_dim:]


def domain_variant_terms(prefix: torch.Tensor, domains: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view L_i_d_var of section 2.4 (the log-ratio, to be maximised).

    Args:
        prefix: Domain prefixes h^d of the 2N views.
        domains: Domain label of each view; labels < 0 mark views to ignore.
        temperature: tau of ``sim``.

    Returns:
        ``(terms, defined)``: ``terms[i]`` is L_i_d_var where ``defined[i]``
        (a valid view with at least one other view of its domain and one of
        another domain) and 0 elsewhere.

    Shape:
        prefix: (M, k); domains: (M,) -> terms: (M,), defined: (M,) bool.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if prefix.ndim != 2 or domains.shape != prefix.shape[:1]:
        raise ValueError(f"prefix must be (M, k) and domains (M,), got {tuple(prefix.shape)} and {tuple(domains.shape)}")
    z = F.normalize(prefix.float(), dim=1)
    logits = z @ z.T / temperature
    valid = domains >= 0
    pair_valid = valid[:, None] & valid[None, :]
    same_domain = domains[:, None] == domains[None, :]
    not_self = ~torch.eye(len(domains), dtype=torch.bool, device=prefix.device)
    positive = pair_valid & same_domain & not_self
    negative = pair_valid & ~same_domain
    neg_inf = torch.finfo(logits.dtype).min
    log_num = torch.logsumexp(logits.masked_fill(~positive, neg_inf), dim=1)
    log_den = torch.logsumexp(logits.masked_fill(~negative, neg_inf), dim=1)
    defined = valid & positive.any(1) & negative.any(1)
    terms = torch.where(defined, log_num - log_den, torch.zeros_like(log_num))
    return terms, defined


def domain_variant_loss(prefix: torch.Tensor, domains: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The encoder's loss for L_d_var: ``-mean_i L_i_d_var`` over the defined views (section 2.4).

    Returns a zero that keeps the graph when no view is defined (e.g. a batch
    with a single domain), so it can always be added to the training loss.

    Shape:
        prefix: (M, k); domains: (M,) -> scalar.
    """
    terms, defined = domain_variant_terms(prefix, domains, temperature)
    if not bool(defined.any()):
        return prefix.sum() * 0.0
    return -terms[defined].mean()
