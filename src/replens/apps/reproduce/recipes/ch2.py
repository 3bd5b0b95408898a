"""Chapter 2 (DDM): Tables 2.1-2.4 and Figures 2.2-2.5 as recipes over ``train --ddm`` and ``replens.ddm``.

Small budget: SimCLR with ``small_cnn`` on the embedded world, whose render
domains stand in for the paper's benchmarks (photo/sketch/cartoon/painting for
PACS; the tints for Colored-CIFAR). Paper budget: the paper's section 2.4.1
(ViT-S, 384-d representation with a 24-d domain prefix, DDM critic Adam at
0.005 with cosine annealing, lambda = 0.5, each method optimised as in its
own paper) and all six methods.

Figure 2.1 (the DDM framework diagram) is an illustration and has no recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from replens.apps.reproduce.helpers import (
    METHOD_NAMES,
    RANDOM_INIT,
    DomainData,
    column_name,
    data_kind,
    evaluate_domains,
    labelled_splits,
    last_metric,
    methods,
    multi_domain_data,
    pair_cell,
    prefix_dim_of,
    pyplot,
    random_init_backbone,
    save_figure,
)
from replens.apps.reproduce.registry import COLOUR_VIEWS, RecipeContext, RecipeResult, recipe
from replens.apps.reproduce.verdict import Claim, cell, row_of
from replens.ddm import RobustClustering, clustering_purity
from replens.ddm.colored import TintedSource
from replens.ddm.diagnostics import plot_top_feature_heatmap
from replens.models import extract_features, load_embeddings

SIX_METHODS = ("simclr", "moco", "byol", "dino", "simsiam", "barlow_twins")

#: Section 2.4.1's DDM settings (24-d prefix of the 384-d ViT-S representation, critic Adam 0.005, lambda 0.5).
PAPER_DDM: dict[str, Any] = {"prefix_dim": 24, "critic_lr": 0.005, "ssl_weight": 0.5}

#: Section 2.4.1: ViT-S/16 at 224 px for every method, "the same optimization and scheduling for the
#: encoder as the respective papers" (SimCLR: LARS 0.3, wd 1e-6; MoCo v2: SGD 0.03, wd 1e-4; BYOL and
#: Barlow Twins: LARS 0.2, wd 1.5e-6; DINO: AdamW 5e-4, wd 0.04; SimSiam: SGD 0.05, wd 1e-4; batch 256).
#: The paper gives no epoch count for chapter 2: 200 epochs.
PAPER_CH2: dict[str, dict[str, Any]] = {
    m: {"backbone": "vit_s16", "image_size": 224, "batch_size": 256, "epochs": 200, "method": m, **opt}
    for m, opt in {
        "simclr": {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "warmup_epochs": 10},
        "moco": {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4, "warmup_epochs": 0},
        "byol": {"optimizer": "lars", "lr": 0.2, "weight_decay": 1.5e-6, "warmup_epochs": 10},
        "dino": {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.04, "warmup_epochs": 10},
        "simsiam": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4, "warmup_epochs": 0},
        "barlow_twins": {"optimizer": "lars", "lr": 0.2, "weight_decay": 1.5e-6, "warmup_epochs": 10},
    }.items()
}

_NEEDS = "world (default) or --data pacs; {n} SSL trainings per method (with and without DDM); ~{t} min CPU (small)"


def train_config(ctx: RecipeContext, method: str, *, ddm: dict[str, Any] | None = None, colour: bool = False,
                 **extra: Any) -> dict[str, Any]:
    """TrainConfig fields of one chapter-2 run: budget defaults, the method, DDM plug-in when ``ddm`` is given.

    ``colour``: the run's domains differ by colour (the world's tints), so a small-budget world run keeps the
    method's own colour jitter (:data:`~replens.apps.reproduce.registry.COLOUR_VIEWS`) instead of the world
    preset's full hue turn and grayscale, which would erase those domains.
    """
    cfg: dict[str, Any] = dict(ctx.pick({"method": method}, PAPER_CH2[method]))
    if colour and ctx.budget == "small" and ctx.data is None:
        cfg["view_args"] = dict(COLOUR_VIEWS)
    if ddm is not None:
        cfg["plugins"] = ["ddm"]
        cfg["plugin_args"] = {"ddm": {**ctx.pick({}, PAPER_DDM), **ddm}}
    return {**cfg, **extra}


def _baseline_and_ddm(ctx: RecipeContext, method: str, data: DomainData, ddm: dict[str, Any],
                      protocol: str = "per_domain", plots: bool = False, colour: bool = False,
                      ) -> dict[str, dict[str, Any]]:
    out = {}
    for tag, ddm_args in (("baseline", None), ("ddm", ddm)):
        summary = ctx.train(f"{method}-{tag}", source=data.train,
                            **train_config(ctx, method, ddm=ddm_args, colour=colour))
        out[tag] = evaluate_domains(ctx, summary["backbone"], data, f"{method}-{tag}/eval", protocol=protocol,
                                    plots=plots, title=f"{METHOD_NAMES[method]} {tag}")
        out[tag]["run"] = str(ctx.out / f"{method}-{tag}")
    return out


def ddm_claim(text: str, column: str = "average", model: str = "SimCLR") -> Claim:
    """The paper's claim that DDM raises ``model``'s number in ``column`` (the ``baseline / with DDM`` cell)."""
    return Claim(text, pairs=lambda rows: (cell(rows, column, 0, model=model), cell(rows, column, 1, model=model)),
                 quantity=f"linear top-1 % ({column})")


def random_init_row(ctx: RecipeContext, data: DomainData, method: str, protocol: str = "per_domain",
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The random-init control row of a DDM table: the untrained encoder of ``method``'s architecture, probed
    like the trained ones (one number per column, no DDM), and its raw result."""
    res = evaluate_domains(ctx, random_init_backbone(ctx, **train_config(ctx, method)), data, "random-init/eval",
                           protocol=protocol)
    row: dict[str, Any] = {"model": RANDOM_INIT}
    row.update({column_name(c, False): res["per_domain"][c] for c in res["train_domains"]})
    row.update({column_name(c, True): res["per_domain"][c] for c in res["unseen_domains"]})
    row["average"] = res["average"]
    return row, res


