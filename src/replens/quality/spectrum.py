"""Peer representation-quality metrics: RankMe and alpha-ReQ, with the exact definitions used.

Peer implementations disagree on details (centring, which matrix, fit range,
the epsilon), so both are written out here:

* **RankMe** (Garrido et al., 2023, Eq. 1): with ``sigma_k`` the singular
  values of the (N, r) representation matrix ``Z`` *as given* (not centred,
  not normalised), ``p_k = sigma_k / ||sigma||_1 + eps`` with
  ``eps = 1e-7`` and ``RankMe(Z) = exp(-sum_k p_k log p_k)``. It lies in
  ``[1, min(N, r)]`` up to the epsilon. The paper evaluates it on 25,600
  samples; :func:`spectrum_metrics` subsamples to ``max_samples`` (seeded) the
  same way.
* **alpha-ReQ** (Agrawal et al., 2022): ``lambda_1 >= lambda_2 >= ...`` the
  eigenvalues of the sample covariance of the *centred* representations
  (``Z_c^T Z_c / (N - 1)``); ``alpha`` is minus the slope of the ordinary
  least-squares line through ``(log k, log lambda_k)`` for ``k`` in the fit
  range. Default range: ``k = 1 .. K`` where ``K`` counts the eigenvalues above
  ``1e-10 * lambda_1`` (numerically zero directions, e.g. ``r > N`` or dead
  features, are dropped); pass ``fit_range=(k_min, k_max)`` (1-based,
  inclusive) to match a peer that skips the head of the spectrum. The fit's
  R^2 is reported with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["alpha_req", "covariance_eigenvalues", "rankme", "spectrum_metrics"]


def _matrix(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    z = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if z.ndim != 2:
        raise ValueError(f"representations must be (N, r), got shape {tuple(z.shape)}")
    if z.shape[0] < 2:
        raise ValueError(f"need at least 2 samples, got {z.shape[0]}")
    z = z.detach().to(torch.float64)
    bad = torch.nonzero(~torch.isfinite(z).all(dim=1)).flatten()
    if len(bad):
        raise ValueError(f"non-finite representations in rows {bad[:10].tolist()}")
    return z


def rankme(features: np.ndarray | torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of Garrido et al. (2023) on the matrix as given (see the module docstring).

    Args:
        features: (N, r) representations.
        eps: The epsilon added to each normalised singular value.
    """
    sigma = torch.linalg.svdvals(_matrix(features))
    total = sigma.sum()
    if total <= 0:
        return 1.0
    p = sigma / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def covariance_eigenvalues(features: np.ndarray | torch.Tensor) -> np.ndarray:
    """Eigenvalues of the sample covariance of the centred representations, descending."""
    z = _matrix(features)
    z = z - z.mean(dim=0, keepdim=True)
    sigma = torch.linalg.svdvals(z)
    return (sigma**2 / (z.shape[0] - 1)).numpy()


def alpha_req(
    features: np.ndarray | torch.Tensor, fit_range: tuple[int, int] | None = None, rel_floor: float = 1e-10
) -> tuple[float, float]:
    """alpha-ReQ of Agrawal et al. (2022): power-law decay of the covariance eigenspectrum.

    Args:
        features: (N, r) representations.
        fit_range: 1-based inclusive ``(k_min, k_max)`` of eigenvalue indices to fit;
            default all eigenvalues above ``rel_floor * lambda_1``.
        rel_floor: Relative floor of the default range.

    Returns:
        ``(alpha, r2)``: minus the fitted slope, and the R^2 of the fit in log-log space.
    """
    eig = covariance_eigenvalues(features)
    if eig[0] <= 0:
        raise ValueError("representations have zero variance: alpha-ReQ is undefined")
    if fit_range is None:
        k_min, k_max = 1, int((eig > rel_floor * eig[0]).sum())
    else:
        k_min, k_max = fit_range
        if not 1 <= k_min < k_max <= len(eig):
            raise ValueError(f"fit_range must satisfy 1 <= k_min < k_max <= {len(eig)}, got {fit_range}")
        if eig[k_max - 1] <= 0:
            raise ValueError(f"eigenvalue {k_max} is zero; lower k_max")
    if k_max - k_min < 1:
        raise ValueError("fewer than two positive eigenvalues: alpha-ReQ is undefined")
    k = np.arange(k_min, k_max + 1, dtype=np.float64)
    x, y = np.log(k), np.log(eig[k_min - 1 : k_max])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    spread = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - float((residual**2).sum() / spread) if spread > 0 else 1.0
    return float(-slope), r2


def spectrum_metrics(
    features: np.ndarray, *, max_samples: int = 25_600, seed: int = 0, fit_range: tuple[int, int] | None = None
) -> dict[str, Any]:
    """RankMe and alpha-ReQ on at most ``max_samples`` rows (seeded subsample), for reports."""
    n = features.shape[0]
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        sample = np.asarray(features[rows], dtype=np.float32)
    else:
        sample = np.asarray(features, dtype=np.float32)
    alpha, r2 = alpha_req(sample, fit_range=fit_range)
    return {
        "rankme": rankme(sample),
        "alpha_req": alpha,
        "alpha_req_r2": r2,
        "samples": int(len(sample)),
        "definitions": {
            "rankme": "exp(-sum p_k log p_k), p_k = sigma_k / ||sigma||_1 + 1e-7, singular values of the raw "
            "(N, r) matrix (Garrido et al. 2023)",
            "alpha_req": "minus the OLS slope of log eigenvalue vs log index, covariance of centred representations, "
            + ("k in all eigenvalues > 1e-10 lambda_1" if fit_range is None else f"k in {list(fit_range)}")
            + " (Agrawal et al. 2022)",
        },
    }
