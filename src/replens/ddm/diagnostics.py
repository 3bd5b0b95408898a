"""Evaluation of DDM encoders: per-domain linear probes, prefix/invariant diagnostics and plots (paper chapter 2).

* :func:`per_domain_accuracy`: the linear evaluation protocol of section 2.4.1
  (a linear classifier on frozen representations), one top-1 accuracy per
  training domain and per unseen domain, as the columns of Tables 2.1 to 2.4.
  ``protocol="per_domain"`` fits one probe per domain on that domain's
  training rows; ``protocol="joint"`` fits one probe on the training rows of
  all training domains and scores every domain (unseen ones included).
* :func:`format_domain_table`: the tables' layout, ``baseline / with DDM``.
* :func:`part_probes`: how much domain and class information the prefix h^d,
  the invariant part h^p and the whole h carry (linear probes); DDM should
  move the domain information into h^d and out of h^p.
* :func:`plot_part_tsne`: Figure 2.4, t-SNE of h^d and h^p coloured by domain
  and by class.
* :func:`plot_top_feature_heatmap`: Figure 2.3, the class-averaged,
  L2-normalised representations of each domain, restricted to the most
  activating features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from replens.evaluate import accuracy_report, fit_linear_probe
from replens.models import extract_features, load_embeddings
from replens.plotting import save_figure

if TYPE_CHECKING:
    from replens.data.base import ImageSource
    from replens.models import Embeddings


def stratified_split(labels: np.ndarray, domains: np.ndarray, test_fraction: float = 0.3,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into probe-train / probe-test, stratified by (domain, class).

    Used when a domain has no separate test split (e.g. PACS): each (domain,
    class) group puts ``round(test_fraction * n)`` of its samples (at least one
    when it has two or more) in the test part.

    Returns:
        ``(train_idx, test_idx)``, sorted int64 positions.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels, domains = np.asarray(labels), np.asarray(domains)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for d in np.unique(domains):
        for c in np.unique(labels[domains == d]):
            group = np.flatnonzero((domains == d) & (labels == c))
            group = group[rng.permutation(len(group))]
            n_test = min(len(group) - 1, max(1, round(test_fraction * len(group)))) if len(group) > 1 else 0
            test.append(group[:n_test])
            train.append(group[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def _probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                    weight_decay: float, device: str, max_iter: int = 200) -> float:
    probe = fit_linear_probe(train_x, train_y, weight_decay=weight_decay, max_iter=max_iter, device=device)
    return accuracy_report(probe.predict(test_x), test_y).overall


def per_domain_accuracy(train_features: np.ndarray, train_labels: np.ndarray, train_domains: np.ndarray,
                        test_features: np.ndarray, test_labels: np.ndarray, test_domains: np.ndarray,
                        domain_names: Sequence[str], *, protocol: str = "per_domain",
                        probe_domains: Sequence[int] | None = None, weight_decay: float = 1e-4,
                        max_iter: int = 200, device: str = "cpu") -> dict[str, float]:
    """Linear-probe top-1 (percent) per domain (section 2.4.1; the columns of Tables 2.1-2.4).

    Args:
        train_features, train_labels, train_domains: Probe-training rows.
        test_features, test_labels, test_domains: Probe-test rows.
        domain_names: Name of each domain id.
        protocol: ``"per_domain"`` (a probe per domain on its own training
            rows) or ``"joint"`` (one probe on the training rows of
            ``probe_domains``, scored on every test domain).
        probe_domains: Domain ids whose rows train the joint probe (default: all).
        weight_decay: Probe L2 penalty.
        max_iter: L-BFGS iterations of each probe.
        device: Where probes are fitted.

    Returns:
        ``{domain name: top-1}`` for every domain present in the test rows.
    """
    train_domains, test_domains = np.asarray(train_domains), np.asarray(test_domains)
    result: dict[str, float] = {}
    if protocol == "joint":
        rows = np.ones(len(train_domains), dtype=bool) if probe_domains is None else np.isin(train_domains, probe_domains)
        probe = fit_linear_probe(train_features[rows], np.asarray(train_labels)[rows], weight_decay=weight_decay,
                                 max_iter=max_iter, device=device)
        report = accuracy_report(probe.predict(test_features), test_labels, test_domains, list(domain_names))
        return dict(report.per_domain)
    if protocol != "per_domain":
        raise ValueError(f"unknown probe protocol {protocol!r}; choose 'per_domain' or 'joint'")
    for d in np.unique(test_domains):
        name = domain_names[d]
        tr, te = train_domains == d, test_domains == d
        if not tr.any():
            raise ValueError(f"domain {name!r} has test rows but no probe-training rows")
        result[name] = _probe_accuracy(train_features[tr], np.asarray(train_labels)[tr], test_features[te],
                                       np.asarray(test_labels)[te], weight_decay, device, max_iter)
    return result


def domain_variance_fraction(features: np.ndarray, domains: np.ndarray) -> float:
    """Share of the feature variance explained by the domain: between-domain / total variance.

    ``sum_d (n_d / N) ||mu_d - mu||^2 / mean_i ||x_i - mu||^2``: 1 when each
    domain is a single point, 0 when every domain has the same mean. A graded
    companion of the domain probe, which saturates at 100% as soon as any
    linear trace of the domain is left (e.g. a colour tint).

    Shape:
        features: (N, D); domains: (N,) -> float in [0, 1] (NaN for one domain).
    """
    x, domains = np.asarray(features, dtype=np.float64), np.asarray(domains)
    ids = np.unique(domains)
    if len(ids) < 2:
        return float("nan")
    mu = x.mean(0)
    total = float(((x - mu) ** 2).sum(1).mean())
    between = sum((domains == d).mean() * float(((x[domains == d].mean(0) - mu) ** 2).sum()) for d in ids)
    return between / total if total > 0 else float("nan")


def part_probes(train_features: np.ndarray, train_labels: np.ndarray, train_domains: np.ndarray,
                test_features: np.ndarray, test_labels: np.ndarray, test_domains: np.ndarray, prefix_dim: int,
                *, weight_decay: float = 1e-4, max_iter: int = 200, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Linear-probe top-1 of domain and class from h^d, h^p and h (section 2.4's disentanglement).

    Returns:
        ``{"prefix" | "invariant" | "full": {"domain": top-1, "class": top-1,
        "domain_variance": :func:`domain_variance_fraction` on the probe-test rows}}``
        (the domain numbers are NaN when the rows hold a single domain).
    """
    parts = {"prefix": slice(0, prefix_dim), "invariant": slice(prefix_dim, None), "full": slice(None)}
    several = len(np.unique(train_domains)) > 1 and len(np.unique(test_domains)) > 1
    out: dict[str, dict[str, float]] = {}
    for name, cols in parts.items():
        tr, te = train_features[:, cols], test_features[:, cols]
        out[name] = {
            "class": _probe_accuracy(tr, train_labels, te, test_labels, weight_decay, device, max_iter),
            "domain": (_probe_accuracy(tr, train_domains, te, test_domains, weight_decay, device, max_iter)
                       if several else float("nan")),
            "domain_variance": domain_variance_fraction(te, test_domains),
        }
    return out


