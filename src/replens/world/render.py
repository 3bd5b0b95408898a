"""Vectorised rendering of scene specifications into images and segmentations.

Objects are rasterised in small per-object windows (one numpy expression per
shape for all objects of that shape in the batch) and scattered into a padded
canvas with flat indices; no Python loop runs over pixels or scenes. Domain
styles (paper section 2.3 for the Colored-CIFAR tints, PACS for the others) then
act on whole groups of images.

Pixel noise comes from a counter-based hash of ``(noise_seed, y, x)``, so a
scene renders to the same pixels whichever batch it is rendered in.

The segmentation map is ``0`` for background, ``k + 1`` for object slot ``k``
and :data:`MARKER_LABEL` for the marker patch; objects never overlap, so it
holds every instance mask without loss.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from replens.world.scene import EXTENT, MARKER_SIDE, SceneBatch
from replens.world.vocab import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    DOMAINS,
    MARKER_GRAY,
    MARKER_RGB,
    PATTERNS,
    SHAPES,
    SIZE_RADIUS,
    TEXTURES,
)

#: Segmentation value of the marker patch.
MARKER_LABEL = 255

_COLOUR_TABLE = np.array(list(COLOUR_RGB.values()), dtype=np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SECONDARY_TABLE = np.where(
    (_COLOUR_TABLE @ _LUMA)[:, None] > 120.0,
    _COLOUR_TABLE * 0.5,
    _COLOUR_TABLE + (255.0 - _COLOUR_TABLE) * 0.55,
).astype(np.float32)
_BACKGROUND_TABLE = np.array(list(BACKGROUND_RGB.values()), dtype=np.float32)
_MARKER_TABLE = np.array(list(MARKER_RGB.values()), dtype=np.float32)
_MARKER_GRAY = np.array(MARKER_GRAY, dtype=np.float32)
_TINTS = {
    "tint_red": np.array([1.0, 0.22, 0.22], dtype=np.float32),
    "tint_green": np.array([0.22, 1.0, 0.22], dtype=np.float32),
}

ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Photo background: gradient and sinusoid amplitudes (multiplicative) and pixel-noise amplitude (grey levels).
PHOTO_GRADIENT, PHOTO_SINE, PHOTO_NOISE = 0.25, 0.04, 14.0
#: Painting: amplitude of the low-frequency colour field on background and objects, and its channels
#: (3: a colour field, 1: a luminance field).
PAINT_FIELD_BACKGROUND, PAINT_FIELD_OBJECT, PAINT_FIELD_CHANNELS = 0.35, 0.3, 3
#: Photo: brightness of the background under an object's drop shadow (1: no shadow). A shadow keeps the
#: silhouette readable when object and background have the same luminance (grayscale views).
PHOTO_SHADOW = 0.55
#: Painting: brightness of the painted contour along object edges (1: no contour).
PAINT_CONTOUR = 0.4


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    outer, inner, half = 1.2, 0.56, np.pi / 5
    rho = np.hypot(u, v)
    folded = np.abs(np.mod(np.arctan2(u, v) + half, 2 * half) - half)
    px, py = rho * np.cos(folded), rho * np.sin(folded)
    bx, by = inner * np.cos(half) - outer, inner * np.sin(half)
    return bx * py - by * (px - outer) >= 0


#: Inside tests in object coordinates (u right, v up, unit = object radius);
#: every shape stays within :data:`~replens.world.scene.EXTENT` of the centre.
SHAPE_TESTS: dict[str, ShapeFn] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.82,
    "triangle": lambda u, v: (v >= -0.6) & (1.7320508 * np.abs(u) + v <= 1.2),
    "diamond": lambda u, v: np.abs(u) / 0.9 + np.abs(v) / 1.2 <= 1.0,
    "star": _star,
    "cross": lambda u, v: ((np.abs(u) <= 0.34) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.34) & (np.abs(u) <= 1.0)),
    # generator 2.0: an arrow replaced the hexagon, which a small CNN cannot tell from a circle at 32 px
    "arrow": lambda u, v: ((u >= -1.0) & (u <= 0.05) & (np.abs(v) <= 0.3)) | ((u >= 0.0) & (np.abs(v) <= 0.85 * (1.0 - u))),
    "heart": lambda u, v: (
        ((1.15 * u) ** 2 + (1.15 * v + 0.12) ** 2 - 1.0) ** 3 - (1.15 * u) ** 2 * (1.15 * v + 0.12) ** 3 <= 0.0
    ),
    "ring": lambda u, v: np.abs(u * u + v * v - 0.68) <= 0.32,
    "crescent": lambda u, v: (u * u + v * v <= 1.21) & ((u - 0.55) ** 2 + v * v >= 0.81),
}
if tuple(SHAPE_TESTS) != SHAPES:
    raise RuntimeError("SHAPE_TESTS must follow SHAPES")

#: Where a texture uses its second tone, in pattern coordinates (one period = 1).
TEXTURE_TESTS: dict[str, ShapeFn] = {
    "solid": lambda u, v: np.zeros(u.shape, dtype=bool),
    "striped": lambda u, v: np.mod(u, 1.0) < 0.5,
    "dotted": lambda u, v: (np.mod(u, 1.0) - 0.5) ** 2 + (np.mod(v, 1.0) - 0.5) ** 2 < 0.09,
    "checkered": lambda u, v: (np.floor(2 * u) + np.floor(2 * v)) % 2 == 1,
}
if tuple(TEXTURE_TESTS) != TEXTURES:
    raise RuntimeError("TEXTURE_TESTS must follow TEXTURES")


# --------------------------------------------------------------------------- noise
def _u32(value: int) -> np.uint32:
    return np.uint32(value & 0xFFFFFFFF)


@lru_cache(maxsize=16)
def _position_keys(height: int, width: int) -> np.ndarray:
    y = np.arange(height, dtype=np.uint32)[:, None] * _u32(0x85EBCA77)
    x = np.arange(width, dtype=np.uint32)[None, :] * _u32(0xC2B2AE3D)
    keys = (y ^ (x + _u32(0x165667B1))).astype(np.uint32)
    keys.setflags(write=False)
    return keys


def hash_uniform(seeds: np.ndarray, height: int, width: int, salt: int) -> np.ndarray:
    """Counter-based uniform noise in [0, 1): one field per seed.

    Args:
        seeds: (m,) uint32 per-scene seeds.
        height: Rows of the field.
        width: Columns of the field.
        salt: Distinguishes independent fields of the same scene.

    Returns:
        (m, height, width) float32, a deterministic function of ``(seed, salt, y, x)``.
    """
    s = seeds.astype(np.uint32) * _u32(0x9E3779B1) + _u32(salt * 0x27D4EB2F + 0x7F4A7C15)
    x = s[:, None, None] ^ _position_keys(height, width)[None]
    x ^= x >> np.uint32(16)
    x *= _u32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= _u32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return (x >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


@lru_cache(maxsize=16)
def _interpolation_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) weights of a smooth (cosine) interpolation from a coarse grid."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    low = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = pos - low
    frac = (1 - np.cos(np.pi * frac)) / 2
    out = np.zeros((size, grid), dtype=np.float32)
    out[np.arange(size), low] = 1 - frac
    out[np.arange(size), low + 1] = frac
    return out


def smooth_field(seeds: np.ndarray, size: int, grid: int, channels: int, salt: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random ``grid x grid`` lattice, interpolated.

    Returns:
        (m, size, size, channels) float32.
    """
    m = seeds.shape[0]
    lattice = hash_uniform(seeds, grid, grid * channels, salt).reshape(m, grid, grid * channels)
    interp = _interpolation_matrix(size, grid)
    rows = np.matmul(interp, lattice).reshape(m, size, grid, channels)  # (m, H, g, c)
    return np.einsum("wj,mhjc->mhwc", interp, rows, optimize=True)