def _ddm_table(ctx: RecipeContext, train_domains: Sequence[str], unseen_domains: Sequence[str],
               ddm: dict[str, Any], *, protocol: str = "per_domain", colour: bool = False,
               **world_overrides: Any) -> tuple[list, dict]:
    """Rows ``{model, <domain>..., average}`` of ``baseline / with DDM`` cells (and the random-init control
    row), and the raw results (``colour``: see :func:`train_config`)."""
    data = multi_domain_data(ctx, train_domains, unseen_domains, **world_overrides)
    rows, raw = [], {}
    chosen = methods(ctx, ["simclr"], SIX_METHODS)
    for method in chosen:
        res = _baseline_and_ddm(ctx, method, data, ddm, protocol, colour=colour)
        base, with_ddm = res["baseline"], res["ddm"]
        row: dict[str, Any] = {"model": METHOD_NAMES[method]}
        for col in base["train_domains"]:
            row[column_name(col, False)] = pair_cell(base["per_domain"][col], with_ddm["per_domain"][col])
        for col in base["unseen_domains"]:
            row[column_name(col, True)] = pair_cell(base["per_domain"][col], with_ddm["per_domain"][col])
        row["average"] = pair_cell(base["average"], with_ddm["average"])
        rows.append(row)
        raw[method] = {tag: {k: r[k] for k in ("per_domain", "average", "overall_seen", "parts", "counts")}
                       for tag, r in res.items()}
    control, res = random_init_row(ctx, data, chosen[0], protocol)
    rows.append(control)
    raw["random-init"] = {k: res[k] for k in ("per_domain", "average", "overall_seen", "counts")}
    return rows, {"results": raw, "probe": f"linear probe, {protocol} protocol (replens.ddm.diagnostics)",
                  "data_split": data.label, "random_init": f"untrained {chosen[0]} architecture, seed = the run's"}


@recipe("table-2.1", title="SSL baselines trained on PACS (photo, sketch, cartoon) with DDM; painting unseen",
        section="2.4.2", kind="table", needs=_NEEDS.format(n="2", t="2"),
        claim=ddm_claim("DDM raises SimCLR's average per-domain linear top-1, seen and unseen domains (Table 2.1)"))
def table_2_1(ctx: RecipeContext) -> RecipeResult:
    """Table 2.1: per-domain linear probes, baseline / with DDM; world domains stand in for PACS's."""
    rows, proto = _ddm_table(ctx, ["photo", "sketch", "cartoon"], ["painting"], {})
    return RecipeResult(rows=rows, protocol=proto, notes=(
        "cells are 'baseline / with DDM' top-1 %, a linear probe per domain on frozen features; "
        + ("the world's photo/sketch/cartoon/painting renderings stand in for PACS" if data_kind(ctx) == "world"
           else "PACS has no test split: 30% of each domain and class is held out for the probe")))


