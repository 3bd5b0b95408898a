"""Tests of the embedded world: determinism, ground truth, spurious knob, domains,
compositional sets, the sample protocol and the on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from replens.data.base import collate_samples
from replens.world import (
    COLOURS,
    DOMAINS,
    GENERATOR_VERSION,
    SHAPES,
    TEXTURES,
    WorldCacheError,
    WorldConfig,
    WorldDataset,
    attribute_swap_set,
    generate_world,
    load_world,
    read_manifest,
    relation_swap_set,
    render_scenes,
    sample_scenes,
    save_preview,
    verify_world,
    winoground_groups,
    word_order_set,
)
from replens.world.render import MARKER_LABEL, SHAPE_TESTS, pattern_mask
from replens.world.scene import SHAPE_EXTENT
from replens.world.vocab import COLOURLESS_DOMAINS, MARKER_RGB, PATTERNS, TEXTURELESS_DOMAINS

TINY = WorldConfig(n=80, size=32, domains=DOMAINS, seed=0, spurious=1.0, shard_size=32)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(TINY, tmp_path_factory.mktemp("world") / "tiny", progress=False)


@pytest.fixture(scope="module")
def train(world: Path) -> WorldDataset:
    return load_world(world, "train")


@pytest.fixture(scope="module")
def test_split(world: Path) -> WorldDataset:
    return load_world(world, "test")


def _centre(box: list[int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


# ----------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical_whatever_the_workers(world: Path, tmp_path: Path) -> None:
    again = generate_world(TINY, tmp_path / "again", progress=False, workers=2)
    assert _tree_digest(world) == _tree_digest(again)
    assert len(_tree_digest(world)) > 20


def test_other_seed_gives_other_images(train: WorldDataset, tmp_path: Path) -> None:
    other = load_world(generate_world(WorldConfig(**{**TINY.to_dict(), "seed": 1}), tmp_path / "s1", progress=False))
    assert len(other) == len(train)
    assert not np.array_equal(other.read(0), train.read(0))
    assert not np.array_equal(other.labels, train.labels)


def test_rendering_does_not_depend_on_the_batch() -> None:
    scenes = sample_scenes(np.random.default_rng(3), 24, domains=DOMAINS)
    images, seg = render_scenes(scenes, 32)
    alone_images, alone_seg = render_scenes(scenes.take(np.array([5, 17])), 32)
    np.testing.assert_array_equal(alone_images, images[[5, 17]])
    np.testing.assert_array_equal(alone_seg, seg[[5, 17]])


# ---------------------------------------------------------------- ground truth
def test_labels_are_the_main_object_shape(train: WorldDataset) -> None:
    scenes = train.scenes()
    np.testing.assert_array_equal(train.labels, scenes.shape[:, 0])
    assert train.classes == list(SHAPES)
    for i in range(len(train)):
        record = train.record(i)
        assert record["class"] == record["objects"][0]["shape"] == SHAPES[train.labels[i]]
        assert record["label"] == int(train.labels[i])
    assert train.n_objects.min() >= 1 and train.n_objects.max() <= TINY.max_objects


def test_masks_boxes_and_core_mask(train: WorldDataset) -> None:
    for i in range(len(train)):
        record = train.record(i)
        masks = train.masks(i)
        assert masks.shape == (len(record["objects"]), TINY.size, TINY.size)
        assert masks.sum(axis=0).max() <= 1, "instance masks overlap"
        np.testing.assert_array_equal(train.core_mask(i), masks[0])
        for mask, obj in zip(masks, record["objects"], strict=True):
            assert mask.any(), "empty instance mask"
            x0, y0, x1, y1 = obj["box"]
            inside = np.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            assert not (mask & ~inside).any(), "mask leaves its box"
            # tight: every edge row/column of the box touches the mask
            assert mask[y0].any() and mask[y1 - 1].any() and mask[:, x0].any() and mask[:, x1 - 1].any()
        core_box = record["objects"][0]["box"]
        ys, xs = np.nonzero(train.core_mask(i))
        assert xs.min() >= core_box[0] and xs.max() < core_box[2]
        assert ys.min() >= core_box[1] and ys.max() < core_box[3]


def test_spurious_mask_is_the_marker_patch(train: WorldDataset) -> None:
    for i in range(len(train)):
        mask = train.spurious_mask(i)
        assert mask.any()
        assert not (mask & train.core_mask(i)).any()
        np.testing.assert_array_equal(mask, train.segmentation(i) == MARKER_LABEL)


def test_relations_agree_with_box_centres(train: WorldDataset) -> None:
    seen = Counter()
    for i in range(len(train)):
        record = train.record(i)
        objects = record["objects"]
        for rel in record["relations"]:
            (ax, ay), (bx, by) = _centre(objects[rel["subject"]]["box"]), _centre(objects[rel["object"]]["box"])
            word = rel["relation"]
            seen[word] += 1
            if word == "left of":
                assert ax < bx and abs(bx - ax) >= abs(by - ay)
            elif word == "right of":
                assert ax > bx and abs(bx - ax) >= abs(by - ay)
            elif word == "above":
                assert ay < by and abs(by - ay) > abs(bx - ax)
            elif word == "below":
                assert ay > by and abs(by - ay) > abs(bx - ax)
            elif word in ("bigger than", "smaller than"):
                order = ["small", "medium", "large"]
                a, b = (order.index(objects[rel[k]]["size"]) for k in ("subject", "object"))
                assert (a > b) if word == "bigger than" else (a < b)
    assert seen["left of"] and seen["right of"] and (seen["above"] + seen["below"])


def test_captions_and_concepts(train: WorldDataset) -> None:
    assert len(train.captions) == len(train)
    for i in range(len(train)):
        record = train.record(i)
        main = record["objects"][0]
        captions = train.captions[i]
        assert len(captions) >= 3
        assert all(main["shape"] in c for c in captions)
        concepts = train.concepts[i]
        for word in (main["shape"], main["size"]):
            assert word in concepts
        # only what the pixels show: no colour in sketches and tints, no texture in sketches
        colour = record["domain"] not in COLOURLESS_DOMAINS
        words = {w for c in captions for w in c.split()}
        assert all(bool({o["colour"], "background", "patch"} & words) == colour for o in record["objects"])
        if colour:
            assert main["colour"] in captions[0] and f"{main['colour']} {main['shape']}" in captions[2]
            assert f"{record['background']} background" in concepts
            assert (record["marker"] is None) or f"{record['marker']} patch" in concepts
        else:
            assert f" of a {main['size']} " in captions[3] and captions[3].endswith(main["shape"])
            assert not any(c.endswith(" background") or c.endswith(" patch") for c in concepts)
        assert (main["colour"] in concepts) == colour
        assert (main["texture"] in concepts) == (record["domain"] not in TEXTURELESS_DOMAINS)
        assert len(concepts) == len(set(concepts))
        for rel in record["relations"]:
            assert rel["relation"] in concepts
        if len(record["objects"]) > 1:
            assert any(w in captions[0] for w in ("left of", "right of", "above", "below"))
    noun = {"photo": "a photo of", "cartoon": "a cartoon of", "sketch": "a sketch of", "painting": "a painting of"}
    for i in range(len(train)):
        domain = train.domain_names[train.domains[i]]
        if domain in noun:
            assert train.captions[i][1].startswith(noun[domain])


# ------------------------------------------------------------------- spurious
def test_spurious_cue_predicts_class_in_train_only(train: WorldDataset, test_split: WorldDataset) -> None:
    assert train.spurious_aligned.all()
    np.testing.assert_array_equal(train.spurious_cues, train.labels)
    assert not test_split.spurious_aligned.any()
    # A bigger sample for the chance-level claim (no rendering needed).
    test_scenes = sample_scenes(np.random.default_rng(0), 4000, spurious=1.0, train=False)
    agreement = float((test_scenes.marker == test_scenes.labels).mean())
    assert abs(agreement - 1 / len(SHAPES)) < 0.03
    train_scenes = sample_scenes(np.random.default_rng(0), 4000, spurious=0.5, spurious_cue="background")
    agreement = float((train_scenes.background == train_scenes.labels).mean())
    assert abs(agreement - (0.5 + 0.5 / len(SHAPES))) < 0.04
    aligned = train_scenes.spurious_aligned
    assert (train_scenes.background[aligned] == train_scenes.labels[aligned]).all()
    assert (train_scenes.marker == -1).all()


def test_spurious_cue_is_in_the_pixels(train: WorldDataset) -> None:
    palette = np.array(list(MARKER_RGB.values()), dtype=np.float32)
    checked = 0
    for i in range(len(train)):
        if train.domain_names[train.domains[i]] not in ("photo", "cartoon"):
            continue
        colour = np.median(train.read(i)[train.spurious_mask(i)].astype(np.float32), axis=0)
        assert int(np.argmin(((palette - colour) ** 2).sum(1))) == train.labels[i]
        checked += 1
    assert checked >= 5


def test_background_cue_world(tmp_path: Path) -> None:
    config = WorldConfig(n=40, size=32, spurious=1.0, spurious_cue="background", seed=2)
    data = load_world(generate_world(config, tmp_path / "bg", progress=False))
    np.testing.assert_array_equal(data.spurious_cues, data.labels)
    for i in range(len(data)):
        np.testing.assert_array_equal(data.spurious_mask(i), data.segmentation(i) == 0)
        assert data.record(i)["marker"] is None


def test_patterns_are_distinct_and_survive_a_flip() -> None:
    for side in (6, 8, 13):  # 6: the marker side of a 32 px world
        masks = [pattern_mask(k, side) for k in range(len(PATTERNS))]
        assert len({m.tobytes() for m in masks}) == len(PATTERNS)
        for m in masks:
            np.testing.assert_array_equal(m, m[:, ::-1])  # a horizontal flip keeps the pattern
    with pytest.raises(ValueError, match="pattern index"):
        pattern_mask(len(PATTERNS), 6)


def test_pattern_cue_world(tmp_path: Path) -> None:
    config = WorldConfig(n=60, size=32, spurious=1.0, spurious_cue="pattern", seed=3, shard_size=32)
    root = generate_world(config, tmp_path / "pat", progress=False)
    data = load_world(root)
    assert read_manifest(root)["markers"] == list(PATTERNS)
    np.testing.assert_array_equal(data.spurious_cues, data.labels)  # train split, spurious 1: tied
    side = int(round(0.2 * 32))
    checked = {"photo": 0, "cartoon": 0, "sketch": 0}
    for i in range(len(data)):
        record, domain = data.record(i), data.domain_names[data.domains[i]]
        mask = data.spurious_mask(i)
        np.testing.assert_array_equal(mask, data.segmentation(i) == MARKER_LABEL)
        assert record["marker"] == PATTERNS[data.labels[i]]
        # the pattern is a true concept in every domain, grey sketches included
        assert f"{record['marker']} patch" in record["concepts"]
        if domain in checked:
            ys, xs = np.nonzero(mask)
            patch = data.read(i)[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32).mean(-1)
            assert patch.shape == (side, side)
            # dark where the class's pattern is dark, light elsewhere (photo noise stays far from mid-grey);
            # the patch's rim may carry a cartoon outline or a photo shadow
            np.testing.assert_array_equal((patch < 128)[1:-1, 1:-1], pattern_mask(int(data.labels[i]), side)[1:-1, 1:-1])
            checked[domain] += 1
    assert min(checked.values()) >= 2


def test_colour_marker_world_keeps_its_words() -> None:
    # the pattern option leaves colour-cue worlds as they were: sketches name no marker, names are colours
    scenes = sample_scenes(np.random.default_rng(0), 64, spurious=1.0)
    _, seg = render_scenes(scenes, 32)
    from replens.world.annotate import annotate, boxes_from_segmentation

    records = annotate(scenes, boxes_from_segmentation(seg, 3), 32)
    for scene_domain, record in zip(scenes.domain, records, strict=True):
        assert record["marker"] in MARKER_RGB
        has_patch = any(c.endswith(" patch") for c in record["concepts"])
        assert has_patch == (DOMAINS[scene_domain] not in COLOURLESS_DOMAINS)


# --------------------------------------------------------------------- domains
def test_every_domain_is_drawn(train: WorldDataset) -> None:
    assert set(train.domains.tolist()) == set(range(len(DOMAINS)))


def test_sketch_is_grayscale_with_light_paper(train: WorldDataset) -> None:
    sketch = [i for i in range(len(train)) if train.domain_names[train.domains[i]] == "sketch"]
    for i in sketch:
        image = train.read(i).astype(int)
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        background = train.segmentation(i) == 0
        assert image[..., 0][background].mean() > 200


def test_tints(train: WorldDataset) -> None:
    for name, hot, cold in (("tint_red", 0, 1), ("tint_green", 1, 0)):
        idx = [i for i in range(len(train)) if train.domain_names[train.domains[i]] == name]
        assert idx
        for i in idx:
            image = train.read(i).astype(np.float64)
            assert image[..., hot].mean() > image[..., cold].mean() + 20


def test_shapes_stay_within_their_extent() -> None:
    g = np.linspace(-1.6, 1.6, 641, dtype=np.float32)
    u, v = np.meshgrid(g, g)
    radius = np.hypot(u, v)
    for (name, test), extent in zip(SHAPE_TESTS.items(), SHAPE_EXTENT, strict=True):
        inside = test(u, v)
        assert inside.mean() > 0.1, name
        assert radius[inside].max() <= extent, name


# ------------------------------------------------------------- compositional
def test_attribute_swap_changes_exactly_the_colours() -> None:
    items = attribute_swap_set(12, size=32, domains=("photo", "cartoon"), seed=0)
    assert len(items) == 12
    for item in items:
        true, false = (c.split() for c in item.captions)
        assert len(true) == len(false)
        changed = [k for k, (a, b) in enumerate(zip(true, false, strict=True)) if a != b]
        assert len(changed) == 2 and all(true[k] in COLOURS for k in changed)
        assert (true[changed[0]], true[changed[1]]) == (false[changed[1]], false[changed[0]])
        assert item.image.shape == (32, 32, 3) and item.image.dtype == np.uint8
        diff = (item.image != item.counterfactual).any(axis=-1)
        assert diff.any()
        allowed = np.zeros_like(diff)
        for obj in item.objects:
            x0, y0, x1, y1 = obj["box"]
            allowed[y0:y1, x0:x1] = True
        assert not (diff & ~allowed).any(), "the swap changed pixels outside the objects"


def test_relation_swap_and_word_order() -> None:
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    for item in relation_swap_set(8, size=32, seed=1):
        true, false = item.captions
        relation = next(r for r in opposite if f" is {r} " in true)
        assert false == true.replace(f" is {relation} ", f" is {opposite[relation]} ")
        (ax, ay), (bx, by) = (_centre(o["box"]) for o in item.objects)
        assert {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]
        assert not np.array_equal(item.image, item.counterfactual)
    for item in word_order_set(8, size=32, seed=1, n_shuffles=4):
        assert len(item.captions) == 5 and len(set(item.captions)) == 5
        assert all(sorted(c.split()) == sorted(item.captions[0].split()) for c in item.captions)
        assert item.counterfactual is None


def test_attribute_sets_refuse_the_sketch_domain() -> None:
    with pytest.raises(ValueError, match="sketch"):
        attribute_swap_set(2, size=32, domains=("sketch",))
    with pytest.raises(ValueError, match="sketch"):
        winoground_groups(2, size=32, domains=("photo", "sketch"))
    groups = winoground_groups(2, size=32, domains=("sketch",), kinds=("relation",))
    assert not np.array_equal(*groups[0].images)


def test_winoground_groups() -> None:
    groups = winoground_groups(8, size=32, domains=("cartoon",), seed=0)
    assert [g.kind for g in groups] == ["relation", "attribute"] * 4
    for group in groups:
        first, second = group.captions
        assert first != second and sorted(first.split()) == sorted(second.split())
        assert not np.array_equal(*group.images)
        assert all(im.shape == (32, 32, 3) for im in group.images)
    # Deterministic by seed.
    again = winoground_groups(8, size=32, domains=("cartoon",), seed=0)
    assert all(np.array_equal(a.images[1], b.images[1]) for a, b in zip(groups, again, strict=True))


# ------------------------------------------------------------ sample protocol
def test_sample_protocol(world: Path, train: WorldDataset) -> None:
    sample = train[3]
    assert set(sample) == {"image", "label", "domain", "index", "name"}
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, TINY.size, TINY.size)
    assert sample["label"] == int(train.labels[3]) and sample["domain"] == int(train.domains[3])
    assert sample["index"] == 3 and sample["name"] == "world/train/000003"
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), train.read(3))
    assert train.labels.dtype == np.int64 and train.domains.dtype == np.int64
    assert train.domain_names == list(DOMAINS)
    resized = load_world(world, "train", image_size=48)
    assert resized[0]["image"].shape == (3, 48, 48)
    assert resized.core_mask(0).shape == (48, 48) and resized.masks(0).shape[1:] == (48, 48)
    loader = torch.utils.data.DataLoader(train, batch_size=16, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (16, 3, TINY.size, TINY.size) and batch["bad"] == []
    with pytest.raises(IndexError):
        train.read(len(train))


def test_splits(train: WorldDataset, test_split: WorldDataset) -> None:
    assert len(train) == TINY.split_sizes["train"] == 64
    assert len(test_split) == TINY.split_sizes["test"] == 16
    assert test_split.name(0) == "world/test/000000"


# ----------------------------------------------------------------------- cache
def test_cache_hit_mismatch_and_overwrite(world: Path, tmp_path: Path) -> None:
    stamp = (world / "manifest.json").stat().st_mtime_ns
    assert generate_world(TINY, world, progress=False) == world
    assert (world / "manifest.json").stat().st_mtime_ns == stamp
    path = generate_world(WorldConfig(n=20, size=32), tmp_path / "w", progress=False)
    with pytest.raises(WorldCacheError, match="seed"):
        generate_world(WorldConfig(n=20, size=32, seed=5), path, progress=False)
    generate_world(WorldConfig(n=20, size=32, seed=5), path, progress=False, overwrite=True)
    assert read_manifest(path)["config"]["seed"] == 5
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_world(generate_world(WorldConfig(n=10, size=32), empty, progress=False)).labels.shape == (8,)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(WorldCacheError, match="not empty"):
        generate_world(WorldConfig(n=20, size=32), tmp_path / "junk", progress=False)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_manifest_contents(world: Path, tmp_path: Path) -> None:
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert manifest["seed"] == TINY.seed and manifest["config"] == TINY.to_dict()
    assert WorldConfig.from_dict(manifest["config"]) == TINY
    assert manifest["classes"] == list(SHAPES) and manifest["domains"] == list(DOMAINS)
    assert manifest["colours"] == list(COLOURS) and manifest["textures"] == list(TEXTURES)
    assert manifest["splits"] == {"train": 64, "test": 16}
    shards = manifest["shards"]
    assert [(s["split"], s["count"]) for s in shards] == [("train", 32), ("train", 32), ("test", 16)]
    for shard in shards:
        for name, meta in shard["files"].items():
            data = (world / shard["path"] / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
        assert {"images.npy", "segmentation.npy", "labels.npy", "records.jsonl"} <= set(shard["files"])
    verify_world(world)
    # A damaged copy fails verification.
    copy = generate_world(WorldConfig(n=20, size=32), tmp_path / "c", progress=False)
    images = copy / "train" / "shard-00000" / "images.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(images, 0o644)
    images.write_bytes(bytes(data))
    with pytest.raises(WorldCacheError, match="sha256"):
        load_world(copy, verify=True)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="domains"):
        WorldConfig(domains=("photo", "oil"))
    with pytest.raises(ValueError, match="spurious"):
        WorldConfig(spurious=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        WorldConfig(max_objects=4)
    assert WorldConfig(domains=["photo"]).domains == ("photo",)


def test_preview(world: Path, tmp_path: Path) -> None:
    out = save_preview(tmp_path / "p.png", WorldConfig(size=32, domains=("photo", "sketch")), per_domain=3)
    with Image.open(out) as img:
        assert img.size[1] == 2 * (64 + 2) + 2
    out = save_preview(tmp_path / "q.png", world, per_domain=4)
    with Image.open(out) as img:
        assert img.size[1] == len(DOMAINS) * (64 + 2) + 2


def test_preview_of_a_pattern_config_draws_patterns() -> None:
    from replens.world.preview import _rows_from_config

    side = int(round(0.2 * 32))

    def two_level_grey(image: np.ndarray) -> bool:
        # a corner patch whose inside (the rim may carry the cartoon outline) is grey, with dark and light pixels
        corners = [image[:side, :side], image[:side, -side:], image[-side:, :side], image[-side:, -side:]]
        inner = [c[1:-1, 1:-1] for c in corners]
        return any((np.ptp(c, axis=-1) < 12).all() and (c < 70).any() and (c > 200).any() for c in inner)

    counts = {}
    for cue in ("pattern", "marker"):
        (_, images), = _rows_from_config(WorldConfig(size=32, domains=("cartoon",), spurious_cue=cue, seed=4), 8)
        counts[cue] = sum(two_level_grey(image) for image in images.astype(np.int16))
    # most patterns show both levels inside (not "dark", nor "framed" whose inside is light); no colour marker does
    assert counts["pattern"] >= 5 and counts["marker"] == 0
