"""The embedded world (``replens.world``): a procedurally generated, deterministic
multi-domain scene dataset with the ground truth real datasets lack.

Scenes hold 1 to 3 objects (shape, colour, texture, size); the class is the
shape of the main object. Images are rendered in PACS-like domains (photo,
cartoon, sketch, painting) and the Colored-CIFAR tints of the paper's section
2.3, with instance masks, boxes, relations, template captions, true concepts
and core/spurious masks (section 3.5), a spurious-correlation knob, and
ARO/Winoground-like compositional sets (section 6.5.3).

Typical use::

    from replens.world import WorldConfig, generate_world, load_world

    path = generate_world(WorldConfig(n=20_000, spurious=0.9), "worlds/spurious90")
    train = load_world(path, "train")   # an ImageSource
    train[0]["image"], train.record(0)["captions"], train.core_mask(0)
"""

from replens.world.compositional import (
    COLOUR_DOMAINS,
    CaptionChoice,
    ImageCaptionGroup,
    attribute_swap_set,
    relation_swap_set,
    winoground_groups,
    word_order_set,
)
from replens.world.config import SPLITS, WorldConfig
from replens.world.dataset import WorldDataset, load_world
from replens.world.generate import WorldCacheError, cached_world, generate_world, read_manifest, verify_world
from replens.world.preview import save_preview
from replens.world.render import render_scenes
from replens.world.scene import SceneBatch, sample_scenes
from replens.world.vocab import (
    BACKGROUNDS,
    COLOURS,
    DOMAINS,
    GENERATOR_VERSION,
    MARKERS,
    RELATIONS,
    SHAPES,
    SIZES,
    TEXTURES,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "COLOUR_DOMAINS",
    "DOMAINS",
    "GENERATOR_VERSION",
    "MARKERS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TEXTURES",
    "CaptionChoice",
    "ImageCaptionGroup",
    "SceneBatch",
    "WorldCacheError",
    "WorldConfig",
    "WorldDataset",
    "attribute_swap_set",
    "cached_world",
    "generate_world",
    "load_world",
    "read_manifest",
    "relation_swap_set",
    "render_scenes",
    "sample_scenes",
    "save_preview",
    "verify_world",
    "winoground_groups",
    "word_order_set",
]