@recipe("table-2.2", title="SSL baselines trained on DomainNet (painting, real, sketch) with DDM; 3 unseen domains",
        section="2.4.2", kind="table", needs="world only; 2 SSL trainings per method; ~2 min CPU (small)",
        claim=ddm_claim("DDM raises SimCLR's average per-domain linear top-1 over 3 seen and 3 unseen domains "
                        "(Table 2.2)"))
def table_2_2(ctx: RecipeContext) -> RecipeResult:
    """Table 2.2 on the world: painting/photo/sketch seen (DomainNet painting/real/sketch), three unseen."""
    if ctx.data is not None:
        raise ValueError("table-2.2 runs on the embedded world only (DomainNet is not in ../shared/data)")
    rows, proto = _ddm_table(ctx, ["painting", "photo", "sketch"], ["cartoon", "tint_red", "tint_green"], {})
    return RecipeResult(rows=rows, protocol=proto, notes=(
        "world stand-ins: painting/photo/sketch for DomainNet painting/real/sketch; cartoon, tint_red, tint_green "
        "for the unseen clipart/infograph/quickdraw"))


@recipe("table-2.3", title="SSL baselines trained on WILDS with DDM (accuracy on unseen validation domains)",
        section="2.4.2", kind="table", needs="world only; 2 SSL trainings per method; ~2 min CPU (small)",
        claim=ddm_claim("DDM raises SimCLR's linear top-1 on the unseen validation domains (Table 2.3)",
                        "world-shift (unseen val)"))
def table_2_3(ctx: RecipeContext) -> RecipeResult:
    """Table 2.3 on the world: a WILDS-like shift (a spurious cue in training, unseen domains at test)."""
    if ctx.data is not None:
        raise ValueError("table-2.3 runs on the embedded world only (WILDS is not in ../shared/data)")
    spurious = 0.8
    data = multi_domain_data(ctx, ["photo", "cartoon"], ["sketch", "painting"], spurious=spurious)
    rows, raw = [], {}
    chosen = methods(ctx, ["simclr"], SIX_METHODS)
    for method in chosen:
        res = _baseline_and_ddm(ctx, method, data, {}, protocol="joint")
        cells = {}
        for tag, r in res.items():
            unseen = [r["per_domain"][d] for d in r["unseen_domains"]]
            cells[tag] = (float(np.mean(unseen)), r["overall_seen"])
        rows.append({"model": METHOD_NAMES[method],
                     "world-shift (unseen val)": pair_cell(cells["baseline"][0], cells["ddm"][0]),
                     "world-shift (seen test)": pair_cell(cells["baseline"][1], cells["ddm"][1])})
        raw[method] = {tag: {k: r[k] for k in ("per_domain", "overall_seen", "counts")} for tag, r in res.items()}
    _, control = random_init_row(ctx, data, chosen[0], "joint")
    rows.append({"model": RANDOM_INIT,
                 "world-shift (unseen val)": float(np.mean([control["per_domain"][d]
                                                            for d in control["unseen_domains"]])),
                 "world-shift (seen test)": control["overall_seen"]})
    raw["random-init"] = {k: control[k] for k in ("per_domain", "overall_seen", "counts")}
    return RecipeResult(rows=rows, protocol={"results": raw, "spurious": spurious, "probe": "one linear probe on the "
                                             "training domains (joint protocol), scored on every domain",
                                             "random_init": f"untrained {chosen[0]} architecture"},
                        notes=("one WILDS-like benchmark instead of four: training domains photo+cartoon with a "
                               f"spurious marker tied to the class in {spurious:.0%} of training scenes; validation "
                               "on unseen sketch+painting with the cue independent of the class"))


@recipe("table-2.4", title="SSL baselines on a mixture of similar domains with DDM and robust clustering (no domain labels)",
        section="2.5", kind="table", needs="world only; 2 SSL trainings per method; ~2 min CPU (small)",
        claim=ddm_claim("DDM with robust clustering (no domain labels) raises SimCLR's average linear top-1 "
                        "(Table 2.4)"))
