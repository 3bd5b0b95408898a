"""Compositional test sets rendered from edited scene specifications.

ARO-like sets (paper section 6.5.3): an image with its true caption and
distractors that use the same words with the attributes swapped between the
objects (VG-Attribution), the relation reversed (VG-Relation) or the word
order shuffled (COCO/Flickr-Order). Winoground-like sets: two images and two
captions made of the same words in a different arrangement, each caption true
of exactly one image.

Every scene has two objects of the same size, different shapes and different
colours, laid out clearly side by side or one above the other. Counterfactual
images are rendered from the edited specification (colours or positions
swapped) with the same background and noise, so the two images of a pair
differ only where the edit says.

Captions use "the" rather than "a"/"an" so that swapping colours changes the
colour words and nothing else: "the red circle is left of the blue square".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from replens.world.annotate import boxes_from_segmentation, spatial_relation
from replens.world.render import render_scenes
from replens.world.scene import MAX_ANGLE, SceneBatch
from replens.world.vocab import BACKGROUNDS, COLOURS, DOMAINS, SHAPES, SIZES, TEXTURES

#: Domains that show object colours (the default of every builder; attribute
#: swaps refuse the sketch domain, where a colour swap changes no pixel).
COLOUR_DOMAINS: tuple[str, ...] = ("photo", "cartoon", "painting")
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_KIND_KEYS = {"attribute_swap": 0, "relation_swap": 1, "word_order": 2, "groups": 3}


@dataclass(frozen=True)
class CaptionChoice:
    """One image and candidate captions, the first one true (ARO-like).

    Attributes:
        kind: ``"attribute_swap"``, ``"relation_swap"`` or ``"word_order"``.
        image: (H, W, 3) uint8.
        captions: ``captions[0]`` describes ``image``; the others do not.
        counterfactual: (H, W, 3) uint8 image that ``captions[1]`` describes
            (the edited scene), or ``None`` for word-order sets.
        objects: The two objects (shape, colour, texture, size, box) of ``image``.
    """

    kind: str
    image: np.ndarray
    captions: tuple[str, ...]
    counterfactual: np.ndarray | None
    objects: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ImageCaptionGroup:
    """Two images and two captions (Winoground-like): ``captions[i]`` is true of
    ``images[i]`` only, and both captions use the same words.

    Attributes:
        kind: ``"relation"`` (objects trade places) or ``"attribute"`` (objects trade colours).
        images: Two (H, W, 3) uint8 images.
        captions: Two captions.
    """

    kind: str
    images: tuple[np.ndarray, np.ndarray]
    captions: tuple[str, str]


def pair_scenes(rng: np.random.Generator, n: int, domains: Sequence[str] = COLOUR_DOMAINS) -> SceneBatch:
    """Two-object scenes for the compositional sets (no marker, no spurious cue).

    Objects are medium-sized with distinct shapes and colours, 0.44 of the side
    apart along a random axis (horizontal or vertical), with small jitter
    across it, so their spatial relation is unambiguous and survives a swap.
    """
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        raise ValueError(f"domains must be names from {DOMAINS}, got {list(domains)}")
    domain_index = np.array([DOMAINS.index(d) for d in domains], dtype=np.int16)
    shape = np.argsort(rng.random((n, len(SHAPES))), axis=1)[:, :2]  # two distinct shapes
    colour = np.argsort(rng.random((n, len(COLOURS))), axis=1)[:, :2]
    horizontal = rng.random(n) < 0.5
    first_low = rng.random(n) < 0.5
    along = np.where(first_low[:, None], [0.28, 0.72], [0.72, 0.28])
    across = 0.5 + rng.uniform(-0.06, 0.06, size=(n, 2))
    cx = np.where(horizontal[:, None], along, across)
    cy = np.where(horizontal[:, None], across, along)
    return SceneBatch(
        domain=domain_index[rng.integers(len(domains), size=n)],
        n_objects=np.full(n, 2, dtype=np.int8),
        shape=shape.astype(np.int8),
        colour=colour.astype(np.int8),
        texture=rng.integers(len(TEXTURES), size=(n, 2)).astype(np.int8),
        size=np.full((n, 2), SIZES.index("medium"), dtype=np.int8),
        cx=cx.astype(np.float32),
        cy=cy.astype(np.float32),
        angle=rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=(n, 2)).astype(np.float32),
        jitter=rng.integers(-12, 13, size=(n, 2, 3)).astype(np.int16),
        background=rng.integers(len(BACKGROUNDS), size=n).astype(np.int8),
        marker=np.full(n, -1, dtype=np.int8),
        marker_corner=np.zeros(n, dtype=np.int8),
        spurious_aligned=np.zeros(n, dtype=bool),
        style=np.stack(
            [
                rng.uniform(0.0, 2.0 * np.pi, size=n),
                rng.uniform(1.0, 4.0, size=n),
                rng.uniform(1.0, 4.0, size=n),
                rng.uniform(0.0, 2.0 * np.pi, size=n),
            ],
            axis=1,
        ).astype(np.float32),
        noise_seed=rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32),
    )


def _require_colour(domains: Sequence[str]) -> None:
    if "sketch" in domains:
        raise ValueError("attribute (colour) swaps need colour: the sketch domain draws no colours")


def swap_colours(scenes: SceneBatch) -> SceneBatch:
    """The same scenes with the colours of objects 0 and 1 exchanged."""
    out = scenes.copy()
    out.colour[:, [0, 1]] = scenes.colour[:, [1, 0]]
    return out


def swap_positions(scenes: SceneBatch) -> SceneBatch:
    """The same scenes with objects 0 and 1 exchanging places."""
    out = scenes.copy()
    out.cx[:, [0, 1]] = scenes.cx[:, [1, 0]]
    out.cy[:, [0, 1]] = scenes.cy[:, [1, 0]]
    return out


def relation_caption(first: tuple[str, str], relation: str, second: tuple[str, str]) -> str:
    """``"the red circle is left of the blue square"`` from (colour, shape) pairs."""
    return f"the {first[0]} {first[1]} is {relation} the {second[0]} {second[1]}"


def _render_with(scenes: SceneBatch, edited: SceneBatch, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render originals and edits in one batch; return images, edited images, boxes."""
    images, seg = render_scenes(SceneBatch.concat([scenes, edited]), size)
    n = len(scenes)
    return images[:n], images[n:], boxes_from_segmentation(seg[:n], 2)


