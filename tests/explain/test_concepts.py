"""Word Score (Eq. 4.1), contrastive filtering and spaCy concept extraction."""

from __future__ import annotations

import random

import pytest

from replens.explain.concepts import (
    CaptionTerms,
    ConceptExtractor,
    contrastive_filter,
    rank_terms,
    word_scores,
)


class SplitExtractor:
    """A stand-in extractor: every whitespace token is a word, every adjacent pair a phrase."""

    def terms(self, captions):
        out = []
        for c in captions:
            toks = c.split()
            out.append(CaptionTerms(frozenset(toks), frozenset(" ".join(p) for p in zip(toks, toks[1:], strict=False))))
        return out


def direct_word_score(word, captions, confidences):
    """Eq. 4.1 written out: 1/|T| sum_q max_p C^w_{q,p}, C^w = confidence if w in caption p else 0."""
    total = 0.0
    for caps, confs in zip(captions, confidences, strict=True):
        total += max(conf if word in cap.split() else 0.0 for cap, conf in zip(caps, confs, strict=True))
    return total / len(captions)


def test_word_score_matches_equation_4_1():
    rng = random.Random(0)
    vocab = ["red", "circle", "blue", "square", "striped", "dog", "star"]
    captions = [[" ".join(rng.sample(vocab, 3)) for _ in range(5)] for _ in range(7)]
    confidences = [[rng.random() for _ in range(5)] for _ in range(7)]
    scores = word_scores(captions, confidences, SplitExtractor(), "words")
    for word in vocab:
        expected = direct_word_score(word, captions, confidences)
        assert scores.get(word, 0.0) == pytest.approx(expected, abs=1e-12)


def test_word_score_counts_a_word_once_per_image_and_phrases_separately():
    captions = [["red circle", "red red square"], ["blue square", "red square"]]
    confidences = [[0.5, 0.25], [0.75, 0.125]]
    words = word_scores(captions, confidences, SplitExtractor(), "words")
    assert words["red"] == pytest.approx((0.5 + 0.125) / 2)
    assert words["square"] == pytest.approx((0.25 + 0.75) / 2)
    phrases = word_scores(captions, confidences, SplitExtractor(), "phrases")
    assert phrases["red square"] == pytest.approx((0.25 + 0.125) / 2)
    with pytest.raises(ValueError, match="caption lists but"):
        word_scores(captions, confidences[:1], SplitExtractor())


def test_contrastive_filter_matches_direct_rule():
    rng = random.Random(1)
    terms = [f"t{i}" for i in range(40)]
    high = {t: rng.random() for t in terms}
    low = {t: rng.random() * 0.2 for t in rng.sample(terms, 25)}
    low["unseen"] = 0.9  # a lowly-only term must not appear anywhere
    kept, removed = contrastive_filter(high, low, threshold=0.1)
    for t in terms:
        spurious = low.get(t, 0.0) >= 0.1
        assert (t in removed) == spurious
        assert (t in kept) == (not spurious)
        if spurious:
            assert removed[t] == (high[t], low[t])
    assert "unseen" not in kept and "unseen" not in removed


def test_rank_terms_orders_by_score_then_name():
    ranked = rank_terms({"b": 0.5, "a": 0.5, "c": 0.9, "d": 0.01}, top=3, min_score=0.05)
    assert ranked == [("c", 0.9), ("a", 0.5), ("b", 0.5)]


def test_spacy_extraction_rules(extractor: ConceptExtractor):
    terms = extractor.terms(
        [
            "Two small RED circles on a beige background, photo 2019!",
            "a dog running in the park",
            "a crimson patch",
        ]
    )
    first, second, third = terms
    # plural noun lemmatised, adjectives kept, stop words / digits / discard words dropped
    assert {"circle", "small", "red", "beige"} <= first.words
    assert not first.words & {"two", "on", "photo", "background", "2019", "photo 2019"}
    assert "small red circle" in first.phrases
    # verbs keep their surface form (as the authors' TextBlob noun lemmatiser does)
    assert {"dog", "running", "park"} <= second.words
    assert third.phrases == {"crimson patch"} and third.words == {"crimson", "patch"}
    assert "circles" in extractor.surface["circle"]


def test_discard_list_is_configurable(extractor: ConceptExtractor):
    custom = ConceptExtractor(extractor.nlp, discard_words={"circle"})
    (terms,) = custom.terms(["a red circle on a beige background"])
    assert "circle" not in terms.words and "background" in terms.words
