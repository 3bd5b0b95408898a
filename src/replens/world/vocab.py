"""The closed vocabulary of the embedded world: shapes, colours, textures, sizes, domains.

Every name here is a word (or short phrase) that appears in captions and in the
true concepts of an image, so concept-extraction methods (FALCON, chapter 4 of
the paper) can be scored against an exact ground truth.
"""

from __future__ import annotations

#: Bumped whenever the rendering or the on-disk format changes; part of the cache key.
#: 1.2.0: larger objects and calmer photo/painting backgrounds (shapes legible at 32 px; see
#: ``SIZE_RADIUS`` and :mod:`replens.world.render`).
#: 2.0.0: learnable in minutes on a CPU (scripts/validate_world_ssl.py): one dominant main object
#: (medium or large; 60 % of scenes hold it alone, distractors are smaller), radii 0.18 / 0.26 / 0.34,
#: an arrow instead of the hexagon (indistinguishable from a circle at 32 px), a drop shadow in photos
#: and a painted contour in paintings (silhouettes readable in grayscale).
#: 2.1.0: captions and concepts name only what the pixels show: no object, background or marker colour in
#: the sketch and tint domains (:data:`COLOURLESS_DOMAINS`), no texture in sketches
#: (:data:`TEXTURELESS_DOMAINS`); images are unchanged.
GENERATOR_VERSION = "2.1.0"

#: Object shapes. The class label of a scene is the shape of its main object,
#: so these are also the class names.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "arrow",
    "heart",
    "ring",
    "crescent",
)

#: Object colours, name -> RGB.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 30),
    "green": (40, 165, 60),
    "cyan": (40, 200, 215),
    "blue": (35, 75, 210),
    "purple": (130, 55, 175),
    "pink": (240, 120, 185),
    "brown": (125, 75, 35),
    "gray": (128, 128, 128),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)

#: Surface textures; the second colour of a texture is a lighter or darker tone.
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")

#: Size words and the object radius as a fraction of the image side. The main object is medium
#: or large (``replens.world.scene.MAIN_SIZES``): about 17-22 px across at 32 px, so a small CNN
#: sees its silhouette (generator 1.2.0 drew 10-17 px objects at radii 0.15 / 0.20 / 0.26; SimCLR's
#: linear probe at the same budget rose from 43.7 % to 52.9 % with these sizes and fewer distractors).
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_RADIUS: tuple[float, ...] = (0.18, 0.26, 0.34)

#: Render domains: four in the spirit of PACS plus the two Colored-CIFAR tints
#: of the paper's section 2.3 (every image coloured red or green).
DOMAINS: tuple[str, ...] = ("photo", "cartoon", "sketch", "painting", "tint_red", "tint_green")

#: How a domain is named in captions ("a sketch of a star").
DOMAIN_NOUN: dict[str, str] = {
    "photo": "photo",
    "cartoon": "cartoon",
    "sketch": "sketch",
    "painting": "painting",
    "tint_red": "red-tinted photo",
    "tint_green": "green-tinted photo",
}

#: Domains whose rendering shows no colour: sketches are pencil on grey paper, the tint domains keep only the
#: photo's luminance. Their captions and concepts name no object, background or marker colour.
COLOURLESS_DOMAINS: frozenset[str] = frozenset({"sketch", "tint_red", "tint_green"})

#: Domains whose rendering shows no texture (a sketch draws object outlines only).
TEXTURELESS_DOMAINS: frozenset[str] = frozenset({"sketch"})

#: The concept word of a domain.
DOMAIN_CONCEPT: dict[str, str] = {
    "photo": "photo",
    "cartoon": "cartoon",
    "sketch": "sketch",
    "painting": "painting",
    "tint_red": "red tint",
    "tint_green": "green tint",
}

#: Background colours (one per class so that the background can carry the
#: spurious cue), name -> RGB.
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "beige": (225, 210, 180),
    "lavender": (200, 190, 235),
    "mint": (180, 230, 200),
    "salmon": (240, 170, 150),
    "khaki": (190, 180, 110),
    "turquoise": (120, 200, 195),
    "silver": (195, 195, 200),
    "olive": (110, 120, 60),
    "navy": (40, 50, 100),
    "maroon": (110, 40, 50),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_RGB)

#: Marker-patch colours (the corner patch that carries the spurious cue), one
#: per class, and the grey level each one takes in the sketch domain (all
#: distinct, so the cue survives the grayscale rendering).
MARKER_RGB: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (250, 250, 250),
    "crimson": (180, 0, 40),
    "lime": (120, 240, 0),
    "magenta": (230, 0, 200),
    "teal": (0, 130, 130),
    "gold": (255, 190, 0),
    "indigo": (60, 0, 140),
    "coral": (255, 110, 80),
    "sky": (110, 180, 255),
}
MARKERS: tuple[str, ...] = tuple(MARKER_RGB)
MARKER_GRAY: tuple[int, ...] = (10, 245, 35, 220, 60, 195, 85, 170, 110, 140)

#: Spatial relation words (the first four are mutually exclusive per ordered pair).
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "bigger than", "smaller than", "next to")

#: Black-and-white patterns of the corner patch when the spurious cue is ``"pattern"``, one per class
#: (drawn by :func:`replens.world.render.pattern_mask`). Unlike the marker's colour, a pattern survives the
#: hue jitter and grayscale views SSL training needs, so an encoder keeps it (and a probe can learn it).
PATTERNS: tuple[str, ...] = (
    "striped", "barred", "checkered", "tiled", "framed", "plus", "crossed", "spotted", "dark", "banded",
)

#: The spurious cue kinds a world can carry (paper section 3.5: core vs spurious regions): the corner
#: patch's colour (``"marker"``), the background colour, or the corner patch's pattern (``"pattern"``).
SPURIOUS_CUES: tuple[str, ...] = ("marker", "background", "pattern")
#: The cue kinds carried by the corner patch.
PATCH_CUES: frozenset[str] = frozenset({"marker", "pattern"})


def marker_names(patterned: bool) -> tuple[str, ...]:
    """The names of the corner patch's cue values: :data:`PATTERNS` for a patterned marker, else :data:`MARKERS`."""
    return PATTERNS if patterned else MARKERS

if len(BACKGROUNDS) != len(SHAPES) or len(MARKERS) != len(SHAPES) or len(MARKER_GRAY) != len(SHAPES) \
        or len(PATTERNS) != len(SHAPES):
    raise RuntimeError("every class needs its own background and marker cue")


def article(word: str) -> str:
    """Return "a" or "an" for the word that follows it."""
    return "an" if word[:1].lower() in "aeiou" else "a"