def _objects(scenes: SceneBatch, boxes: np.ndarray, i: int) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "shape": SHAPES[scenes.shape[i, j]],
            "colour": COLOURS[scenes.colour[i, j]],
            "texture": TEXTURES[scenes.texture[i, j]],
            "size": SIZES[scenes.size[i, j]],
            "box": boxes[i, j].tolist(),
        }
        for j in range(2)
    )


def _rng(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(_KIND_KEYS[kind],)))


def _pairs(objects: tuple[dict[str, Any], ...]) -> tuple[tuple[str, str], tuple[str, str]]:
    return (objects[0]["colour"], objects[0]["shape"]), (objects[1]["colour"], objects[1]["shape"])


def attribute_swap_set(
    n: int, *, size: int = 64, domains: Sequence[str] = COLOUR_DOMAINS, seed: int = 0
) -> list[CaptionChoice]:
    """VG-Attribution-like items: true caption vs the colours swapped between the objects.

    ``captions = ("the red circle is left of the blue square",
    "the blue circle is left of the red square")``; ``counterfactual`` is the
    scene rendered with the two colours exchanged.
    """
    _require_colour(domains)
    scenes = pair_scenes(_rng(seed, "attribute_swap"), n, domains)
    images, swapped, boxes = _render_with(scenes, swap_colours(scenes), size)
    out = []
    for i in range(n):
        objects = _objects(scenes, boxes, i)
        (c0, s0), (c1, s1) = _pairs(objects)
        relation = spatial_relation(boxes[i, 0].tolist(), boxes[i, 1].tolist())
        captions = (relation_caption((c0, s0), relation, (c1, s1)), relation_caption((c1, s0), relation, (c0, s1)))
        out.append(CaptionChoice("attribute_swap", images[i], captions, swapped[i], objects))
    return out