def table_2_4(ctx: RecipeContext) -> RecipeResult:
    """Table 2.4 on the world: photo/tint_red/tint_green mixed without domain labels; painting unseen."""
    if ctx.data is not None:
        raise ValueError("table-2.4 runs on the embedded world only (STL-10, CIFAR-100 and Tiny-ImageNet are not "
                         "in ../shared/data)")
    rows, proto = _ddm_table(ctx, ["photo", "tint_red", "tint_green"], ["painting"], {"num_pseudo_domains": 3},
                             colour=True)
    return RecipeResult(rows=rows, protocol={**proto, "pseudo_domains": 3}, notes=(
        "DDM never sees domain labels: 3 pseudo-domains by robust clustering (section 2.5); the photo and tinted "
        "renderings of the same scenes stand in for CIFAR-10/STL-10/CIFAR-100 (similar domains, shared classes), "
        "painting for the unseen Tiny-ImageNet"))


def unseen_cell(rows: list[dict[str, Any]], **match: Any) -> float:
    """The number in the unseen-domain column of the row matching ``match``: the world's "painting (unseen)",
    PACS's "art_painting (unseen)" (one unseen domain per run).

    Raises:
        KeyError: No row matches, or it has no unseen-domain column (the claim then has no result).
    """
    row = row_of(rows, **match)
    unseen = [c for c in row if c.endswith(" (unseen)")]
    if len(unseen) != 1:
        raise KeyError(f"expected one unseen-domain column, got {unseen}")
    return float(row[unseen[0]])


@recipe("fig-2.2", title="SSL baselines under single- and multi-domain training; generalisation to an unseen domain",
        section="2.1", kind="figure", needs=_NEEDS.format(n="5", t="3"),
        claim=Claim("Trained on the mixture, SimCLR + DDM generalises better to the unseen domain than SimCLR "
                    "(Figure 2.2)",
                    pairs=lambda rows: (unseen_cell(rows, method="SimCLR", training="photo+sketch+cartoon"),
                                        unseen_cell(rows, method="SimCLR", training="photo+sketch+cartoon + DDM")),
                    quantity="linear top-1 % on the unseen domain"))
def fig_2_2(ctx: RecipeContext) -> RecipeResult:
    """Figure 2.2: each method trained on each single domain, on their mixture, and on the mixture with DDM.

    Every encoder is probed (a linear probe per domain) on the three training
    domains and the unseen one.
    """
    seen, unseen = ["photo", "sketch", "cartoon"], ["painting"]
    mixture = multi_domain_data(ctx, seen, unseen)
    rows, raw = [], {}
    chosen = methods(ctx, ["simclr"], ["simclr", "byol", "moco"])
    setups: list[tuple[str, list[str], bool]] = [(d, [d], False) for d in seen]
    setups += [("+".join(seen), seen, False), ("+".join(seen) + " + DDM", seen, True)]
    for method in chosen:
        for label, domains, with_ddm in setups:
            train_src = mixture.train if len(domains) > 1 else multi_domain_data(ctx, domains).train
            name = f"{method}-{label.replace(' + ', '-').replace('+', '-').lower()}"
            summary = ctx.train(name, source=train_src, **train_config(ctx, method, ddm={} if with_ddm else None))
            res = evaluate_domains(ctx, summary["backbone"], mixture, f"{name}/eval")
            row = {"method": METHOD_NAMES[method], "training": label}
            row.update({column_name(d, d in res["unseen_domains"]): res["per_domain"][d]
                        for d in res["train_domains"] + res["unseen_domains"]})
            rows.append(row)
            raw.setdefault(method, {})[label] = res["per_domain"]
    plt = pyplot()
    cols = [c for c in rows[0] if c not in ("method", "training")]
    fig, axes = plt.subplots(1, len(chosen), figsize=(5.5 * len(chosen), 3.8), squeeze=False)
    for ax, method in zip(axes[0], chosen, strict=True):
        mine = [r for r in rows if r["method"] == METHOD_NAMES[method]]
        width = 0.8 / len(mine)
        for i, r in enumerate(mine):
            ax.bar(np.arange(len(cols)) + i * width, [r[c] for c in cols], width, label=r["training"])
        ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2, cols, fontsize=8)
        ax.set_ylabel("linear probe top-1 (%)")
        ax.set_title(METHOD_NAMES[method])
        ax.legend(fontsize=6, title="trained on", title_fontsize=7)
    fig.suptitle("Single- vs multi-domain SSL training and generalisation to an unseen domain", fontsize=10)
    fig.tight_layout()
    return RecipeResult(rows=rows, figures=[save_figure(fig, ctx.out / "fig-2.2.png")],
                        protocol={"results": raw, "probe": "linear probe per test domain (replens.ddm.diagnostics)",
                                  "data_split": mixture.label})