# ------------------------------------------------------------------- rasterising
def _rasterise(
    scenes: SceneBatch, size: int, background_rgb: np.ndarray, marker_rgb: np.ndarray, patterned: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw every object of every scene onto a flat background.

    Args:
        scenes: The specifications.
        size: Image side in pixels.
        background_rgb: (n, 3) uint8 background colour of each scene.
        marker_rgb: (n, 3) uint8 marker colour of each scene.
        patterned: Draw the marker patch as its black-and-white pattern (:func:`pattern_mask`), not its colour.

    Returns:
        ``(segmentation, flat, shade)``: (n, H, W) uint8 labels, (n, H, W, 3)
        uint8 flat image (background, textured objects, marker patch) and
        (n, H, W) float32 photo shading of the objects (1 elsewhere).
    """
    n = len(scenes)
    seg = np.zeros((n, size, size), dtype=np.uint8)
    flat = np.empty((n, size, size, 3), dtype=np.uint8)
    flat[:] = background_rgb[:, None, None, :]
    shade = np.ones((n, size, size), dtype=np.float32)
    canvas = seg.reshape(-1), flat.reshape(-1, 3), shade.reshape(-1)

    scene_idx, slot = np.nonzero(np.arange(scenes.max_objects)[None, :] < scenes.n_objects[:, None])
    for size_class, radius_frac in enumerate(SIZE_RADIUS):
        pick = scenes.size[scene_idx, slot] == size_class
        if pick.any():
            _draw_objects(scenes, scene_idx[pick], slot[pick], np.float32(radius_frac * size), size, canvas)
    _draw_markers(scenes, size, marker_rgb, seg, flat, patterned)
    return seg, flat, shade


def _object_frames(
    scenes: SceneBatch, sc: np.ndarray, sl: np.ndarray, radius: np.float32, size: int
) -> tuple[np.ndarray, ...]:
    """Pixel windows around ``m`` objects and their coordinates in each object's frame.

    Returns:
        ``(rows, cols, ddx, ddy, u, v)``: (m, w) pixel rows and columns of the
        windows, the (m, 1, w) / (m, w, 1) offsets from the centres in radii,
        and the (m, w, w) rotated coordinates (u to the right, v upwards).
    """
    half = int(np.ceil(EXTENT * radius)) + 1
    offsets = np.arange(-half, half + 1)
    centre_x = scenes.cx[sc, sl] * size
    centre_y = scenes.cy[sc, sl] * size
    cols = np.floor(centre_x).astype(np.int64)[:, None] + offsets  # (m, w)
    rows = np.floor(centre_y).astype(np.int64)[:, None] + offsets
    dx = (cols + 0.5 - centre_x[:, None]).astype(np.float32) / radius
    dy = (rows + 0.5 - centre_y[:, None]).astype(np.float32) / radius
    cos = np.cos(scenes.angle[sc, sl]).astype(np.float32)[:, None, None]
    sin = np.sin(scenes.angle[sc, sl]).astype(np.float32)[:, None, None]
    ddx, ddy = dx[:, None, :], dy[:, :, None]
    u = ddx * cos + ddy * sin  # (m, w, w), u to the right
    v = ddx * sin - ddy * cos  # v upwards
    return rows, cols, ddx, ddy, u, v


def _shape_and_pattern(
    scenes: SceneBatch, sc: np.ndarray, sl: np.ndarray, u: np.ndarray, v: np.ndarray, radius: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, second)``: which window pixels the shapes cover, and which of those take the texture's second colour."""
    shape_id = scenes.shape[sc, sl]
    texture_id = scenes.texture[sc, sl]
    inside = np.zeros(u.shape, dtype=bool)
    for s, test in enumerate(SHAPE_TESTS.values()):
        sel = shape_id == s
        if sel.any():
            inside[sel] = test(u[sel], v[sel])
    # Pattern period: half a radius, but never under 4 pixels.
    period = np.float32(max(0.5, 4.0 / float(radius)))
    second = np.zeros(u.shape, dtype=bool)
    for t, test in enumerate(TEXTURE_TESTS.values()):
        sel = texture_id == t
        if sel.any() and t > 0:
            second[sel] = test(u[sel] / period, v[sel] / period)
    return inside, second


def _draw_objects(
    scenes: SceneBatch, sc: np.ndarray, sl: np.ndarray, radius: np.float32, size: int,
    canvas: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Draw the objects ``(sc, sl)`` (scene, slot) of one radius into the flattened ``(seg, colour, shade)`` canvas."""
    seg_flat, colour_flat, shade_flat = canvas
    rows, cols, ddx, ddy, u, v = _object_frames(scenes, sc, sl, radius, size)
    inside, second = _shape_and_pattern(scenes, sc, sl, u, v, radius)

    colour_id = scenes.colour[sc, sl]
    jitter = scenes.jitter[sc, sl].astype(np.float32)
    primary = np.clip(_COLOUR_TABLE[colour_id] + jitter, 0, 255).astype(np.uint8)
    secondary = np.clip(_SECONDARY_TABLE[colour_id] + jitter, 0, 255).astype(np.uint8)
    light = np.clip(1.05 - 0.28 * (ddx + ddy) / np.float32(EXTENT), 0.6, 1.4)

    inside &= ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    flat_index = (sc[:, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]
    target = flat_index[inside]
    seg_flat[target] = np.broadcast_to((sl + 1).astype(np.uint8)[:, None, None], u.shape)[inside]
    obj_of_pixel = np.broadcast_to(np.arange(len(sc))[:, None, None], u.shape)[inside]
    colour_flat[target] = np.where(second[inside][:, None], secondary[obj_of_pixel], primary[obj_of_pixel])
    shade_flat[target] = light[inside]


#: Grey levels of a pattern's dark and light pixels.
PATTERN_DARK, PATTERN_LIGHT = 20, 240


def pattern_mask(index: int, side: int) -> np.ndarray:
    """(side, side) bool: the dark pixels of pattern ``index`` (its name is ``PATTERNS[index]``).

    Every pattern is symmetric under a horizontal flip (a view SSL training uses), and the ten are
    distinct at any side of at least 4 pixels: horizontal stripes (period 2), vertical bars, a one-pixel
    checkerboard, two-pixel tiles, a frame, a plus, a diagonal cross, a central spot, solid dark, and
    wide horizontal bands (period 4).
    """
    if not 0 <= index < len(PATTERNS):
        raise ValueError(f"pattern index must lie in [0, {len(PATTERNS)}), got {index}")
    y, x = np.mgrid[0:side, 0:side]
    mid = (side - 1) / 2.0
    edge = (x == 0) | (y == 0) | (x == side - 1) | (y == side - 1)
    masks = (
        y % 2 == 0,
        (np.minimum(x, side - 1 - x) % 2 == 0),
        (np.minimum(x, side - 1 - x) + y) % 2 == 0,
        ((np.minimum(x, side - 1 - x) // 2) + (y // 2)) % 2 == 0,
        edge,
        (np.abs(x - mid) < 1) | (np.abs(y - mid) < 1),
        (x == y) | (x == side - 1 - y),
        (np.abs(x - mid) < 1.5) & (np.abs(y - mid) < 1.5),
        np.ones((side, side), dtype=bool),
        (y // 2) % 2 == 0,
    )
    return np.asarray(masks[index], dtype=bool)


def _draw_markers(scenes: SceneBatch, size: int, marker_rgb: np.ndarray, seg: np.ndarray, flat: np.ndarray,
                  patterned: bool = False) -> None:
    """Paint each marked scene's corner patch (label :data:`MARKER_LABEL`) in place: colour ``marker_rgb``,
    or with ``patterned`` the patch's pattern (:func:`pattern_mask`) in dark and light grey."""
    marker_side = max(2, int(round(MARKER_SIDE * size)))
    if patterned:
        tiles = np.stack([pattern_mask(k, marker_side) for k in range(len(PATTERNS))])
        tiles = np.where(tiles, PATTERN_DARK, PATTERN_LIGHT).astype(np.uint8)[..., None]  # (P, s, s, 1)
    for corner in range(4):
        sel = np.nonzero((scenes.marker >= 0) & (scenes.marker_corner == corner))[0]
        if sel.size:
            ys = slice(0, marker_side) if corner < 2 else slice(size - marker_side, size)
            xs = slice(0, marker_side) if corner % 2 == 0 else slice(size - marker_side, size)
            seg[sel, ys, xs] = MARKER_LABEL
            if patterned:
                flat[sel, ys, xs] = tiles[scenes.marker[sel]]
            else:
                flat[sel, ys, xs] = marker_rgb[sel][:, None, None, :]


def boundary(seg: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` (4-neighbour steps along an axis) of a label change.

    Args:
        seg: (m, H, W) label maps.
        width: Half thickness of the boundary band.

    Returns:
        (m, H, W) bool.
    """
    out = np.zeros(seg.shape, dtype=bool)
    for d in range(1, width + 1):
        a = seg[:, d:, :] != seg[:, :-d, :]
        out[:, d:, :] |= a
        out[:, :-d, :] |= a
        b = seg[:, :, d:] != seg[:, :, :-d]
        out[:, :, d:] |= b
        out[:, :, :-d] |= b
    return out


def _box_blur(image: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Box blur of half width ``radius`` along ``axis``, edges clamped (float32, via cumsum)."""
    pad_width = [(0, 0)] * image.ndim
    pad_width[axis] = (radius + 1, radius)
    padded = np.pad(image, pad_width, mode="edge")
    index = [slice(None)] * image.ndim
    index[axis] = slice(0, 1)
    padded[tuple(index)] = 0.0  # cumsum starts from zero
    total = np.cumsum(padded, axis=axis, dtype=np.float32)
    length = image.shape[axis]
    hi, lo = list(index), list(index)
    hi[axis] = slice(2 * radius + 1, 2 * radius + 1 + length)
    lo[axis] = slice(0, length)
    out = total[tuple(hi)] - total[tuple(lo)]
    out *= np.float32(1.0 / (2 * radius + 1))
    return out


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip float32 intensities to uint8 (in place on ``image``)."""
    image += np.float32(0.5)
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8)


# ------------------------------------------------------------------ domain styles
class _Layers:
    """The per-group inputs of a domain style."""

    def __init__(self, scenes: SceneBatch, seg: np.ndarray, flat: np.ndarray, shade: np.ndarray):
        self.scenes, self.seg, self.flat, self.shade = scenes, seg, flat, shade
        self.size = seg.shape[1]
        self.background = seg == 0
        self.objects = (seg > 0) & (seg != MARKER_LABEL)


def _photo(layers: _Layers) -> np.ndarray:
    sc, size = layers.scenes, layers.size
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    angle, fx, fy, phase = (sc.style[:, i][:, None, None] for i in range(4))
    gx, gy = grid[None, None, :], grid[None, :, None]
    # Generator 1.2.0 halved the gradient, sinusoid and noise amplitudes (0.45, 0.08, 28 before):
    # per-image background patterns this strong let instance discrimination skip the objects.
    gradient = 1.0 + PHOTO_GRADIENT * (np.cos(angle) * gx + np.sin(angle) * gy)
    gradient *= 1.0 + PHOTO_SINE * np.sin(2 * np.pi * (fx * gx + fy * gy) + phase)
    multiplier = np.where(layers.background, gradient, layers.shade)
    if PHOTO_SHADOW != 1.0:
        shift = max(1, round(size / 24))
        shadow = np.zeros_like(layers.objects)
        shadow[:, shift:, shift:] = layers.objects[:, :-shift, :-shift]
        multiplier = np.where(shadow & layers.background, multiplier * np.float32(PHOTO_SHADOW), multiplier)
    image = layers.flat.astype(np.float32)
    image *= multiplier[..., None]
    noise = hash_uniform(sc.noise_seed, size, size, salt=1)
    noise -= np.float32(0.5)
    noise *= np.float32(PHOTO_NOISE)
    image += noise[..., None]
    return image


def _style_photo(layers: _Layers) -> np.ndarray:
    """Gradient + sinusoidal-texture background, shaded objects, sensor noise."""
    return _to_uint8(_photo(layers))


def _style_cartoon(layers: _Layers) -> np.ndarray:
    """Flat pastel background, flat objects, thick black outlines."""
    image = layers.flat.copy()
    outline = boundary(layers.seg, max(1, layers.size // 32)) & (layers.seg > 0)
    image[outline] = 15
    return image


def _style_sketch(layers: _Layers) -> np.ndarray:
    """Grayscale paper with dark pencil strokes along the object edges only."""
    sc, size = layers.scenes, layers.size
    paper = layers.flat[..., 0].astype(np.float32)  # paper grey, marker grey, objects
    paper = np.where(layers.objects, np.float32(255.0) - 4.0 * sc.background[:, None, None], paper)
    paper -= 10.0 * hash_uniform(sc.noise_seed, size, size, salt=2)
    strokes = boundary(layers.seg, max(1, size // 48)) & layers.objects
    pencil = 30.0 + 70.0 * hash_uniform(sc.noise_seed, size, size, salt=3)
    gray = _to_uint8(np.where(strokes, pencil, paper))
    return np.repeat(gray[..., None], 3, axis=-1)


def _style_painting(layers: _Layers) -> np.ndarray:
    """Flat colours under low-frequency colour noise, brush streaks and a soft blur."""
    sc, size = layers.scenes, layers.size
    field = smooth_field(sc.noise_seed, size, 5, PAINT_FIELD_CHANNELS, salt=4)
    # Background colour noise in [0.8, 1.15] (generator 1.2.0; [0.55, 1.45] before drowned the objects).
    offset = np.where(layers.background, np.float32(1.15 - PAINT_FIELD_BACKGROUND),
                      np.float32(1.15 - PAINT_FIELD_OBJECT))[..., None]
    scale = np.where(layers.background, np.float32(PAINT_FIELD_BACKGROUND), np.float32(PAINT_FIELD_OBJECT))[..., None]
    field *= scale
    field += offset
    image = layers.flat.astype(np.float32)
    image *= field
    if PAINT_CONTOUR != 1.0:
        contour = boundary(layers.seg, max(1, size // 32)) & layers.objects
        image[contour] *= np.float32(PAINT_CONTOUR)
    streak = hash_uniform(sc.noise_seed, size, size, salt=5)
    length = max(2, size // 16)
    streak = _box_blur(streak, length, 2)  # horizontal strokes ...
    vertical = np.cos(sc.style[:, 0]) < 0
    streak[vertical] = streak[vertical].transpose(0, 2, 1)  # ... or vertical ones
    streak *= np.float32(0.6)
    streak += np.float32(0.7)
    image *= streak[..., None]
    radius = max(1, size // 64)
    return _to_uint8(_box_blur(_box_blur(image, radius, 1), radius, 2))


def _style_tint(layers: _Layers) -> np.ndarray:
    """Colored-CIFAR (paper section 2.3): the photo rendering's luminance, tinted."""
    photo = np.clip(_photo(layers), 0, 255)
    luminance = photo @ _LUMA
    tint = np.stack([_TINTS[DOMAINS[d]] for d in layers.scenes.domain])
    return _to_uint8(luminance[..., None] * tint[:, None, None, :])


_STYLES: dict[str, Callable[[_Layers], np.ndarray]] = {
    "photo": _style_photo,
    "cartoon": _style_cartoon,
    "sketch": _style_sketch,
    "painting": _style_painting,
    "tint_red": _style_tint,
    "tint_green": _style_tint,
}
if tuple(_STYLES) != DOMAINS:
    raise RuntimeError("_STYLES must follow DOMAINS")


def _palette(scenes: SceneBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per-scene background and marker colours as each domain draws them (uint8)."""
    background = _BACKGROUND_TABLE[scenes.background].copy()
    marker = _MARKER_TABLE[np.maximum(scenes.marker, 0)].copy()
    cartoon = scenes.domain == DOMAINS.index("cartoon")
    background[cartoon] = background[cartoon] * 0.6 + 255.0 * 0.4
    sketch = scenes.domain == DOMAINS.index("sketch")
    background[sketch] = (255.0 - 4.0 * scenes.background[sketch].astype(np.float32))[:, None]
    marker[sketch] = _MARKER_GRAY[np.maximum(scenes.marker[sketch], 0)][:, None]
    return np.round(background).astype(np.uint8), np.round(marker).astype(np.uint8)


def render_scenes(scenes: SceneBatch, size: int, *, patterned: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render scene specifications.

    Args:
        scenes: The specifications (any number; memory is about 60 bytes per
            pixel per scene, so render a few hundred at a time).
        size: Image side in pixels (at least 16).
        patterned: Draw marker patches as black-and-white patterns (the ``"pattern"`` spurious cue).

    Returns:
        ``(images, segmentation)``: (n, size, size, 3) uint8 and (n, size, size)
        uint8 (0 background, ``k + 1`` object slot ``k``, 255 marker patch).
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    background_rgb, marker_rgb = _palette(scenes)
    seg, flat, shade = _rasterise(scenes, size, background_rgb, marker_rgb, patterned)
    images = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for d, name in enumerate(DOMAINS):
        idx = np.nonzero(scenes.domain == d)[0]
        if idx.size == 0:
            continue
        if idx.size == len(scenes):
            layers = _Layers(scenes, seg, flat, shade)
        else:
            layers = _Layers(scenes.take(idx), seg[idx], flat[idx], shade[idx])
        images[idx] = _STYLES[name](layers)
    return images, seg
