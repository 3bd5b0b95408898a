"""Scene specifications: what is in an image, sampled for a whole batch at once.

A :class:`SceneBatch` is a struct of numpy arrays (one row per scene, one column
per object slot) holding *every* random choice of a scene, including the seeds
of the pixel noise. Rendering (:func:`replens.world.render.render_scenes`) is a
pure function of it, so an edited specification (two colours swapped, two
objects moved) renders to an image that differs from the original only where
the edit says, which is what the compositional sets need.

Geometry is stored in fractions of the image side, so one specification renders
at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from replens.world.vocab import (
    BACKGROUNDS,
    COLOURS,
    DOMAINS,
    PATCH_CUES,
    SHAPES,
    SIZE_RADIUS,
    SPURIOUS_CUES,
    TEXTURES,
)

#: Every shape lies inside ``EXTENT * radius`` of its centre, whatever its rotation.
EXTENT = 1.25
#: The exact reach of each shape (in radii, measured on its inside test),
#: rounded up; placement uses it so that objects never overlap.
SHAPE_EXTENT: tuple[float, ...] = (1.01, 1.17, 1.21, 1.21, 1.21, 1.07, 1.05, 1.17, 1.01, 1.11)
if len(SHAPE_EXTENT) != len(SHAPES):
    raise RuntimeError("SHAPE_EXTENT must follow SHAPES")
#: Side of the corner marker patch, as a fraction of the image side.
MARKER_SIDE = 0.2
#: Smallest empty gap between two objects (and an object and the marker), fraction of side.
GAP = 0.025
#: Largest absolute object rotation, radians.
MAX_ANGLE = np.deg2rad(25.0)
#: Placement candidates tried per object before the object is dropped.
CANDIDATES = 64
#: Probability of 1, 2 and 3 objects in a scene (renormalised over the counts ``max_objects`` allows):
#: one dominant object, distractors optional (generator 2.0; 1.x drew 1-3 uniformly).
OBJECT_COUNT_PROBS: tuple[float, ...] = (0.6, 0.3, 0.1)
#: Size classes the main object may take (every other object is of a strictly smaller class):
#: medium or large since generator 2.0.
MAIN_SIZES: tuple[int, ...] = (1, 2)
#: Probability that a scene has the corner marker patch (the carrier of the ``"marker"`` spurious cue).
MARKER_PROB = 1.0


@dataclass
class SceneBatch:
    """Specifications of ``n`` scenes with up to ``K`` objects each.

    Object slot 0 is the main object (the largest; its shape is the class label);
    unused slots hold -1 (attributes) or 0 (geometry).

    Attributes:
        domain: (n,) int16, index into :data:`~replens.world.vocab.DOMAINS`.
        n_objects: (n,) int8, objects present (1..K).
        shape: (n, K) int8, index into ``SHAPES``.
        colour: (n, K) int8, index into ``COLOURS``.
        texture: (n, K) int8, index into ``TEXTURES``.
        size: (n, K) int8, index into ``SIZES``.
        cx: (n, K) float32, centre x as a fraction of the side.
        cy: (n, K) float32, centre y as a fraction of the side (down is positive).
        angle: (n, K) float32, rotation in radians.
        jitter: (n, K, 3) int16, per-object colour jitter added in colour domains.
        background: (n,) int8, index into ``BACKGROUNDS``.
        marker: (n,) int8, index into ``MARKERS`` or -1 when there is no marker patch.
        marker_corner: (n,) int8, 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
        spurious_aligned: (n,) bool, whether the spurious cue was tied to the class.
        style: (n, 4) float32, background gradient angle, texture frequencies
            (x, y) and phase.
        noise_seed: (n,) uint32, seed of the per-pixel noise (hashed, so it does
            not depend on the batch a scene is rendered in).
    """

    domain: np.ndarray
    n_objects: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    size: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    jitter: np.ndarray
    background: np.ndarray
    marker: np.ndarray
    marker_corner: np.ndarray
    spurious_aligned: np.ndarray
    style: np.ndarray
    noise_seed: np.ndarray

    def __len__(self) -> int:
        return int(self.domain.shape[0])

    @property
    def max_objects(self) -> int:
        """Number of object slots ``K``."""
        return int(self.shape.shape[1])

    @property
    def labels(self) -> np.ndarray:
        """(n,) int64 class labels: the shape of the main object."""
        return self.shape[:, 0].astype(np.int64)

    def take(self, index: np.ndarray | slice) -> SceneBatch:
        """Return the scenes selected by ``index`` (a copy)."""
        return SceneBatch(**{f.name: np.array(getattr(self, f.name)[index]) for f in fields(self)})

    def copy(self) -> SceneBatch:
        """Return a deep copy (edit it freely)."""
        return self.take(slice(None))

    @staticmethod
    def concat(batches: list[SceneBatch]) -> SceneBatch:
        """Concatenate batches with the same number of object slots."""
        return SceneBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(SceneBatch)})


def _distance_to_marker(x: np.ndarray, y: np.ndarray, corner: np.ndarray) -> np.ndarray:
    """Distance from points to the marker square in its corner (0 inside it)."""
    # Mirror so that every corner becomes the top-left one.
    xm = np.where(corner % 2 == 1, 1.0 - x, x)
    ym = np.where(corner // 2 == 1, 1.0 - y, y)
    return np.hypot(np.maximum(xm - MARKER_SIDE, 0.0), np.maximum(ym - MARKER_SIDE, 0.0))


def place_objects(
    rng: np.random.Generator,
    size: np.ndarray,
    shape: np.ndarray,
    n_objects: np.ndarray,
    marker_corner: np.ndarray,
    has_marker: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place objects without overlap, vectorised over scenes (rejection sampling).

    Object ``k`` tries :data:`CANDIDATES` uniformly drawn centres and takes the
    first one that keeps :data:`GAP` from every placed object and from the
    marker patch; a scene whose object ``k`` finds no room keeps only its first
    ``k`` objects (the main object always finds room).

    Args:
        rng: Source of randomness.
        size: (n, K) size indices (-1 for unused slots).
        shape: (n, K) shape indices (-1 for unused slots).
        n_objects: (n,) requested object counts.
        marker_corner: (n,) corner of the marker patch.
        has_marker: (n,) whether the scene has a marker patch.

    Returns:
        ``(cx, cy, n_objects)``: (n, K) float32 centres (0 for unused slots) and
        the (n,) object counts actually placed.
    """
    n, k_max = size.shape
    radius = np.asarray(SIZE_RADIUS)[np.maximum(size, 0)]
    reach = np.asarray(SHAPE_EXTENT)[np.maximum(shape, 0)] * radius  # (n, K)
    cx = np.zeros((n, k_max))
    cy = np.zeros((n, k_max))
    placed = np.zeros((n, k_max), dtype=bool)
    count = n_objects.astype(np.int64).copy()
    for k in range(k_max):
        low = reach[:, k, None] + 0.01
        span = np.maximum(1.0 - 2.0 * low, 0.0)
        x = low + rng.random((n, CANDIDATES)) * span
        y = low + rng.random((n, CANDIDATES)) * span
        ok = np.ones((n, CANDIDATES), dtype=bool)
        for j in range(k):
            dist = np.hypot(x - cx[:, j, None], y - cy[:, j, None])
            ok &= ~placed[:, j, None] | (dist >= reach[:, k, None] + reach[:, j, None] + GAP)
        corner = np.broadcast_to(marker_corner[:, None], (n, CANDIDATES))
        marker_dist = _distance_to_marker(x, y, corner)
        ok &= ~has_marker[:, None] | (marker_dist >= reach[:, k, None] + GAP)
        found = ok.any(axis=1)
        first = ok.argmax(axis=1)
        rows = np.arange(n)
        wanted = k < count
        if k == 0:
            # The image centre is always free of the corner patch.
            x_k = np.where(found, x[rows, first], 0.5)
            y_k = np.where(found, y[rows, first], 0.5)
            found = np.ones(n, dtype=bool)
        else:
            x_k, y_k = x[rows, first], y[rows, first]
        take = wanted & found
        cx[:, k] = np.where(take, x_k, 0.0)
        cy[:, k] = np.where(take, y_k, 0.0)
        placed[:, k] = take
        count = np.where(wanted & ~found, k, count)
    return cx.astype(np.float32), cy.astype(np.float32), count.astype(np.int8)


