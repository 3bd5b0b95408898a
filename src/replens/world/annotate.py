"""Ground truth derived from a rendered scene: boxes, relations, captions, concepts.

Boxes are measured on the rendered segmentation (tight around the visible
pixels), and relations are read off the box centres, so the annotations agree
with the pixels by construction. Captions follow a few fixed templates over
the closed vocabulary, which is what the caption banks of FALCON (paper section
4.2) and the compositional benchmarks (section 6.5.3) need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from replens.world.scene import SceneBatch
from replens.world.vocab import (
    BACKGROUNDS,
    COLOURLESS_DOMAINS,
    COLOURS,
    DOMAIN_CONCEPT,
    DOMAIN_NOUN,
    DOMAINS,
    SHAPES,
    SIZES,
    TEXTURELESS_DOMAINS,
    TEXTURES,
    article,
    marker_names,
)

#: Two objects whose boxes are at most this far apart (fraction of the side) are "next to" each other.
NEXT_TO_GAP = 0.06


def boxes_from_segmentation(seg: np.ndarray, max_objects: int) -> np.ndarray:
    """Tight boxes of every object slot.

    Args:
        seg: (n, H, W) segmentation (``k + 1`` marks object slot ``k``).
        max_objects: Object slots ``K``.

    Returns:
        (n, K, 4) int16 boxes ``x0, y0, x1, y1`` with ``x0, y0`` inclusive and
        ``x1, y1`` exclusive (``mask[y0:y1, x0:x1]`` holds the whole object);
        -1 for empty slots.
    """
    n, height, width = seg.shape
    boxes = np.full((n, max_objects, 4), -1, dtype=np.int16)
    for k in range(max_objects):
        mask = seg == k + 1
        rows, cols = mask.any(axis=2), mask.any(axis=1)
        present = rows.any(axis=1)
        y0 = rows.argmax(axis=1)
        y1 = height - rows[:, ::-1].argmax(axis=1)
        x0 = cols.argmax(axis=1)
        x1 = width - cols[:, ::-1].argmax(axis=1)
        box = np.stack([x0, y0, x1, y1], axis=1)
        boxes[:, k] = np.where(present[:, None], box, -1)
    return boxes


def spatial_relation(box_a: Sequence[int], box_b: Sequence[int]) -> str:
    """Where ``a`` is relative to ``b`` along the axis on which their box centres differ most.

    Returns:
        ``"left of"``, ``"right of"``, ``"above"`` or ``"below"``.
    """
    dx = float(box_b[0] + box_b[2] - box_a[0] - box_a[2]) / 2
    dy = float(box_b[1] + box_b[3] - box_a[1] - box_a[3]) / 2
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def relations_of(boxes: Sequence[Sequence[int]], sizes: Sequence[int], image_side: int) -> list[dict[str, Any]]:
    """All relations between the objects of one scene, for every ordered pair.

    Args:
        boxes: (k, 4) boxes of the present objects.
        sizes: (k,) size indices.
        image_side: Image side in pixels (for "next to").

    Returns:
        Dicts ``{"subject": a, "relation": word, "object": b}``: one spatial
        relation per ordered pair, "bigger than"/"smaller than" when the size
        words differ, and "next to" when the boxes are close.
    """
    out: list[dict[str, Any]] = []
    k = len(boxes)
    for a in range(k):
        for b in range(k):
            if a == b:
                continue
            out.append({"subject": a, "relation": spatial_relation(boxes[a], boxes[b]), "object": b})
            if sizes[a] != sizes[b]:
                word = "bigger than" if sizes[a] > sizes[b] else "smaller than"
                out.append({"subject": a, "relation": word, "object": b})
            gap_x = max(0, int(max(boxes[a][0], boxes[b][0])) - int(min(boxes[a][2], boxes[b][2])))
            gap_y = max(0, int(max(boxes[a][1], boxes[b][1])) - int(min(boxes[a][3], boxes[b][3])))
            if math.hypot(gap_x, gap_y) <= NEXT_TO_GAP * image_side:
                out.append({"subject": a, "relation": "next to", "object": b})
    return out


def object_phrase(obj: dict[str, str], detail: str = "full", domain: str | None = None) -> str:
    """A noun phrase for one object, with its article.

    Args:
        obj: ``{"shape", "colour", "texture", "size"}`` names.
        detail: ``"full"`` (size, colour, texture unless solid, shape),
            ``"look"`` (the same without the size), ``"colour"`` (colour and shape) or ``"shape"``.
        domain: The rendering domain: the colour is left out where it draws no colour
            (:data:`~replens.world.vocab.COLOURLESS_DOMAINS`), the texture where it draws none.
    """
    colour = [] if domain in COLOURLESS_DOMAINS else [obj["colour"]]
    if detail == "shape":
        words = [obj["shape"]]
    elif detail == "colour":
        words = [*colour, obj["shape"]]
    elif detail in ("full", "look"):
        texture = [] if obj["texture"] == "solid" or domain in TEXTURELESS_DOMAINS else [obj["texture"]]
        words = [*([obj["size"]] if detail == "full" else []), *colour, *texture, obj["shape"]]
    else:
        raise ValueError(f"unknown detail {detail!r}")
    return f"{article(words[0])} {' '.join(words)}"


def _join(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def captions_of(
    objects: list[dict[str, Any]], boxes: Sequence[Sequence[int]], domain: str, background: str
) -> list[str]:
    """Four template captions of a scene (every one names the main object's shape).

    0. full description with relations to the main object: "a large red
       striped circle left of a small blue square";
    1. domain and class: "a photo of a circle";
    2. domain and every object: "a cartoon of a red circle and a blue square";
    3. main object and background: "a red striped circle on a beige background".

    Only what the domain draws is named: a sketch's captions read "a large circle left of a small
    square", "a sketch of a circle", "a sketch of a circle and a square", "a sketch of a large circle".
    """
    main = objects[0]
    relational = object_phrase(main, domain=domain)
    tails = [f"{spatial_relation(boxes[0], boxes[j])} {object_phrase(objects[j], domain=domain)}"
             for j in range(1, len(objects))]
    if tails:
        relational += " " + " and ".join(tails)
    noun = DOMAIN_NOUN[domain]
    if domain in COLOURLESS_DOMAINS:
        last = f"{article(noun)} {noun} of {object_phrase(main, domain=domain)}"
    else:
        texture = "" if main["texture"] == "solid" else f" {main['texture']}"
        last = f"{article(main['colour'])} {main['colour']}{texture} {main['shape']} on {article(background)} " \
               f"{background} background"
    return [
        relational,
        f"{article(noun)} {noun} of {object_phrase(main, 'shape')}",
        f"{article(noun)} {noun} of {_join([object_phrase(o, 'colour', domain) for o in objects])}",
        last,
    ]


def concepts_of(
    objects: list[dict[str, Any]],
    relations: list[dict[str, Any]],
    domain: str,
    background: str,
    marker: str | None,
    patterned: bool = False,
) -> list[str]:
    """The true concepts of an image, in a fixed order without repeats.

    Every object's shape, colour, texture and size, the domain, every relation
    word that holds, the background ("beige background") and the marker patch
    ("crimson patch") when there is one. Colours (of objects, background and
    marker) are left out where the domain draws none, textures where it draws
    none: a concept is true of an image only when its pixels show it. A patterned marker (``patterned``,
    "striped patch") is black and white, so every domain shows it.
    """
    colourless, textureless = domain in COLOURLESS_DOMAINS, domain in TEXTURELESS_DOMAINS
    words: list[str] = []
    for obj in objects:
        words += [obj["shape"], *([] if colourless else [obj["colour"]]),
                  *([] if textureless else [obj["texture"]]), obj["size"]]
    words.append(DOMAIN_CONCEPT[domain])
    words += [r["relation"] for r in relations]
    if not colourless:
        words.append(f"{background} background")
    if marker is not None and (patterned or not colourless):
        words.append(f"{marker} patch")
    return list(dict.fromkeys(words))


def annotate(scenes: SceneBatch, boxes: np.ndarray, image_side: int, *, patterned: bool = False) -> list[dict[str, Any]]:
    """Per-image ground-truth records (JSON-serialisable).

    Args:
        scenes: The rendered specifications.
        boxes: (n, K, 4) boxes from :func:`boxes_from_segmentation`.
        image_side: Image side in pixels.
        patterned: The marker patches are patterns (the ``"pattern"`` spurious cue): the marker is named
            from :data:`PATTERNS` and is a true concept in every domain.

    Returns:
        One dict per scene: ``class``, ``domain``, ``objects`` (shape, colour,
        texture, size, box), ``relations``, ``captions``, ``concepts``,
        ``background``, ``marker`` (name or None) and ``spurious_aligned``.
    """
    records: list[dict[str, Any]] = []
    shape, colour, texture, size = (a.tolist() for a in (scenes.shape, scenes.colour, scenes.texture, scenes.size))
    box_list = boxes.tolist()
    for i in range(len(scenes)):
        k = int(scenes.n_objects[i])
        objects = [
            {
                "shape": SHAPES[shape[i][j]],
                "colour": COLOURS[colour[i][j]],
                "texture": TEXTURES[texture[i][j]],
                "size": SIZES[size[i][j]],
                "box": box_list[i][j],
            }
            for j in range(k)
        ]
        obj_boxes = box_list[i][:k]
        relations = relations_of(obj_boxes, size[i][:k], image_side)
        domain = DOMAINS[int(scenes.domain[i])]
        background = BACKGROUNDS[int(scenes.background[i])]
        marker = marker_names(patterned)[int(scenes.marker[i])] if scenes.marker[i] >= 0 else None
        records.append(
            {
                "class": objects[0]["shape"],
                "domain": domain,
                "objects": objects,
                "relations": relations,
                "captions": captions_of(objects, obj_boxes, domain, background),
                "concepts": concepts_of(objects, relations, domain, background, marker, patterned),
                "background": background,
                "marker": marker,
                "spurious_aligned": bool(scenes.spurious_aligned[i]),
            }
        )
    return records
