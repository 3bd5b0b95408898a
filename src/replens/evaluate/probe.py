"""Linear probe and kNN evaluation of frozen representations.

The protocol is fixed so numbers are comparable across runs:

* **Linear probe** (the linear evaluation protocol of the paper's sections
  2.4.1 and 3.4.1): features are standardised with the training set's mean and
  standard deviation; a multinomial logistic regression ``W h + b`` is fitted
  by full-batch L-BFGS (strong Wolfe line search) on the mean cross-entropy
  plus ``weight_decay / 2 * ||W||^2`` (bias not decayed), at most
  ``max_iter`` iterations, in float64 for determinism. This is the same
  objective as scikit-learn's ``LogisticRegression(C=1 / (weight_decay * N))``;
  we solve it in torch so it runs on the GPU and on millions of samples.
* **kNN** (Wu et al. 2018, as used by DINO and solo-learn): cosine similarity
  between L2-normalised features, the ``k`` nearest training samples vote with
  weight ``exp(sim / temperature)``; defaults k = 20, temperature = 0.07.

Accuracies are reported overall, per class and per domain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


def _tensor(array: np.ndarray | torch.Tensor, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """A tensor copy of ``array`` (read-only memory maps included) on ``device``."""
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=dtype)
    return torch.from_numpy(np.array(array, dtype=torch.empty(0, dtype=dtype).numpy().dtype)).to(device)


@dataclass
class LinearProbe:
    """A fitted linear classifier on standardised features.

    Attributes:
        mean: (D,) training feature mean.
        std: (D,) training feature std (clamped away from zero).
        weight: (C, D) weights.
        bias: (C,) biases.
        classes: Class ids in column order of the logits.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    classes: np.ndarray

    def logits(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Class scores (N, C) for raw features (N, D)."""
        x = _tensor(features, torch.float64, self.weight.device)
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted class ids (N,)."""
        idx = self.logits(features).argmax(dim=1).cpu().numpy()
        return self.classes[idx]


def _check_features(features: np.ndarray, labels: np.ndarray, what: str) -> None:
    if features.ndim != 2:
        raise ValueError(f"{what}: features must be (N, D), got shape {features.shape}")
    if len(features) != len(labels):
        raise ValueError(f"{what}: {len(features)} features but {len(labels)} labels")
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad):
        raise ValueError(f"{what}: non-finite features in rows {bad[:10].tolist()}")


@contextlib.contextmanager
def _small_problem_threads(x: torch.Tensor, limit: int = 4_000_000) -> Iterator[None]:
    """Solve small CPU problems on one thread.

    L-BFGS on a (N, D) design runs hundreds of tiny matmuls; with intra-op
    threads each one pays a fork/join, and on a busy machine the spinning
    threads make it 5-10x slower than one thread (measured: 240 x 256 probe,
    1.1 s on 1 thread vs 7.3 s on 2 threads of a loaded 2-core machine).
    Large problems keep torch's thread count.
    """
    if x.device.type != "cpu" or x.numel() > limit or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Fit the multinomial logistic-regression probe of the fixed protocol.

    Args:
        features: (N, D) training representations.
        labels: (N,) integer class ids (samples with label < 0 are ignored).
        weight_decay: L2 penalty on the weights (``C = 1 / (weight_decay N)``).
        max_iter: L-BFGS iterations.
        device: Where to solve.

    Returns:
        The fitted probe.
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    _check_features(features, labels, "linear probe training set")
    keep = labels >= 0
    features, labels = features[keep], labels[keep]
    classes, targets = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("linear probe needs at least two classes in the training set")
    x = _tensor(features, torch.float64, device)
    y = torch.as_tensor(targets, dtype=torch.long, device=device)
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-8)
    x = (x - mean) / std
    weight = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, device=device, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, device=device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with _small_problem_threads(x):
        opt.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach(), classes)