def _sample_objects(rng: np.random.Generator, n: int, k_max: int) -> dict[str, np.ndarray]:
    """Requested object counts and every object slot's shape, colour, texture, size, angle and jitter."""
    count_probs = np.asarray(OBJECT_COUNT_PROBS[:k_max], dtype=np.float64)
    requested = rng.choice(np.arange(1, k_max + 1), size=n, p=count_probs / count_probs.sum())
    shape = rng.integers(len(SHAPES), size=(n, k_max))
    colour = rng.integers(len(COLOURS), size=(n, k_max))
    texture = rng.integers(len(TEXTURES), size=(n, k_max))
    # The main object is strictly the largest so that the label is visible in the pixels: in scenes with
    # several objects it is medium or large and every other object is a smaller size class.
    main_choices = np.asarray(MAIN_SIZES)
    main_size = main_choices[rng.integers(len(main_choices), size=n)]
    bigger_choices = main_choices[main_choices > 0]
    bigger = bigger_choices[rng.integers(len(bigger_choices), size=n)]
    main_size = np.where((requested > 1) & (main_size == 0), bigger, main_size)
    other_size = np.floor(rng.random((n, k_max)) * main_size[:, None]).astype(np.int64)
    size = np.concatenate([main_size[:, None], other_size[:, 1:]], axis=1)
    angle = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=(n, k_max))
    jitter = rng.integers(-12, 13, size=(n, k_max, 3))
    return {"requested": requested, "shape": shape, "colour": colour, "texture": texture, "size": size,
            "angle": angle, "jitter": jitter}