def _colored(ctx: RecipeContext) -> tuple[Any, Any, Any, Any]:
    """(plain train, plain test, coloured train, coloured test): the world's photo vs its red/green tints, or CIFAR-10."""
    kind = data_kind(ctx)
    if kind == "world":
        plain = multi_domain_data(ctx, ["photo"])
        tinted = multi_domain_data(ctx, ["tint_red", "tint_green"])
        return plain.train, plain.test, tinted.train, tinted.test
    if kind == "cifar10":
        train, test = labelled_splits(ctx, train_limit=3000, test_limit=1000)
        return train, test, TintedSource(train, seed=ctx.seed), TintedSource(test, seed=ctx.seed + 1)
    raise ValueError(f"this recipe runs on the world (default) or --data cifar10 (Colored-CIFAR), got {ctx.data!r}")


def _colored_runs(ctx: RecipeContext, plots: bool, splits: tuple[Any, Any, Any, Any]) -> dict[str, dict[str, Any]]:
    """SimCLR (and SimCLR + DDM) on the Colored ``splits`` (:func:`_colored`), evaluated jointly."""
    plain_tr, plain_te, col_tr, col_te = splits
    out: dict[str, dict[str, Any]] = {}
    for name, (tr, te), ddm in (("plain", (plain_tr, plain_te), None), ("colored", (col_tr, col_te), None),
                                ("colored-ddm", (col_tr, col_te), {})):
        if name == "plain" and not plots:
            continue
        summary = ctx.train(name, source=tr, **train_config(ctx, "simclr", ddm=ddm, colour=True))
        data = DomainData(tr, te, None, None, name)
        title = {"plain": "SimCLR, one domain", "colored": "SimCLR, coloured", "colored-ddm": "SimCLR + DDM, coloured"}
        k = prefix_dim_of(summary["backbone"])
        out[name] = evaluate_domains(ctx, summary["backbone"], data, f"{name}/eval", protocol="joint", plots=plots,
                                     title=title[name], prefix_dim=k)
        if not plots:  # Figure 2.3 only: the heatmap without the t-SNE

            embs = [load_embeddings(ctx.out / name / "eval" / f"embeddings-{part}", mmap=False)
                    for part in ("train", "train-test")]
            x, y = np.concatenate([e.features for e in embs]), np.concatenate([e.labels for e in embs])
            d = np.concatenate([e.domains for e in embs])
            out[name]["figures"] = {"heatmap": plot_top_feature_heatmap(
                x, y, d, ctx.out / name / "eval" / "heatmap.png", prefix_dim=k, class_names=list(tr.classes),
                domain_names=list(tr.domain_names), title=title[name])}
    return out


@recipe("fig-2.3", title="Class-averaged representations per domain on Colored data: SimCLR vs SimCLR + DDM",
        section="2.3", kind="figure", needs="world (default) or --data cifar10; 2 SimCLR trainings; ~2 min CPU (small)",
        claim=Claim("DDM makes the invariant part h^p of Colored representations domain-invariant: a smaller "
                    "share of its variance lies between colour domains (Figure 2.3)",
                    pairs=lambda rows: (cell(rows, "domain variance share of h^p", model="SimCLR"),
                                        cell(rows, "domain variance share of h^p", model="SimCLR + DDM")),
                    direction=-1, quantity="between-domain share of the variance of h^p"))
def fig_2_3(ctx: RecipeContext) -> RecipeResult:
    """Figure 2.3: heatmaps of the most activating features of class averages in each colour domain."""
    runs = _colored_runs(ctx, plots=False, splits=_colored(ctx))
    rows, figures = [], []
    for name, label in (("colored", "SimCLR"), ("colored-ddm", "SimCLR + DDM")):
        r = runs[name]
        heat = r["figures"]["heatmap"]
        rows.append({"model": label, "linear top-1": r["overall_seen"],
                     "top features in prefix": heat["prefix_selected"], "top features": len(heat["features"]),
                     "domain variance share of h^p": r["parts"]["invariant"]["domain_variance"],
                     "domain variance share of h": r["parts"]["full"]["domain_variance"]})
        figures.append(f"{name}/eval/heatmap.png")
    return RecipeResult(rows=rows, figures=figures, protocol={"probe": "one linear probe on both colour domains"},
                        notes="domain variance share: between-domain / total variance of the features (0: the "
                              "colour leaves no trace); the DDM prefix is the first r/16 features")


