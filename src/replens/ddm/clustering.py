"""Robust clustering into pseudo-domains (paper section 2.5, Eq. 2.2).

Without domain labels, DDM warms the encoder up as if the data had one domain,
clusters the representations h into M clusters with K-Means (scikit-learn's
implementation) and uses the cluster ids as pseudo-domain labels. A sample is
kept only if it is clearly closer to one centroid than to another (Eq. 2.2):

    h_i is not an outlier  iff  max_{m, n} ||h_i - c_m||^2 / ||h_i - c_n||^2 > 1 + epsilon.

The maximum over all pairs is the farthest over the nearest squared distance
(``rule="eq2.2"``, the default, exactly as printed). The text around Eq. 2.2
describes outliers as samples "almost equidistant from at least two
centroids"; for M = 2 both readings agree, for M > 2 the stricter second
nearest over nearest ratio is available as ``rule="second_nearest"``.

epsilon starts at 1 and decays exponentially (``epsilon_start *
epsilon_decay ** t`` at the t-th clustering), so by the end of training almost
every sample contributes. Cluster ids are matched to the previous round's
(Hungarian matching of centroids) so a pseudo-domain keeps its id, and with it
its meaning for the conditional critic, across re-clusterings.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

OutlierRule = Literal["eq2.2", "second_nearest"]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def squared_distances(h: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``||h_i - c_m||^2`` for every sample and centroid (float64, exact differences).

    Shape:
        h: (N, r); centroids: (M, r) -> (N, M).
    """
    diff = h.double()[:, None, :] - centroids.double().to(h.device)[None, :, :]
    return diff.pow(2).sum(-1)


def centroid_ratio(h: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor,
                   rule: OutlierRule = "eq2.2") -> torch.Tensor:
    """The left side of Eq. 2.2 for every sample.

    ``rule="eq2.2"``: ``max_{m,n} d_m / d_n`` = largest over smallest squared
    distance; ``rule="second_nearest"``: second smallest over smallest. A
    sample on a centroid (d_min = 0) gets ``inf``.

    Shape:
        h: (N, r); centroids: (M, r), M >= 2 -> (N,) float64.
    """
    h, centroids = _as_tensor(h), _as_tensor(centroids)
    if centroids.ndim != 2 or centroids.shape[0] < 2:
        raise ValueError(f"Eq. 2.2 needs at least 2 centroids, got shape {tuple(centroids.shape)}")
    if h.ndim != 2 or h.shape[1] != centroids.shape[1]:
        raise ValueError(f"representations {tuple(h.shape)} and centroids {tuple(centroids.shape)} disagree in size")
    if rule not in ("eq2.2", "second_nearest"):
        raise ValueError(f"unknown outlier rule {rule!r}; choose 'eq2.2' or 'second_nearest'")
    ordered = squared_distances(h, centroids).sort(dim=1).values
    top = ordered[:, -1] if rule == "eq2.2" else ordered[:, 1]
    smallest = ordered[:, 0]
    return torch.where(smallest > 0, top / smallest.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.full_like(top, float("inf")))


def is_inlier(h: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor, epsilon: float,
              rule: OutlierRule = "eq2.2") -> torch.Tensor:
    """Eq. 2.2: True where the sample is NOT an outlier (ratio > 1 + epsilon).

    Shape:
        h: (N, r); centroids: (M, r) -> (N,) bool.
    """
    if epsilon < 0:
        raise ValueError(f"the outlier threshold epsilon must be >= 0 (Eq. 2.2), got {epsilon}")
    return centroid_ratio(h, centroids, rule) > 1.0 + epsilon


def robust_assign(h: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor, epsilon: float,
                  rule: OutlierRule = "eq2.2") -> torch.Tensor:
    """Pseudo-domain labels: the nearest centroid, or -1 for an outlier by Eq. 2.2.

    Shape:
        h: (N, r); centroids: (M, r) -> (N,) int64.
    """
    h, centroids = _as_tensor(h), _as_tensor(centroids)
    nearest = squared_distances(h, centroids).argmin(dim=1)
    return torch.where(is_inlier(h, centroids, epsilon, rule), nearest, torch.full_like(nearest, -1))


def clustering_purity(pseudo: np.ndarray | torch.Tensor, true: np.ndarray | torch.Tensor) -> float:
    """Purity of a clustering against true domains, over the non-outlier samples.

    ``sum over clusters of (count of its most frequent true domain) / assigned
    samples``; NaN when no sample is assigned.

    Shape:
        pseudo: (N,) with -1 for outliers; true: (N,) -> float in [0, 1].
    """
    pseudo, true = np.asarray(pseudo).astype(np.int64), np.asarray(true).astype(np.int64)
    if pseudo.shape != true.shape:
        raise ValueError(f"pseudo labels {pseudo.shape} and true domains {true.shape} differ in shape")
    keep = pseudo >= 0
    if not keep.any():
        return float("nan")
    pseudo, true = pseudo[keep], true[keep]
    total = 0
    for c in np.unique(pseudo):
        total += int(np.bincount(true[pseudo == c]).max())
    return total / len(pseudo)


