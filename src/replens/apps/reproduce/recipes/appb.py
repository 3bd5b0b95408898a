"""Appendix B (supplement of the FALCON chapter): concepts across models, highly activating features, group
sizes, relevance of concepts, generalisation to unseen data and early-layer features.

FALCON runs as in ``ch4.py`` on the encoders of the shared setting; the
supervised reference encoder is ``ch3.supervised``. Human judgements of the
paper (Figures B.4, B.6) are replaced by the world's true concepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from replens.apps.reproduce.recipes.appa import TRANSFER_WORLDS, transfer_spec
from replens.apps.reproduce.recipes.ch3 import Encoder, baseline, display, supervised
from replens.apps.reproduce.recipes.ch4 import (
    PROBE_SPLIT,
    explain,
    falcon_settings,
    judged_words,
    probe_source,
    world_size,
)
from replens.apps.reproduce.registry import RecipeContext, RecipeResult, recipe
from replens.explain import compute_representations, ground_truth_terms, normalize_rows, source_concepts
from replens.explain.layers import LayerRepresentation
from replens.explain.stats import (
    concept_statistics,
    group_size_distribution,
    highly_activating_feature_share,
    plot_group_sizes,
    plot_shared_concepts,
    shared_concepts,
    unshared_concepts,
)
from replens.explain.transfer import carry_rate
from replens.quality.plots import plot_cam_grid, plot_grouped_bars
from replens.world.vocab import COLOURS, MARKERS, SHAPES, TEXTURES

#: Models of Table B.1 (ResNet-50 in the paper) and the subset run at the small budget.
PAPER_MODELS: tuple[str, ...] = ("simsiam", "simclr", "moco", "swav", "byol", "supervised")
SMALL_MODELS: tuple[str, ...] = ("simclr", "moco", "supervised")


def model_encoder(ctx: RecipeContext, name: str) -> Encoder:
    """The encoder of a Table B.1 model: an SSL baseline, or the supervised reference."""
    return supervised(ctx) if name == "supervised" else baseline(ctx, name)


def _label(name: str) -> str:
    return "Supervised" if name == "supervised" else display(name)


def models_of(ctx: RecipeContext) -> list[str]:
    """Models compared at this budget."""
    return list(ctx.pick(SMALL_MODELS, PAPER_MODELS))


def _round(x: float, digits: int = 2) -> float:
    return round(float(x), digits)


# --------------------------------------------------------------------------- Table B.1 and Figure B.1
def _statistics(ctx: RecipeContext) -> dict[str, dict[str, Any]]:
    return {name: concept_statistics(explain(ctx, model_encoder(ctx, name), mode="groups").result.groups)
            for name in models_of(ctx)}


@recipe("table-b.1", title="Interpretable feature groups and unique concepts of various models", section="B.1",
        kind="table", needs="world (default) or --data; one training + FALCON per model; ~2 min CPU per model",
        no_claim="counts of interpretable groups and concepts per model; the paper ranks no model against another")
def table_b_1(ctx: RecipeContext) -> RecipeResult:
    """Table B.1: interpretable groups, unique concepts and the most frequent concepts per model."""
    stats = _statistics(ctx)
    rows = [{"model": _label(n), "interpretable_groups": s["interpretable_groups"],
             "unique_concepts": s["unique_concepts"], "most_frequent_concepts": ", ".join(s["most_frequent"])}
            for n, s in stats.items()]
    return RecipeResult(rows=rows, protocol={"models": list(stats), "falcon": falcon_settings(ctx),
                                             "concepts": "top words of each interpretable group's explanation"},
                        notes="At the small budget FALCON examines at most max_groups groups per model.")


@recipe("fig-b.1", title="Concepts shared between pairs of models", section="B.1", kind="figure",
        needs="world (default) or --data; one training + FALCON per model; ~2 min CPU per model",
        no_claim="counts of concepts shared by pairs of models; no two settings compared in a direction")
def fig_b_1(ctx: RecipeContext) -> RecipeResult:
    """Figure B.1: the number of concepts each pair of models shares (and each model's unshared concepts)."""
    stats = _statistics(ctx)
    concepts = {_label(n): s["concepts"] for n, s in stats.items()}
    names, matrix = shared_concepts(concepts)
    unshared = unshared_concepts(concepts)
    rows = []
    for a in range(len(names)):
        for b in range(len(names)):
            if a != b:
                rows.append({"model": names[a], "other": names[b], "shared": int(matrix[a, b]),
                             "own_concepts": int(matrix[a, a]),
                             "shared_pct_of_own": _round(100 * matrix[a, b] / matrix[a, a]) if matrix[a, a]
                             else float("nan")})
    fig = plot_shared_concepts(names, matrix, ctx.out / "shared.png")
    return RecipeResult(rows=rows, figures=[fig.name],
                        protocol={"unshared_counts": {n: len(v) for n, v in unshared.items()},
                                  "unshared_examples": {n: v[:8] for n, v in unshared.items()}})


# --------------------------------------------------------------------------- Table B.3
@recipe("table-b.3", title="Percentage of features that highly activate more than 10 samples", section="B.3",
        kind="table", needs="world (default) or --data; one training per model; ~1 min CPU per model",
        no_claim="a percentage per model describing its representation space; no direction between models claimed")
def table_b_3(ctx: RecipeContext) -> RecipeResult:
    """Table B.3: share of features with ``|T_i| > 10`` at ``alpha = mean(H) + 16 std(H)`` (appendix B.3)."""
    models = list(ctx.pick(("supervised", "simclr", "moco", "byol"),
                           ("supervised", "simclr", "moco", "dino", "byol", "simsiam", "swav")))
    source = probe_source(ctx)
    rows = []
    for name in models:
        enc = model_encoder(ctx, name)
        raw, _, _ = compute_representations(enc.backbone, source, device=ctx.device, progress=ctx.progress)
        share = highly_activating_feature_share(raw, 16.0, 10)
        rows.append({"model": _label(name), "percent_features": _round(share["percent"]),
                     "alpha": _round(share["alpha"], 4), "features": share["features"], "dim": share["dim"]})
    return RecipeResult(rows=rows, protocol={"probe_set": f"{len(source)} images of the {PROBE_SPLIT} split"
                                                          f"{world_size(source)}",
                                             "alpha": "mean(H) + 16 std(H)",
                                             "min_samples": 10})


# --------------------------------------------------------------------------- Figure B.2
@recipe("fig-b.2", title="Distribution of feature-group sizes and interpretable groups", section="B.3",
        kind="figure", needs="world (default) or --data; one training + FALCON per model; ~2 min CPU per model",
        no_claim="distributions of group sizes per model; no two settings compared in a direction")
def fig_b_2(ctx: RecipeContext) -> RecipeResult:
    """Figure B.2: feature groups (Algorithm 1) per size, and how many of them are interpretable."""
    dists, rows = {}, []
    for name in models_of(ctx):
        ex = explain(ctx, model_encoder(ctx, name), mode="groups")
        groups = list(ex.falcon.candidate_groups())
        dist = group_size_distribution(groups, [g.features for g in ex.result.groups if g.interpretable])
        dists[_label(name)] = dist
        for size, counts in dist.items():
            rows.append({"model": _label(name), "group_size": size, **counts})
    fig = plot_group_sizes(dists, ctx.out / "group_sizes.png")
    return RecipeResult(rows=rows, figures=[fig.name],
                        protocol={"min_samples": falcon_settings(ctx).get("min_samples", 10),
                                  "examined_at_most": falcon_settings(ctx).get("max_groups")},
                        notes="Interpretable counts cover the groups FALCON examined (all at the paper budget).")


# --------------------------------------------------------------------------- Figure B.3
@recipe("fig-b.3", title="Top activating images of individual features that are hard to explain", section="B.3",
        kind="figure", needs="world (default) or --data; SimCLR training + FALCON (features); ~2 min CPU",
        no_claim="examples of hard-to-explain features; qualitative")
def fig_b_3(ctx: RecipeContext) -> RecipeResult:
    """Figure B.3: single features with enough highly activating images whose images share the least (lowest
    mean CLIP similarity)."""
    ex = explain(ctx, baseline(ctx, "simclr"), mode="features")
    ranked = sorted((g for g in ex.result.groups if g.avg_similarity == g.avg_similarity),
                    key=lambda g: (g.avg_similarity, g.name))[:4]
    rows = [{"feature": g.name, "highly": int(len(g.highly)), "avg_clip_similarity": _round(g.avg_similarity, 4),
             "interpretable": bool(g.interpretable)} for g in ranked]
    grid = [{"label": f"feature {g.name}\nsim {g.avg_similarity:.2f}",
             "panels": [("", img.permute(1, 2, 0).numpy()) for img in ex.falcon.images(g.highly[:6])]}
            for g in ranked]
    figures = [plot_cam_grid(grid, ctx.out / "unexplainable.png").name] if grid else []
    return RecipeResult(rows=rows, figures=figures, protocol={"model": "simclr", **ex.labels(),
                                                                 "gamma": falcon_settings(ctx)["gamma"]})


# --------------------------------------------------------------------------- Figures B.4 and B.6
def _judged(ctx: RecipeContext) -> tuple[Any, list[tuple[Any, list[bool]]]]:
    ex = explain(ctx, baseline(ctx, "simclr"), mode="groups")
    if ex.concepts_of_rows() is None:
        raise ValueError("this recipe judges concepts with the world's true concepts; use the world (no --data)")
    return ex, [(g, judged_words(ex, g, 6)) for g in ex.result.explained if g.words]


@recipe("fig-b.4", title="Most and least relevant concepts and their scores", section="B.4", kind="figure",
        needs="world (true concepts replace the human study); SimCLR training + FALCON; ~2 min CPU",
        no_claim="examples of the most and least relevant concepts of a human study; qualitative")
def fig_b_4(ctx: RecipeContext) -> RecipeResult:
    """Figure B.4: relevant vs irrelevant top-6 concepts (by the world's truth) and their mean Word Score."""
    from collections import Counter

    ex, judged = _judged(ctx)
    scores: dict[bool, list[float]] = {True: [], False: []}
    words: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    for g, verdicts in judged:
        for (term, score), ok in zip(g.words[:6], verdicts, strict=False):
            scores[ok].append(score)
            words[ok][term] += 1
    rows = [{"relevance": "relevant" if ok else "irrelevant", "concepts": len(scores[ok]),
             "mean_word_score": _round(np.mean(scores[ok]), 4) if scores[ok] else float("nan"),
             "examples": ", ".join(w for w, _ in words[ok].most_common(8))} for ok in (True, False)]
    fig = plot_grouped_bars(["relevant", "irrelevant"], {"mean Word Score": [r["mean_word_score"] for r in rows]},
                            ctx.out / "relevance.png", ylabel="mean Word Score")
    return RecipeResult(rows=rows, figures=[fig.name], protocol={"model": "simclr", **ex.labels(), "groups": len(judged)},
                        notes="Relevance by the world's truth instead of Mechanical Turk agreement; the score is the "
                              "Word Score (Eq. 4.1) of the concept.")


@recipe("fig-b.6", title="Relevance of each feature's top concepts", section="B.4", kind="figure",
        needs="world (true concepts replace the human study); SimCLR training + FALCON; ~2 min CPU",
        no_claim="per-feature agreement of a human study; it describes one method, compares nothing")
def fig_b_6(ctx: RecipeContext) -> RecipeResult:
    """Figure B.6: share of relevant concepts among each explained group's top 6 (the paper averages worker
    agreement per feature)."""
    ex, judged = _judged(ctx)
    rows = [{"group": g.name, "concepts": len(v), "relevant_pct": _round(100 * np.mean(v))} for g, v in judged if v]
    rows.sort(key=lambda r: (-r["relevant_pct"], r["group"]))
    share = float(np.mean([r["relevant_pct"] >= 66.0 for r in rows])) if rows else float("nan")
    fig = plot_grouped_bars([r["group"] for r in rows], {"relevant (%)": [r["relevant_pct"] for r in rows]},
                            ctx.out / "relevance_per_feature.png", ylabel="relevant concepts (%)")
    return RecipeResult(rows=rows, figures=[fig.name],
                        protocol={"model": "simclr", **ex.labels(), "groups": len(rows),
                                  "share_of_groups_with_at_least_66pct_relevant": _round(100 * share)})


# --------------------------------------------------------------------------- Figure B.7
@recipe("fig-b.7", title="Concepts generalise to unseen data", section="B.5", kind="figure",
        needs="world; SimCLR training + FALCON (features); ~2 min CPU",
        no_claim="concepts checked on an unseen data set's images; the paper's reading is qualitative and has no control")
def fig_b_7(ctx: RecipeContext) -> RecipeResult:
    """Figure B.7: concepts of features explained on the probe set, checked on the features' highly activating
    images of an unseen world (the paper uses STL-10) with the world's truth."""
    enc = baseline(ctx, "simclr")
    ex = explain(ctx, enc, mode="features")
    name = "single-object photo"
    unseen = ctx.source("test", spec=transfer_spec(ctx, name))
    raw, index, _ = compute_representations(enc.backbone, unseen, device=ctx.device, progress=ctx.progress)
    h = normalize_rows(raw)
    seen_truth = ex.concepts_of_rows()
    unseen_truth = source_concepts(unseen)
    shown = [g for g in ex.result.groups if g.interpretable and g.words][:6]
    rows, grid = [], []
    for g in shown:
        f = g.features[0]
        top = np.flatnonzero(h[:, f] >= ex.falcon.alpha)
        if len(top) <= 3:
            top = np.argsort(-h[:, f], kind="stable")[:10]
        concepts = [t for t, _ in g.words[:3]]
        row: dict[str, Any] = {"feature": g.name, "concepts": ", ".join(concepts), "unseen_images": int(len(top))}
        if seen_truth is not None and unseen_truth is not None:
            row["seen_presence_pct"] = _round(100 * carry_rate(
                concepts, [ground_truth_terms(seen_truth[int(i)]) for i in g.highly]))
            row["unseen_presence_pct"] = _round(100 * carry_rate(
                concepts, [ground_truth_terms(unseen_truth[int(index[i])]) for i in top]))
        rows.append(row)
        images = [unseen[int(index[i])]["image"] for i in top[:5]]
        grid.append({"label": f"{g.name}\n{', '.join(concepts[:2])}",
                     "panels": [("", img.permute(1, 2, 0).numpy()) for img in images]})
    figures = [plot_cam_grid(grid, ctx.out / "unseen.png", title=f"top activating images in '{name}'").name] \
        if grid else []
    return RecipeResult(rows=rows, figures=figures,
                        protocol={"model": "simclr", **ex.labels(), "unseen": {name: TRANSFER_WORLDS[name]},
                                  "presence": "share of (concept, image) pairs whose true concepts contain it"})


# --------------------------------------------------------------------------- Figure B.8 (appendix B.6)
@recipe("fig-b.8", title="Concepts of features of early and late layers of a supervised encoder", section="B.6",
        kind="figure", needs="world (default) or --data; supervised training + FALCON per layer; ~3 min CPU",
        no_claim="concepts of early and late layers; the paper's comparison is with MILAN, which is not available offline")
def fig_b_8(ctx: RecipeContext) -> RecipeResult:
    """Figure B.8 / appendix B.6: FALCON on random features of every stage of the supervised encoder.

    Per layer: how large the Grad-CAM crops are (the paper: they grow towards
    the last layer), the concepts of a few features, and the share of concept
    words that are primitive (colours, textures, patterns) rather than shapes.
    """
    primitive = {w for c in (*COLOURS, *MARKERS, *TEXTURES) for w in c.split()} | {"pattern", "stripes", "dots"}
    shapes = {w for s in SHAPES for w in s.split()}
    sup = supervised(ctx)
    rows = []
    for layer in sup.backbone.layer_names():
        wrapped = LayerRepresentation(sup.backbone, layer)
        ex = explain(ctx, sup, mode="features", backbone=wrapped, tag=layer,
                     max_groups=ctx.pick(6, 20), explain_all=True)
        side = ex.falcon.images(ex.falcon.index[:1]).shape[-1] if len(ex.falcon.index) else 1
        areas = [(x1 - x0) * (y1 - y0) / side**2 for g in ex.result.groups for (x0, y0, x1, y1) in g.boxes]
        words = [t for g in ex.result.groups for t, _ in g.words[:5]]
        rows.append({"layer": layer, "channels": int(wrapped.feature_dim), "features_examined": len(ex.result.groups),
                     "mean_crop_area_pct": _round(100 * np.mean(areas)) if areas else float("nan"),
                     "primitive_concepts_pct": _round(100 * np.mean([w in primitive for w in words]))
                     if words else float("nan"),
                     "shape_concepts_pct": _round(100 * np.mean([w in shapes for w in words])) if words
                     else float("nan"),
                     "example_concepts": " | ".join(", ".join(t for t, _ in g.words[:3])
                                                    for g in ex.result.groups[:3] if g.words)})
    fig = plot_grouped_bars([r["layer"] for r in rows], {"crop area (%)": [r["mean_crop_area_pct"] for r in rows]},
                            ctx.out / "layers.png", ylabel="% of the image",
                            panels={"concept kinds (%)": {"primitive": [r["primitive_concepts_pct"] for r in rows],
                                                          "shape": [r["shape_concepts_pct"] for r in rows]}})
    return RecipeResult(rows=rows, figures=[fig.name],
                        protocol={"model": "supervised", "features_per_layer": ctx.pick(6, 20),
                                  "representation": "global average of each layer's output",
                                  "comparison": "MILAN is not available offline"})