@recipe("fig-2.4", title="t-SNE of SimCLR representations before and after DDM (plain, Colored, Colored + DDM)",
        section="2.3", kind="figure", needs="world (default) or --data cifar10; 3 SimCLR trainings; ~2 min CPU (small)",
        claim=Claim("DDM raises SimCLR's linear top-1 on Colored data (section 2.3: 78.52 -> 87.06)",
                    pairs=lambda rows: (cell(rows, "linear top-1", model="SimCLR, Colored"),
                                        cell(rows, "linear top-1", model="SimCLR + DDM, Colored")),
                    quantity="linear top-1 %"))
def fig_2_4(ctx: RecipeContext) -> RecipeResult:
    """Figure 2.4 with the accuracies the paper quotes in section 2.3 (90.18, 78.52, 87.06)."""
    splits = _colored(ctx)
    runs = _colored_runs(ctx, plots=True, splits=splits)
    labels = {"plain": "SimCLR, one domain (no colours)", "colored": "SimCLR, Colored",
              "colored-ddm": "SimCLR + DDM, Colored"}
    rows = [{"model": labels[k], "linear top-1": r["overall_seen"],
             "domain from h^d": r["parts"]["prefix"]["domain"], "class from h^p": r["parts"]["invariant"]["class"]}
            for k, r in runs.items()]
    _, _, col_tr, col_te = splits
    _, control = random_init_row(ctx, DomainData(col_tr, col_te, None, None, "colored"), "simclr", "joint")
    rows.append({"model": f"{RANDOM_INIT}, Colored", "linear top-1": control["overall_seen"],
                 "domain from h^d": "", "class from h^p": ""})
    return RecipeResult(rows=rows, figures=[f"{k}/eval/tsne.png" for k in runs],
                        protocol={"probe": "one linear probe on all domains; t-SNE of h^d (first r/16 features) and h^p",
                                  "random_init": "untrained SimCLR architecture on the Colored data, seed = the run's"})


@recipe("fig-2.5", title="DDM with regular vs robust clustering when domain labels are unknown (cartoon + sketch)",
        section="2.5", kind="figure", needs="world (default) or --data pacs; 2 SimCLR + DDM trainings; ~2 min CPU (small)",
        claim=Claim("Robust clustering separates the domains better than regular clustering: the domain prefix h^d "
                    "predicts the domain better (Figure 2.5)",
                    pairs=lambda rows: (cell(rows, "domain from h^d", clustering="regular"),
                                        cell(rows, "domain from h^d", clustering="robust")),
                    quantity="linear top-1 % of the domain from h^d"))
def fig_2_5(ctx: RecipeContext) -> RecipeResult:
    """Figure 2.5: t-SNE of SimCLR + DDM trained on two domains with 2 pseudo-domains.

    Regular clustering is K-Means with every sample assigned (outlier
    threshold epsilon = 0); robust clustering starts at epsilon = 1 and decays
    it (Eq. 2.2). Purity is the clustering's agreement with the true domains.
    """
    data = multi_domain_data(ctx, ["cartoon", "sketch"])
    rows, figures = [], []
    for name, eps in (("regular", 0.0), ("robust", 1.0)):
        summary = ctx.train(f"ddm-{name}", source=data.train,
                            **train_config(ctx, "simclr", ddm={"num_pseudo_domains": 2, "epsilon_start": eps}))
        backbone = summary["backbone"]
        res = evaluate_domains(ctx, backbone, data, f"ddm-{name}/eval", protocol="joint", plots=True,
                               title=f"SimCLR + DDM, {name} clustering")
        emb = load_embeddings(extract_features(backbone, data.train, ctx.out / f"ddm-{name}/train-features",
                                               device=ctx.device, progress=ctx.progress, overwrite=True), mmap=False)
        final = RobustClustering(2, epsilon_start=eps, seed=ctx.seed).fit(emb.features)
        during = last_metric(ctx.out / f"ddm-{name}", "ddm/purity")
        rows.append({"clustering": name, "epsilon start": eps,
                     "purity during training": None if during is None else 100.0 * during,
                     "purity of a final clustering": 100.0 * clustering_purity(final, emb.domains),
                     "outliers in final clustering": float((np.asarray(final) < 0).mean() * 100),
                     "domain from h^d": res["parts"]["prefix"]["domain"],
                     "linear top-1": res["overall_seen"]})
        figures.append(f"ddm-{name}/eval/tsne.png")
    return RecipeResult(rows=rows, figures=figures, protocol={"pseudo_domains": 2, "data_split": data.label},
                        notes="purity in %, of the pseudo-domain labels against the true domains (outliers excluded)")