def _match_to_previous(centroids: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Reorder new centroids so that id m is the new centroid nearest old centroid m (Hungarian)."""
    if previous is None or previous.shape != centroids.shape:
        return centroids
    from scipy.optimize import linear_sum_assignment

    cost = ((previous[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    _, new_for_old = linear_sum_assignment(cost)
    return centroids[new_for_old]


class RobustClustering:
    """K-Means into M pseudo-domains with the Eq. 2.2 outlier rule and a decaying epsilon (section 2.5).

    Args:
        num_clusters: M, the (assumed known) number of domains.
        epsilon_start: epsilon at the first clustering (1 in the paper).
        epsilon_decay: Factor applied at each re-clustering (epsilon_t = start * decay^t).
        rule: ``"eq2.2"`` (as printed) or ``"second_nearest"`` (see the module docstring).
        n_init: K-Means restarts.
        max_fit_samples: K-Means is fitted on at most this many samples (a
            seeded random subset); every sample is then assigned.
        seed: Seed of K-Means and of the subset.
    """

    def __init__(self, num_clusters: int, epsilon_start: float = 1.0, epsilon_decay: float = 0.5,
                 rule: OutlierRule = "eq2.2", n_init: int = 4, max_fit_samples: int = 20_000, seed: int = 0) -> None:
        if num_clusters < 2:
            raise ValueError(f"robust clustering needs M >= 2 pseudo-domains, got {num_clusters}")
        if epsilon_start < 0 or not 0 < epsilon_decay <= 1:
            raise ValueError(f"need epsilon_start >= 0 and 0 < epsilon_decay <= 1, got {epsilon_start}, {epsilon_decay}")
        if rule not in ("eq2.2", "second_nearest"):
            raise ValueError(f"unknown outlier rule {rule!r}; choose 'eq2.2' or 'second_nearest'")
        self.num_clusters, self.epsilon_start, self.epsilon_decay = int(num_clusters), epsilon_start, epsilon_decay
        self.rule: OutlierRule = rule
        self.n_init, self.max_fit_samples, self.seed = n_init, max_fit_samples, seed
        self.rounds = 0
        self.centroids: np.ndarray | None = None
        self.last_epsilon: float | None = None

    @property
    def epsilon(self) -> float:
        """The threshold the next clustering will use."""
        return self.epsilon_start * self.epsilon_decay**self.rounds

    def fit(self, h: np.ndarray | torch.Tensor) -> np.ndarray:
        """Cluster ``h``, then label each sample by Eq. 2.2 with the current epsilon.

        Returns:
            (N,) int64 pseudo-domain labels, -1 for outliers. Advances the
            epsilon schedule by one step.

        Shape:
            h: (N, r) with N >= M.
        """
        from sklearn.cluster import KMeans

        x = np.asarray(h.detach().cpu() if isinstance(h, torch.Tensor) else h, dtype=np.float64)
        if x.ndim != 2 or len(x) < self.num_clusters:
            raise ValueError(f"need (N, r) representations with N >= {self.num_clusters}, got shape {x.shape}")
        rng = np.random.default_rng(self.seed + self.rounds)
        fit_rows = x if len(x) <= self.max_fit_samples else x[rng.choice(len(x), self.max_fit_samples, replace=False)]
        kmeans = KMeans(n_clusters=self.num_clusters, n_init=self.n_init, random_state=self.seed + self.rounds)
        kmeans.fit(fit_rows)
        self.centroids = _match_to_previous(kmeans.cluster_centers_.astype(np.float64), self.centroids)
        self.last_epsilon = self.epsilon
        labels = robust_assign(x, self.centroids, self.last_epsilon, self.rule).numpy()
        self.rounds += 1
        return labels

    def assign(self, h: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Label new samples with the last centroids and epsilon (Eq. 2.2); all -1 before the first fit."""
        h = _as_tensor(h)
        if self.centroids is None or self.last_epsilon is None:
            return torch.full((h.shape[0],), -1, dtype=torch.int64, device=h.device)
        return robust_assign(h, torch.as_tensor(self.centroids, device=h.device), self.last_epsilon, self.rule)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule (plain tensors and numbers)."""
        return {"rounds": self.rounds,
                "centroids": None if self.centroids is None else torch.from_numpy(self.centroids.copy()),
                "last_epsilon": self.last_epsilon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rounds = int(state.get("rounds", 0))
        centroids = state.get("centroids")
        self.centroids = None if centroids is None else np.asarray(centroids, dtype=np.float64)
        last = state.get("last_epsilon")
        self.last_epsilon = None if last is None else float(last)
