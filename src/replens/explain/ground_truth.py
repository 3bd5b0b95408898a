"""Ground-truth evaluation of FALCON concepts on the embedded world (paper section 4.4, Table 4.1).

The paper measures concept quality with a human study: participants mark each
of a feature's top 6 concepts as related to its highly activating images
(Group A) and not to its lowly activating images (Group B); precision and
recall are reported for the top ``K`` concepts. The world knows every image's
true concepts, so the judgement is exact here:

* a term is **present** in an image when it is one of the image's true
  concepts or one of their words ("crimson" for "crimson patch");
* a concept is **related** to a group when it is present in at least
  ``majority`` of the group's highly activating images, and **discriminative**
  when, in addition, it is present in fewer than ``majority`` of its lowly
  activating images (the study's "related to Group A and not Group B");
* precision@K: related concepts among the top K; recall@K (the paper's
  definition): related concepts among the top K over related concepts among
  the top 6; absolute recall@K: over all true words related to the group.

Spurious concepts are the top words that are not discriminative;
:func:`contrastive_filter_report` counts how many of them contrastive
filtering removed (and how many discriminative ones it wrongly removed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from replens.explain.falcon import GroupExplanation
from replens.world.vocab import BACKGROUNDS, COLOURLESS_DOMAINS, PATCH_CUES, marker_names

__all__ = [
    "concept_presence",
    "contrastive_filter_report",
    "failure_spurious_report",
    "ground_truth_terms",
    "precision_recall_at_k",
    "source_concepts",
]


def ground_truth_terms(concepts: Iterable[str]) -> set[str]:
    """Every true concept of an image and each of its words (``"left of"`` gives ``"left"``)."""
    out: set[str] = set()
    for concept in concepts:
        c = concept.lower().strip()
        out.add(c)
        words = c.split()
        out.update(w for w in words if len(w) > 2)
        if c.endswith(" tint"):
            out.add("tinted")
    return out


def concept_presence(term: str, image_terms: Sequence[set[str]]) -> float:
    """Fraction of images whose true terms contain ``term`` (all words of a phrase, for phrases)."""
    if not image_terms:
        return 0.0
    words = term.split()
    hits = [term in terms or (len(words) > 1 and all(w in terms for w in words)) for terms in image_terms]
    return float(np.mean(hits))


def _pct(part: float, whole: float) -> float:
    """``100 * part / whole``, NaN when ``whole`` is 0."""
    return float(100 * part / whole) if whole else float("nan")


def _mean_pct(values: Sequence[float]) -> float:
    """The mean of ``values`` in percent, NaN when there are none."""
    return float(100 * np.mean(values)) if values else float("nan")


def _judge(term: str, high: Sequence[set[str]], low: Sequence[set[str]], majority: float) -> tuple[bool, bool]:
    related = concept_presence(term, high) >= majority
    discriminative = related and (not low or concept_presence(term, low) < majority)
    return related, discriminative


def precision_recall_at_k(
    groups: Sequence[GroupExplanation],
    image_concepts: Sequence[Sequence[str]],
    *,
    ks: Sequence[int] = (1, 2, 3, 4, 5, 6),
    majority: float = 0.5,
    discriminative: bool = True,
    vocabulary: set[str] | None = None,
) -> dict[str, Any]:
    """Precision and recall of the top-K words of explained groups against the world's truth.

    Args:
        groups: Explained groups (with ``words``).
        image_concepts: True concepts of every representation row.
        ks: The K values (the paper's Table 4.1 uses 1 to 6).
        majority: Presence fraction for "related".
        discriminative: Judge "related to A and not B" (True, the study's
            question) or "related to A" only.
        vocabulary: Words that count for the absolute recall (e.g. words the
            bank can express and the discard list keeps); None: all true words.

    Returns:
        ``{"groups": n, "precision": {K: %}, "recall": {K: %},
        "absolute_recall": {K: %}}`` (means over groups, in percent).
    """
    precision = {k: [] for k in ks}
    recall = {k: [] for k in ks}
    absolute = {k: [] for k in ks}
    n = 0
    k_max = max(ks)
    for g in groups:
        if not g.words:
            continue
        high = [ground_truth_terms(image_concepts[int(i)]) for i in g.highly]
        low = [ground_truth_terms(image_concepts[int(i)]) for i in g.lowly]
        verdicts = [_judge(t, high, low, majority)[1 if discriminative else 0] for t, _ in g.words[:k_max]]
        total_related = sum(verdicts[:6])
        true_words = set().union(*high) if high else set()
        true_words = {w for w in true_words if " " not in w and (vocabulary is None or w in vocabulary)}
        group_truth = {w for w in true_words if _judge(w, high, low, majority)[1 if discriminative else 0]}
        n += 1
        for k in ks:
            top = verdicts[:k]
            precision[k].append(sum(top) / len(top))
            if total_related:
                recall[k].append(sum(top) / total_related)
            if group_truth:
                found = {t for (t, _), ok in zip(g.words[:k], top, strict=False) if ok and t in group_truth}
                absolute[k].append(len(found) / len(group_truth))

    def mean(values: dict[int, list[float]]) -> dict[int, float]:
        return {k: _mean_pct(v) for k, v in values.items()}

    return {"groups": n, "precision": mean(precision), "recall": mean(recall), "absolute_recall": mean(absolute)}


def contrastive_filter_report(
    groups: Sequence[GroupExplanation],
    image_concepts: Sequence[Sequence[str]],
    *,
    top: int = 8,
    majority: float = 0.5,
) -> dict[str, Any]:
    """How contrastive filtering treated spurious and discriminative concepts.

    For every explained group with lowly activating images, the top ``top``
    words by Word Score *before* filtering are judged against the truth:
    spurious (not discriminative: absent from the group's images, or also
    present in its lowly activating images) or discriminative.

    Returns:
        ``spurious`` (count), ``spurious_removed`` (count and %),
        ``discriminative``, ``discriminative_removed`` (count and %), and
        ``precision_before`` / ``precision_after`` (% of discriminative words
        in the top ``top`` before and after filtering), over ``groups`` groups.
    """
    spurious = spurious_removed = good = good_removed = 0
    before, after = [], []
    n = 0
    for g in groups:
        if not g.word_scores or not len(g.lowly):
            continue
        n += 1
        high = [ground_truth_terms(image_concepts[int(i)]) for i in g.highly]
        low = [ground_truth_terms(image_concepts[int(i)]) for i in g.lowly]
        ranked = sorted(g.word_scores.items(), key=lambda ts: (-ts[1], ts[0]))[:top]
        verdicts = []
        for term, _ in ranked:
            ok = _judge(term, high, low, majority)[1]
            verdicts.append(ok)
            removed = term in g.removed
            if ok:
                good += 1
                good_removed += removed
            else:
                spurious += 1
                spurious_removed += removed
        before.append(float(np.mean(verdicts)) if verdicts else 0.0)
        kept = [_judge(t, high, low, majority)[1] for t, _ in g.words[:top]]
        after.append(float(np.mean(kept)) if kept else 0.0)
    return {
        "groups": n,
        "spurious": spurious,
        "spurious_removed": spurious_removed,
        "spurious_removed_pct": _pct(spurious_removed, spurious),
        "discriminative": good,
        "discriminative_removed": good_removed,
        "discriminative_removed_pct": _pct(good_removed, good),
        "precision_before": _mean_pct(before),
        "precision_after": _mean_pct(after),
    }


def source_concepts(source: Any) -> list[list[str]] | None:
    """True concepts of every sample when ``source`` is (a subset of) a world split, else None."""
    indices = None
    while type(source).__name__ == "SubsetSource":
        idx = np.asarray(source.indices)
        indices = idx if indices is None else idx[indices]
        source = source.source
    concepts = getattr(source, "concepts", None)
    if concepts is None or not hasattr(source, "records"):
        return None
    concepts = list(concepts)
    return concepts if indices is None else [concepts[int(i)] for i in indices]


def _world_of(source: Any) -> tuple[Any, np.ndarray | None]:
    indices = None
    while type(source).__name__ == "SubsetSource":
        idx = np.asarray(source.indices)
        indices = idx if indices is None else idx[indices]
        source = source.source
    return source, indices


def is_pattern_world(source: Any) -> bool:
    """Whether ``source`` (a world split, or a subset of one) carries the ``"pattern"`` spurious cue."""
    world, _ = _world_of(source)
    return bool(getattr(getattr(world, "config", None), "patterned", False))


def failure_spurious_report(failures: Sequence[Any], source: Any, *, top: int = 8) -> dict[str, Any] | None:
    """Do failure explanations name the planted spurious concept? (world sources only)

    A failure is *spurious-driven* when the predicted class is the class the
    sample's spurious cue (its marker patch or background colour) is tied to
    in the training split. Its explanation *names the cue* when the cue's
    colour word (e.g. ``"crimson"``) or phrase (``"crimson patch"``) is among
    the explanation's top ``top`` words or phrases. Spurious-driven failures
    on images of a domain that draws no colour (sketch, tints: the cue is a
    grey level there, see :data:`~replens.world.vocab.COLOURLESS_DOMAINS`)
    are counted apart (``spurious_driven_colourless``); ``named_among_nameable_pct``
    is the named share of the others.

    Args:
        failures: :class:`~replens.explain.failures.FailureExplanation` list
            (``row`` indexes ``source``).
        source: The world split (or a subset of it) the failures come from.
        top: Concepts considered per explanation.

    Returns:
        Counts and percentages, or None when ``source`` is not a world.
    """
    world, indices = _world_of(source)
    if not hasattr(world, "spurious_cues") or not hasattr(world, "config"):
        return None
    cue_kind = world.config.spurious_cue
    names = marker_names(world.config.patterned) if cue_kind in PATCH_CUES else BACKGROUNDS
    suffix = "patch" if cue_kind in PATCH_CUES else "background"
    cues = np.asarray(world.spurious_cues)
    # a colour cue drawn in a colourless domain is a grey level no word names; a pattern shows everywhere
    colourless = set() if world.config.patterned else \
        {k for k, d in enumerate(world.domain_names) if d in COLOURLESS_DOMAINS}
    n = driven = named = named_driven = unnameable = named_nameable = 0
    for f in failures:
        i = int(f.row) if indices is None else int(indices[int(f.row)])
        cue = int(cues[i])
        if cue < 0:
            continue
        word = names[cue]
        terms = {t for t, _ in f.words[:top]} | {t for t, _ in f.phrases[:top]}
        hit = word in terms or f"{word} {suffix}" in terms
        is_driven = int(f.prediction) == cue
        n += 1
        driven += is_driven
        # a sketch or tint draws the cue as a grey level: its colour word is true of no pixel
        grey = int(world.domains[i]) in colourless
        unnameable += is_driven and grey
        named += hit
        named_driven += hit and is_driven
        named_nameable += hit and is_driven and not grey
    nameable = driven - unnameable
    return {
        "cue": cue_kind,
        "failures": n,
        "spurious_driven": driven,
        "spurious_driven_pct": _pct(driven, n),
        "named": named,
        "named_pct": _pct(named, n),
        "named_among_spurious_driven": named_driven,
        "named_among_spurious_driven_pct": _pct(named_driven, driven),
        "spurious_driven_colourless": unnameable,
        "named_among_nameable": named_nameable,
        "named_among_nameable_pct": _pct(named_nameable, nameable),
    }