def knn_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Weighted kNN vote on cosine similarity (Wu et al. 2018).

    Args:
        train_features: (N, D) bank.
        train_labels: (N,) class ids >= 0.
        test_features: (M, D) queries.
        k: Neighbours (clipped to N).
        temperature: Vote weight ``exp(sim / temperature)``; ``0`` means
            uniform weights (plain majority vote).
        batch_size: Queries per matmul, bounding memory to batch_size x N.
        device: Where to compute.

    Returns:
        (M,) predicted class ids.
    """
    train_labels = np.asarray(train_labels)
    classes, targets = np.unique(train_labels, return_inverse=True)
    bank = F.normalize(_tensor(train_features, torch.float32, device), dim=1)
    y = torch.as_tensor(targets, device=device)
    k = min(k, len(bank))
    out = []
    for start in range(0, len(test_features), batch_size):
        q = _tensor(test_features[start : start + batch_size], torch.float32, device)
        sim = F.normalize(q, dim=1) @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = torch.ones_like(top_sim) if temperature == 0 else (top_sim / temperature).exp()
        votes = torch.zeros(len(q), len(classes), device=device)
        votes.scatter_add_(1, y[top_idx], weights)
        out.append(votes.argmax(1).cpu())
    if not out:
        return np.empty(0, dtype=train_labels.dtype)
    return classes[torch.cat(out).numpy()]


@dataclass
class Accuracy:
    """Top-1 accuracy (percent) overall, per domain and per class."""

    overall: float
    count: int
    per_domain: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "top1": self.overall,
            "count": self.count,
            "per_domain": self.per_domain,
            "per_class": self.per_class,
        }


def accuracy_report(
    predictions: np.ndarray,
    labels: np.ndarray,
    domains: np.ndarray | None = None,
    domain_names: list[str] | None = None,
    class_names: list[str] | None = None,
) -> Accuracy:
    """Top-1 accuracy in percent, overall and split by domain and class."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    correct = predictions == labels
    report = Accuracy(float(100.0 * correct.mean()) if len(correct) else float("nan"), len(correct))
    if domains is not None:
        domains = np.asarray(domains)
        for d in np.unique(domains):
            name = domain_names[d] if domain_names and 0 <= d < len(domain_names) else str(d)
            report.per_domain[name] = float(100.0 * correct[domains == d].mean())
    for c in np.unique(labels):
        name = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
        report.per_class[name] = float(100.0 * correct[labels == c].mean())
    return report


def evaluate_representations(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    test_domains: np.ndarray | None = None,
    domain_names: list[str] | None = None,
    class_names: list[str] | None = None,
    weight_decay: float = 1e-4,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    device: str | torch.device = "cpu",
) -> dict[str, object]:
    """Run both probes of the fixed protocol and report accuracies.

    Returns:
        ``{"linear": Accuracy.as_dict(), "knn": Accuracy.as_dict(), "protocol": {...}}``

    Raises:
        ValueError: The splits differ in feature size, or the test split has
            labelled classes the training split lacks (a probe cannot predict them).
    """
    _check_features(np.asarray(test_features), np.asarray(test_labels), "probe test set")
    train_dim, test_dim = np.shape(train_features)[1:], np.shape(test_features)[1:]
    if train_dim != test_dim:
        raise ValueError(f"the probe's training features have shape (N, {train_dim}) and its test features "
                         f"(N, {test_dim}): embed both splits with the same model and layer")
    unseen = sorted(set(np.asarray(test_labels)[np.asarray(test_labels) >= 0].tolist())
                    - set(np.asarray(train_labels).tolist()))
    if unseen:
        names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in unseen[:5]]
        raise ValueError(f"the probe's test split has {len(unseen)} class(es) its training split lacks "
                         f"({', '.join(names)}): compare splits of one dataset")
    probe = fit_linear_probe(train_features, train_labels, weight_decay=weight_decay, device=device)
    linear = accuracy_report(probe.predict(test_features), test_labels, test_domains, domain_names, class_names)
    knn = knn_predict(train_features, train_labels, test_features, k=knn_k, temperature=knn_temperature, device=device)
    knn_acc = accuracy_report(knn, test_labels, test_domains, domain_names, class_names)
    return {
        "linear": linear.as_dict(),
        "knn": knn_acc.as_dict(),
        "protocol": {
            "linear": f"standardised features, multinomial logistic regression, L-BFGS, weight_decay={weight_decay}",
            "knn": f"cosine, k={knn_k}, temperature={knn_temperature}",
            "train_count": int(len(train_labels)),
            "test_count": int(len(test_labels)),
        },
    }