def relation_swap_set(
    n: int, *, size: int = 64, domains: Sequence[str] = COLOUR_DOMAINS, seed: int = 0
) -> list[CaptionChoice]:
    """VG-Relation-like items: true caption vs the opposite relation.

    ``captions = ("the red circle is left of the blue square",
    "the red circle is right of the blue square")``; ``counterfactual`` is the
    scene with the two objects' places exchanged (where the second caption holds).
    """
    scenes = pair_scenes(_rng(seed, "relation_swap"), n, domains)
    images, swapped, boxes = _render_with(scenes, swap_positions(scenes), size)
    out = []
    for i in range(n):
        objects = _objects(scenes, boxes, i)
        first, second = _pairs(objects)
        relation = spatial_relation(boxes[i, 0].tolist(), boxes[i, 1].tolist())
        captions = (relation_caption(first, relation, second), relation_caption(first, _OPPOSITE[relation], second))
        out.append(CaptionChoice("relation_swap", images[i], captions, swapped[i], objects))
    return out


def word_order_set(
    n: int,
    *,
    size: int = 64,
    domains: Sequence[str] = COLOUR_DOMAINS,
    seed: int = 0,
    n_shuffles: int = 4,
) -> list[CaptionChoice]:
    """COCO-Order-like items: the true caption and ``n_shuffles`` distinct word shuffles of it."""
    rng = _rng(seed, "word_order")
    scenes = pair_scenes(rng, n, domains)
    images, seg = render_scenes(scenes, size)
    boxes = boxes_from_segmentation(seg, 2)
    out = []
    for i in range(n):
        objects = _objects(scenes, boxes, i)
        first, second = _pairs(objects)
        true = relation_caption(first, spatial_relation(boxes[i, 0].tolist(), boxes[i, 1].tolist()), second)
        words = true.split()
        shuffles: list[str] = []
        while len(shuffles) < n_shuffles:
            candidate = " ".join(words[j] for j in rng.permutation(len(words)))
            if candidate != true and candidate not in shuffles:
                shuffles.append(candidate)
        out.append(CaptionChoice("word_order", images[i], (true, *shuffles), None, objects))
    return out


def winoground_groups(
    n: int,
    *,
    size: int = 64,
    domains: Sequence[str] = COLOUR_DOMAINS,
    seed: int = 0,
    kinds: Sequence[str] = ("relation", "attribute"),
) -> list[ImageCaptionGroup]:
    """Winoground-like 2x2 groups, cycling through ``kinds``.

    ``"relation"``: "the red circle is left of the blue square" / "the blue
    square is left of the red circle", the second image with the objects'
    places exchanged. ``"attribute"``: "the red circle is left of the blue
    square" / "the blue circle is left of the red square", the second image
    with the colours exchanged.
    """
    bad = [k for k in kinds if k not in ("relation", "attribute")]
    if bad or not kinds:
        raise ValueError(f"kinds must be 'relation' and/or 'attribute', got {list(kinds)}")
    if "attribute" in kinds:
        _require_colour(domains)
    scenes = pair_scenes(_rng(seed, "groups"), n, domains)
    kind_of = [kinds[i % len(kinds)] for i in range(n)]
    is_relation = np.array([k == "relation" for k in kind_of], dtype=bool)
    by_position, by_colour = swap_positions(scenes), swap_colours(scenes)
    edited = by_colour.copy()
    edited.cx[is_relation], edited.cy[is_relation] = by_position.cx[is_relation], by_position.cy[is_relation]
    edited.colour[is_relation] = scenes.colour[is_relation]
    images, others, boxes = _render_with(scenes, edited, size)
    out = []
    for i in range(n):
        first, second = _pairs(_objects(scenes, boxes, i))
        relation = spatial_relation(boxes[i, 0].tolist(), boxes[i, 1].tolist())
        if kind_of[i] == "relation":
            other = relation_caption(second, relation, first)
        else:
            other = relation_caption((second[0], first[1]), relation, (first[0], second[1]))
        out.append(
            ImageCaptionGroup(kind_of[i], (images[i], others[i]), (relation_caption(first, relation, second), other))
        )
    return out