def format_domain_table(results: Mapping[str, Mapping[str, float]], train_domains: Sequence[str],
                        unseen_domains: Sequence[str] = (), *, compare: Sequence[tuple[str, str, str]] = (),
                        title: str = "") -> str:
    """Markdown table in the layout of Tables 2.1-2.4.

    Args:
        results: ``{model label: {domain: top-1}}``.
        train_domains: Columns of the training domains, in order.
        unseen_domains: Columns marked ``(Unseen)``.
        compare: Rows ``(row name, baseline label, DDM label)`` written as
            ``baseline / with DDM`` cells, the better one in bold; without it,
            one row per model label.
        title: A caption line above the table.

    Returns:
        The table text (ending with a newline).
    """
    columns = list(train_domains) + list(unseen_domains)
    header = ["Model"] + list(train_domains) + [f"{d} (Unseen)" for d in unseen_domains] + ["Average"]

    def avg(label: str) -> float:
        values = [results[label][d] for d in columns if d in results[label]]
        return float(np.mean(values)) if values else float("nan")

    def cell(a: float, b: float) -> str:
        if not (np.isfinite(a) and np.isfinite(b)):
            return f"{a:.2f} / {b:.2f}"
        return f"**{a:.2f}** / {b:.2f}" if a > b else (f"{a:.2f} / **{b:.2f}**" if b > a else f"{a:.2f} / {b:.2f}")

    lines = [f"{title}\n" if title else "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    nan = float("nan")
    if compare:
        for row, base, ddm in compare:
            cells = [cell(results[base].get(d, nan), results[ddm].get(d, nan)) for d in columns]
            lines.append("| " + " | ".join([row, *cells, cell(avg(base), avg(ddm))]) + " |")
    else:
        for label in results:
            cells = [f"{results[label].get(d, nan):.2f}" for d in columns]
            lines.append("| " + " | ".join([label, *cells, f"{avg(label):.2f}"]) + " |")
    return "\n".join(line for line in lines if line) + "\n"


def top_activating_features(matrix: np.ndarray, z: float = 2.0, max_features: int = 64) -> np.ndarray:
    """Columns strongly deviated from the mean in at least one row (section 2.3, Figure 2.3).

    A column is kept when some entry deviates from the mean of all entries by
    more than ``z`` standard deviations of all entries; at most
    ``max_features`` columns, the most deviated, returned in index order.

    Shape:
        matrix: (R, r) -> (F,) int64 column indices.
    """
    deviation = np.abs(matrix - matrix.mean()) / max(float(matrix.std()), 1e-12)
    score = deviation.max(axis=0)
    keep = np.flatnonzero(score > z)
    if len(keep) > max_features:
        keep = keep[np.argsort(-score[keep], kind="stable")[:max_features]]
    return np.sort(keep).astype(np.int64)


def class_domain_means(features: np.ndarray, labels: np.ndarray, domains: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Mean L2-normalised representation of every (domain, class) pair present.

    Returns:
        ``(means (R, r), rows)`` with ``rows[i] = (domain, class)``, domains major.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rows, means = [], []
    for d in np.unique(domains):
        for c in np.unique(labels[domains == d]):
            rows.append((int(d), int(c)))
            means.append(x[(domains == d) & (labels == c)].mean(0))
    return np.stack(means), rows


def plot_top_feature_heatmap(features: np.ndarray, labels: np.ndarray, domains: np.ndarray, path: str | Path, *,
                             prefix_dim: int | None = None, class_names: Sequence[str] | None = None,
                             domain_names: Sequence[str] | None = None, z: float = 2.0, max_features: int = 64,
                             title: str = "") -> dict[str, object]:
    """Figure 2.3: class-averaged representations per domain over the most activating features.

    Rows are (domain, class) pairs, columns the selected feature indices; a
    line marks the end of the domain prefix when ``prefix_dim`` is given.

    Returns:
        ``{"path", "features" (selected indices), "prefix_selected" (how many are prefix features)}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means, rows = class_domain_means(features, np.asarray(labels), np.asarray(domains))
    cols = top_activating_features(means, z, max_features)
    if len(cols) == 0:
        cols = np.argsort(-np.abs(means).max(0))[: min(max_features, means.shape[1])]
        cols = np.sort(cols)
    data = means[:, cols]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.18 * len(cols) + 2), max(3.0, 0.22 * len(rows) + 1.5)))
    ax.imshow(data, aspect="auto", cmap="Greys", interpolation="nearest")
    dn = (lambda d: domain_names[d]) if domain_names else str
    cn = (lambda c: class_names[c]) if class_names else str
    ax.set_yticks(range(len(rows)), [f"{dn(d)} / {cn(c)}" for d, c in rows], fontsize=6)
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize=5, rotation=90)
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0]:
            ax.axhline(i - 0.5, color="tab:red", lw=1)
    n_prefix = int((cols < prefix_dim).sum()) if prefix_dim else 0
    if prefix_dim and 0 < n_prefix < len(cols):
        ax.axvline(n_prefix - 0.5, color="tab:blue", lw=1.5)
    ax.set_xlabel("feature index (most activating)" + (f"; left of the blue line: prefix (< {prefix_dim})"
                                                       if prefix_dim else ""))
    ax.set_title(title or "class-averaged representations per domain", fontsize=9)
    save_figure(fig, Path(path), tight=False, dpi=120, bbox_inches="tight")
    return {"path": str(path), "features": cols.tolist(), "prefix_selected": n_prefix}


def plot_part_tsne(features: np.ndarray, labels: np.ndarray, domains: np.ndarray, prefix_dim: int,
                   path: str | Path, *, class_names: Sequence[str] | None = None,
                   domain_names: Sequence[str] | None = None, max_points: int = 2000, seed: int = 0,
                   title: str = "") -> dict[str, object]:
    """Figure 2.4: t-SNE (scikit-learn) of the prefix h^d and of the invariant part h^p.

    A 2 x 2 grid: rows h^d and h^p, columns coloured by domain and by class.
    At most ``max_points`` samples (a seeded random subset) are embedded.

    Returns:
        ``{"path", "points"}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    features, labels, domains = np.asarray(features), np.asarray(labels), np.asarray(domains)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(features), min(max_points, len(features)), replace=False))
    x, y, d = features[pick].astype(np.float32), labels[pick], domains[pick]
    perplexity = float(min(30.0, max(2.0, (len(pick) - 1) / 3)))
    fig, axes = plt.subplots(2, 2, figsize=(9, 8.5))
    for row, (part, cols) in enumerate((("prefix h^d", slice(0, prefix_dim)), ("invariant h^p", slice(prefix_dim, None)))):
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x[:, cols])
        for col, (key, values, names) in enumerate((("domain", d, domain_names), ("class", y, class_names))):
            ax = axes[row, col]
            for v in np.unique(values):
                m = values == v
                label = names[v] if names is not None and 0 <= v < len(names) else str(v)
                ax.scatter(emb[m, 0], emb[m, 1], s=4, label=label, alpha=0.7)
            ax.set_title(f"{part}, coloured by {key}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if len(np.unique(values)) <= 12:
                ax.legend(fontsize=6, markerscale=2, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, Path(path), tight=False, dpi=120, bbox_inches="tight")
    return {"path": str(path), "points": int(len(pick))}


def _embed(backbone: object, source: ImageSource, out_dir: Path, device: str, batch_size: int,
           progress: bool) -> Embeddings:
    return load_embeddings(extract_features(backbone, source, out_dir, batch_size=batch_size, device=device,  # type: ignore[arg-type]
                                            progress=progress), mmap=False)


def _map_domains(emb_domains: np.ndarray, source_names: Sequence[str], target_names: Sequence[str],
                 what: str) -> np.ndarray:
    """Re-number domain ids of a source by name into the order of ``target_names``."""
    lookup = {name: i for i, name in enumerate(target_names)}
    missing = sorted({source_names[d] for d in np.unique(emb_domains)} - set(lookup))
    if missing:
        raise ValueError(f"{what} has domain(s) {missing} that the training data ({list(target_names)}) lacks")
    table = np.array([lookup.get(name, -1) for name in source_names], dtype=np.int64)
    return table[np.asarray(emb_domains, dtype=np.int64)]


def _probe_rows(backbone: object, source: ImageSource, test: ImageSource | None, out: Path, tag: str,
                names: list[str], offset: int, *, device: str, batch_size: int, progress: bool,
                test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """``(train x, y, domain, test x, y, domain)`` of one part (domain ids by ``names``, plus ``offset``).

    Without ``test`` the rows of ``source`` are split (:func:`stratified_split`); embeddings go to
    ``out/embeddings-{tag}`` (and ``-test``).
    """
    emb = _embed(backbone, source, out / f"embeddings-{tag}", device, batch_size, progress)
    dom = _map_domains(emb.domains, list(source.domain_names), names, tag) + offset
    if test is None:
        tr, te = stratified_split(emb.labels, dom, test_fraction, seed)
        return (emb.features[tr], emb.labels[tr], dom[tr], emb.features[te], emb.labels[te], dom[te])
    temb = _embed(backbone, test, out / f"embeddings-{tag}-test", device, batch_size, progress)
    tdom = _map_domains(temb.domains, list(test.domain_names), names, f"{tag} test data") + offset
    return emb.features, emb.labels, dom, temb.features, temb.labels, tdom


def _unseen_names(unseen_source: ImageSource, train_names: list[str]) -> list[str]:
    """The unseen source's domain names; raises ``ValueError`` when one is also a training domain."""
    unseen_names = list(unseen_source.domain_names)
    clash = sorted(set(unseen_names) & set(train_names))
    if clash:
        raise ValueError(f"unseen domain(s) {clash} are also training domains")
    return unseen_names


def _evaluation_figures(seen_rows: tuple[np.ndarray, ...], classes: list[str], names: list[str], out: Path, *,
                        prefix_dim: int, max_plot_points: int, seed: int, title: str) -> dict[str, object]:
    """Figures 2.3 and 2.4 (``heatmap.png``, ``tsne.png``) over all rows (probe-train and -test) of the seen domains."""
    x_all = np.concatenate([seen_rows[0], seen_rows[3]])
    y_all = np.concatenate([seen_rows[1], seen_rows[4]])
    d_all = np.concatenate([seen_rows[2], seen_rows[5]])
    return {
        "heatmap": plot_top_feature_heatmap(x_all, y_all, d_all, out / "heatmap.png", prefix_dim=prefix_dim,
                                            class_names=classes, domain_names=names, title=title),
        "tsne": plot_part_tsne(x_all, y_all, d_all, prefix_dim, out / "tsne.png", class_names=classes,
                               domain_names=names, max_points=max_plot_points, seed=seed, title=title),
    }


def _evaluation_summary(per_domain: dict[str, float], train_cols: list[str], unseen_names: list[str],
                        train_names: list[str], te_d: np.ndarray) -> tuple[list[str], float, float]:
    """``(unseen columns, average over the table's columns, overall top-1 of the seen domains' test rows)``."""
    unseen_cols = [n for n in unseen_names if n in per_domain]
    values = [per_domain[c] for c in train_cols + unseen_cols]
    seen_counts = [int((te_d == train_names.index(c)).sum()) for c in train_cols]
    overall = float(np.average([per_domain[c] for c in train_cols], weights=seen_counts)) if train_cols else np.nan
    return unseen_cols, float(np.mean(values)) if values else float("nan"), overall


def evaluate_encoder(backbone: object, train_source: ImageSource, out_dir: str | Path, *, prefix_dim: int,
                     test_source: ImageSource | None = None, unseen_source: ImageSource | None = None,
                     unseen_test_source: ImageSource | None = None, protocol: str = "per_domain",
                     test_fraction: float = 0.3, weight_decay: float = 1e-4, probe_iters: int = 200, seed: int = 0,
                     device: str = "cpu",
                     batch_size: int = 256, plots: bool = True, max_plot_points: int = 2000, title: str = "",
                     progress: bool = True) -> dict[str, object]:
    """Chapter 2's evaluation of one frozen encoder: per-domain probes, h^d / h^p probes, Figures 2.3 and 2.4.

    Args:
        backbone: A ``replens.models`` backbone returning the full representation (prefix first).
        train_source: Samples of the training domains (probe-training rows, and
            probe-test rows too when ``test_source`` is None: a stratified split).
        out_dir: Where embeddings and figures go.
        prefix_dim: k, the size of the domain prefix.
        test_source: Probe-test samples of the training domains (same domain names).
        unseen_source: Samples of domains the encoder never saw (columns marked Unseen).
        unseen_test_source: Probe-test samples of the unseen domains (else a stratified split).
        protocol: ``"per_domain"`` or ``"joint"`` (see :func:`per_domain_accuracy`).
        test_fraction: Probe-test share when a split has to be made.
        weight_decay: Probe L2 penalty.
        probe_iters: L-BFGS iterations of each probe.
        seed: Seed of splits and plots.
        device: Where features are extracted and probes fitted.
        batch_size: Extraction batch size.
        plots: Draw Figures 2.3 and 2.4 (``heatmap.png``, ``tsne.png``).
        max_plot_points: t-SNE sample cap.
        title: Figure title.
        progress: Progress bars.

    Returns:
        ``{"per_domain", "average" (mean over the table's columns),
        "overall_seen" (top-1 over all probe-test rows of the training domains;
        with ``protocol="joint"`` the single number of a plain linear probe),
        "train_domains", "unseen_domains", "parts", "figures", "counts"}``.
    """
    out = Path(out_dir)
    train_names = list(train_source.domain_names)
    opts = {"device": device, "batch_size": batch_size, "progress": progress, "test_fraction": test_fraction,
            "seed": seed}
    seen_rows = _probe_rows(backbone, train_source, test_source, out, "train", train_names, 0, **opts)
    parts_rows = [seen_rows]
    present = sorted(set(np.unique(seen_rows[2]).tolist()) | set(np.unique(seen_rows[5]).tolist()))
    unseen_names: list[str] = []
    if unseen_source is not None:
        unseen_names = _unseen_names(unseen_source, train_names)
        parts_rows.append(_probe_rows(backbone, unseen_source, unseen_test_source, out, "unseen", unseen_names,
                                      len(train_names), **opts))
    names = train_names + unseen_names
    tr_x, tr_y, tr_d, te_x, te_y, te_d = (np.concatenate([r[i] for r in parts_rows]) for i in range(6))
    per_domain = per_domain_accuracy(tr_x, tr_y, tr_d, te_x, te_y, te_d, names, protocol=protocol,
                                     probe_domains=list(range(len(train_names))), weight_decay=weight_decay,
                                     max_iter=probe_iters, device=device)
    train_cols = [train_names[d] for d in present]
    parts = part_probes(*seen_rows, prefix_dim, weight_decay=weight_decay, max_iter=probe_iters, device=device)
    figures = _evaluation_figures(seen_rows, list(train_source.classes), names, out, prefix_dim=prefix_dim,
                                  max_plot_points=max_plot_points, seed=seed, title=title) if plots else {}
    unseen_cols, average, overall = _evaluation_summary(per_domain, train_cols, unseen_names, train_names, te_d)
    return {"per_domain": per_domain, "average": average, "overall_seen": overall,
            "train_domains": train_cols, "unseen_domains": unseen_cols, "parts": parts, "figures": figures,
            "counts": {"probe_train": int(len(tr_y)), "probe_test": int(len(te_y))}}