def _sample_cue(
    rng: np.random.Generator, labels: np.ndarray, spurious: float, spurious_cue: str, train: bool
) -> dict[str, np.ndarray]:
    """The spurious cue (tied to ``labels`` with probability ``spurious`` on the train split) and the marker."""
    n = len(labels)
    aligned = rng.random(n) < spurious if train else np.zeros(n, dtype=bool)
    cue = np.where(aligned, labels, rng.integers(len(SHAPES), size=n))
    random_background = rng.integers(len(BACKGROUNDS), size=n)
    marker_corner = rng.integers(4, size=n)
    has_marker = rng.random(n) < MARKER_PROB
    if spurious_cue in PATCH_CUES:
        background = random_background
        marker = np.where(has_marker, cue, -1)
    else:
        background = cue
        marker = np.full(n, -1)
    return {"aligned": aligned, "background": background, "marker": marker, "marker_corner": marker_corner}


def _sample_style(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4) background gradient angle, texture frequencies (x, y) and phase."""
    return np.stack(
        [
            rng.uniform(0.0, 2.0 * np.pi, size=n),
            rng.uniform(1.0, 4.0, size=n),
            rng.uniform(1.0, 4.0, size=n),
            rng.uniform(0.0, 2.0 * np.pi, size=n),
        ],
        axis=1,
    )


def sample_scenes(
    rng: np.random.Generator,
    n: int,
    *,
    domains: tuple[str, ...] = DOMAINS[:4],
    max_objects: int = 3,
    spurious: float = 0.0,
    spurious_cue: str = "marker",
    train: bool = True,
) -> SceneBatch:
    """Sample ``n`` scene specifications (vectorised).

    Each scene gets one domain drawn uniformly from ``domains``, 1 to
    ``max_objects`` objects with uniform shape, colour and texture; the main
    object (slot 0) has a uniform size and the others are strictly smaller. With
    probability ``spurious`` (train split only) the spurious cue (the marker
    patch colour or the background colour, see ``spurious_cue``) is the one
    tied to the class; otherwise it is uniform, independent of the class. This
    is the core/spurious split of the paper's section 3.5 with a known answer.

    Args:
        rng: Source of randomness.
        n: Number of scenes.
        domains: Domain names to draw from.
        max_objects: Object slots ``K`` (1..3 objects are drawn, at most K).
        spurious: Probability that the cue is tied to the class (train only).
        spurious_cue: ``"marker"`` (a coloured corner patch), ``"background"`` or ``"pattern"`` (a
            patterned corner patch).
        train: Whether this is the train split (the knob is off otherwise).

    Returns:
        The sampled :class:`SceneBatch`.
    """
    if spurious_cue not in SPURIOUS_CUES:
        raise ValueError(f"spurious_cue must be one of {SPURIOUS_CUES}, got {spurious_cue!r}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    k_max = max_objects
    # the draws happen in this order (domain, objects, cue, style, noise, placement): it fixes the worlds
    domain_index = np.array([DOMAINS.index(d) for d in domains], dtype=np.int16)
    domain = domain_index[rng.integers(len(domains), size=n)]
    obj = _sample_objects(rng, n, k_max)
    cue = _sample_cue(rng, obj["shape"][:, 0], spurious, spurious_cue, train)
    style = _sample_style(rng, n)
    noise_seed = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)

    cx, cy, count = place_objects(rng, obj["size"], obj["shape"], obj["requested"], cue["marker_corner"],
                                  cue["marker"] >= 0)
    unused = np.arange(k_max)[None, :] >= count[:, None]
    return SceneBatch(
        domain=domain.astype(np.int16),
        n_objects=count,
        shape=np.where(unused, -1, obj["shape"]).astype(np.int8),
        colour=np.where(unused, -1, obj["colour"]).astype(np.int8),
        texture=np.where(unused, -1, obj["texture"]).astype(np.int8),
        size=np.where(unused, -1, obj["size"]).astype(np.int8),
        cx=cx,
        cy=cy,
        angle=np.where(unused, 0.0, obj["angle"]).astype(np.float32),
        jitter=np.where(unused[..., None], 0, obj["jitter"]).astype(np.int16),
        background=cue["background"].astype(np.int8),
        marker=cue["marker"].astype(np.int8),
        marker_corner=cue["marker_corner"].astype(np.int8),
        spurious_aligned=cue["aligned"],
        style=style.astype(np.float32),
        noise_seed=noise_seed,
    )
