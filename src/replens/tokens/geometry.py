"""Geometric relation predicates between detected objects (for extractor (b), paper section 6.4.1).

The paper extracts relations with RAM, a relation model trained on PSG; no such
model can be downloaded here, so real images get predicates read off the
geometry of the detections instead, in the vocabulary of the embedded world
(:data:`replens.world.RELATIONS`) plus ``inside`` and ``overlapping``:

* ``left of`` / ``right of`` / ``above`` / ``below``: along the axis on which
  the box centres differ most (the world's :func:`replens.world.annotate.spatial_relation`);
* ``inside``: at least ``inside_fraction`` of the subject's area lies in the object;
* ``overlapping``: the boxes overlap (IoU >= ``overlap_iou``) and neither is inside the other;
* ``next to``: the gap between the boxes is at most ``next_to_gap`` of the image side;
* ``bigger than`` / ``smaller than``: the areas (mask areas when masks are
  given) differ by more than ``size_ratio``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from replens.tokens.sample import box_centres

__all__ = ["GeometryConfig", "geometric_relations", "spatial_relation"]


def spatial_relation(box_a: Sequence[float], box_b: Sequence[float]) -> str:
    """Where box ``a`` is relative to box ``b`` along the axis of the larger centre difference.

    Returns:
        ``"left of"``, ``"right of"``, ``"above"`` or ``"below"`` (image y grows downwards).
    """
    dx = float(box_b[0] + box_b[2] - box_a[0] - box_a[2]) / 2
    dy = float(box_b[1] + box_b[3] - box_a[1] - box_a[3]) / 2
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


@dataclass(frozen=True)
class GeometryConfig:
    """Thresholds of the geometric predicates.

    Attributes:
        next_to_gap: Largest box gap, as a fraction of the larger image side, for ``next to``
            (0.06, the embedded world's value).
        inside_fraction: Smallest fraction of the subject's box area inside the object's box for ``inside``.
        overlap_iou: Smallest IoU for ``overlapping``.
        size_ratio: Area ratio above which ``bigger than`` / ``smaller than`` hold.
    """

    next_to_gap: float = 0.06
    inside_fraction: float = 0.9
    overlap_iou: float = 0.1
    size_ratio: float = 1.5


def _area(box: np.ndarray) -> float:
    return max(0.0, float(box[2] - box[0])) * max(0.0, float(box[3] - box[1]))


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, float(w)) * max(0.0, float(h))


def geometric_relations(
    boxes: np.ndarray,
    image_size: tuple[int, int],
    masks: np.ndarray | None = None,
    config: GeometryConfig | None = None,
) -> list[tuple[int, int, str]]:
    """Predicates for every ordered pair of objects.

    Args:
        boxes: (n, 4) pixel boxes ``x0, y0, x1, y1``.
        image_size: ``(height, width)`` in pixels.
        masks: Optional (n, H, W) bool masks (their areas decide the size predicates).
        config: Thresholds.

    Returns:
        ``(subject, object, predicate)`` triples. Pairs come nearest first (by
        box-centre distance), so that trimming to a context length keeps the
        relations between close objects; within a pair the spatial predicate
        comes first.
    """
    config = config or GeometryConfig()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape[0] != n:
            raise ValueError(f"{masks.shape[0]} masks for {n} boxes")
        areas = masks.reshape(n, -1).sum(axis=1).astype(np.float64)
    else:
        areas = np.array([_area(b) for b in boxes])
    side = float(max(image_size))
    centres = box_centres(boxes)
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    pairs.sort(key=lambda ab: (float(np.linalg.norm(centres[ab[0]] - centres[ab[1]])), min(ab), ab[0]))
    out: list[tuple[int, int, str]] = []
    for a, b in pairs:
        box_a, box_b = boxes[a], boxes[b]
        out.append((a, b, spatial_relation(box_a, box_b)))
        inter = _intersection(box_a, box_b)
        area_a, area_b = _area(box_a), _area(box_b)
        inside_ab = area_a > 0 and inter / area_a >= config.inside_fraction and area_a < area_b
        inside_ba = area_b > 0 and inter / area_b >= config.inside_fraction and area_b < area_a
        if inside_ab:
            out.append((a, b, "inside"))
        union = area_a + area_b - inter
        if not inside_ab and not inside_ba and union > 0 and inter / union >= config.overlap_iou:
            out.append((a, b, "overlapping"))
        gap_x = max(0.0, max(box_a[0], box_b[0]) - min(box_a[2], box_b[2]))
        gap_y = max(0.0, max(box_a[1], box_b[1]) - min(box_a[3], box_b[3]))
        if math.hypot(gap_x, gap_y) <= config.next_to_gap * side:
            out.append((a, b, "next to"))
        if areas[b] > 0 and areas[a] > config.size_ratio * areas[b]:
            out.append((a, b, "bigger than"))
        elif areas[a] > 0 and areas[b] > config.size_ratio * areas[a]:
            out.append((a, b, "smaller than"))
    return out
