"""Scene graphs of the embedded world's compositional sets (paper section 6.5.3 on the world).

:mod:`replens.world.compositional` returns images and captions but no masks;
a token encoder needs the objects' masks and relations. The sets are rendered
from seeded scene specifications, so this module rebuilds those
specifications with the same public builders and seeds, renders them again
with their segmentation, and checks pixel for pixel that the images are the
ones the set returned (a mismatch raises instead of scoring wrong masks).
Relations come from :func:`replens.world.annotate.relations_of`, exactly as
for the world's own records.

To be removed if the world's sets start carrying their segmentations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from replens.tokens.extract import SceneGraph
from replens.world import compositional as comp
from replens.world.annotate import boxes_from_segmentation, relations_of
from replens.world.render import render_scenes
from replens.world.scene import SceneBatch
from replens.world.vocab import COLOURS, SHAPES, SIZES, TEXTURES

__all__ = ["CompositionalSet", "world_compositional_sets"]

KINDS = ("attribute_swap", "relation_swap", "word_order", "groups")


@dataclass
class CompositionalSet:
    """One compositional set with the scene graphs of its images.

    Attributes:
        kind: ``attribute_swap`` (VG-Attribution-like), ``relation_swap``
            (VG-Relation-like), ``word_order`` (COCO-Order-like) or ``groups`` (Winoground-like).
        images: (N, H, W, 3) uint8 the captions are about; for ``groups`` (N, 2, H, W, 3).
        graphs: One :class:`SceneGraph` per image (``groups``: two per item).
        captions: Per item, the candidate captions, true first (``groups``: caption k of image k).
    """

    kind: str
    images: np.ndarray
    graphs: list[Any]
    captions: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.captions)


def _graphs(seg: np.ndarray, scenes: Any, size: int) -> list[SceneGraph]:
    boxes = boxes_from_segmentation(seg, 2)
    graphs = []
    for i in range(len(seg)):
        keep = [k for k in range(2) if boxes[i, k, 0] >= 0]
        b = boxes[i, keep].astype(np.float32)
        sizes = [int(scenes.size[i, k]) for k in keep]
        rels = relations_of(b.astype(int).tolist(), sizes, size)
        names = []
        for k in keep:
            texture = TEXTURES[scenes.texture[i, k]]
            texture = "" if texture == "solid" else f" {texture}"
            size_word, colour = SIZES[scenes.size[i, k]], COLOURS[scenes.colour[i, k]]
            names.append(f"{size_word} {colour}{texture} {SHAPES[scenes.shape[i, k]]}")
        masks = np.stack([seg[i] == k + 1 for k in keep]) if keep else np.zeros((0, size, size), dtype=bool)
        graphs.append(
            SceneGraph(
                boxes=b,
                relations=[(r["subject"], r["object"], r["relation"]) for r in rels],
                image_size=(size, size),
                masks=masks,
                names=names,
            )
        )
    return graphs


def _check(rendered: np.ndarray, expected: np.ndarray, kind: str) -> None:
    if rendered.shape != expected.shape or not np.array_equal(rendered, expected):
        raise RuntimeError(
            f"re-rendering the world's {kind} set did not reproduce its images; replens.world.compositional "
            "changed how it builds scenes, so replens.tokens.world must follow"
        )


def world_compositional_sets(
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    kinds: Sequence[str] = KINDS,
) -> dict[str, CompositionalSet]:
    """The world's ARO-like and Winoground-like sets with scene graphs for every image.

    Args:
        n: Items per set.
        size: Image side (use the training world's size).
        seed: Seed of the sets (as in :func:`replens.world.attribute_swap_set` etc.).
        domains: Render domains (default: the world's colour domains).
        kinds: Which sets.

    Returns:
        ``{kind: CompositionalSet}``.

    Raises:
        RuntimeError: The re-rendered images differ from the set's images.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown compositional sets {unknown}; choose from {KINDS}")
    domains = tuple(domains or comp.COLOUR_DOMAINS)
    out: dict[str, CompositionalSet] = {}
    rng = comp._rng  # the sets' own seeding; verified below by re-rendering
    if "attribute_swap" in kinds or "relation_swap" in kinds:
        for kind, build, edit in (
            ("attribute_swap", comp.attribute_swap_set, comp.swap_colours),
            ("relation_swap", comp.relation_swap_set, comp.swap_positions),
        ):
            if kind not in kinds:
                continue
            items = build(n, size=size, domains=domains, seed=seed)
            scenes = comp.pair_scenes(rng(seed, kind), n, domains)
            images, seg = render_scenes(SceneBatch.concat([scenes, edit(scenes)]), size)
            _check(images[:n], np.stack([it.image for it in items]), kind)
            out[kind] = CompositionalSet(
                kind, images[:n], _graphs(seg[:n], scenes, size), [tuple(it.captions) for it in items]
            )
    if "word_order" in kinds:
        items = comp.word_order_set(n, size=size, domains=domains, seed=seed)
        scenes = comp.pair_scenes(rng(seed, "word_order"), n, domains)
        images, seg = render_scenes(scenes, size)
        _check(images, np.stack([it.image for it in items]), "word_order")
        out["word_order"] = CompositionalSet(
            "word_order", images, _graphs(seg, scenes, size), [tuple(it.captions) for it in items]
        )
    if "groups" in kinds:
        groups = comp.winoground_groups(n, size=size, domains=domains, seed=seed)
        scenes = comp.pair_scenes(rng(seed, "groups"), n, domains)
        # the edit of winoground_groups: relation groups trade places, attribute groups trade colours
        is_relation = np.array([g.kind == "relation" for g in groups], dtype=bool)
        by_position, edited = comp.swap_positions(scenes), comp.swap_colours(scenes)
        edited.cx[is_relation], edited.cy[is_relation] = by_position.cx[is_relation], by_position.cy[is_relation]
        edited.colour[is_relation] = scenes.colour[is_relation]
        images, seg = render_scenes(SceneBatch.concat([scenes, edited]), size)
        expected = np.stack([np.stack(g.images) for g in groups])
        pairs = np.stack([images[:n], images[n:]], axis=1)
        _check(pairs, expected, "groups")
        first, second = _graphs(seg[:n], scenes, size), _graphs(seg[n:], edited, size)
        out["groups"] = CompositionalSet(
            "groups", pairs, [(a, b) for a, b in zip(first, second, strict=True)], [tuple(g.captions) for g in groups]
        )
    return out
