"""The pattern spurious cue through the explain side: failure naming, caption bank, tiny-CLIP cache key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np

from replens.data import SubsetSource
from replens.explain.bank import world_caption_texts
from replens.explain.ground_truth import failure_spurious_report, is_pattern_world
from replens.vl.tiny import TinyClipTrainConfig
from replens.world import GENERATOR_VERSION, WorldConfig
from replens.world.vocab import MARKERS, PATTERNS


def _world(cue: str) -> SimpleNamespace:
    # images 0-3: photo, sketch, photo, sketch; cues 1, 1, 2, 2
    return SimpleNamespace(config=WorldConfig(n=10, spurious=0.5, spurious_cue=cue), spurious_cues=np.array([1, 1, 2, 2]),
                           domain_names=["photo", "sketch"], domains=np.array([0, 1, 0, 1]))


def _failure(row: int, prediction: int, words: list[str]) -> SimpleNamespace:
    return SimpleNamespace(row=row, prediction=prediction, words=[(w, 1.0) for w in words], phrases=[])


def test_pattern_failures_are_named_in_every_domain():
    failures = [_failure(0, 1, [PATTERNS[1]]), _failure(1, 1, [f"{PATTERNS[1]} patch"]), _failure(2, 2, ["star"]),
                _failure(3, 5, [PATTERNS[2]])]
    report = failure_spurious_report(failures, _world("pattern"))
    assert report["cue"] == "pattern"
    assert report["spurious_driven"] == 3  # rows 0-2 predict the class their pattern is tied to
    # a pattern is black and white: the sketch's cue is nameable, unlike a colour marker's grey level
    assert report["spurious_driven_colourless"] == 0
    assert report["named_among_spurious_driven"] == 2 and report["named_among_nameable"] == 2
    assert report["named"] == 3  # row 3 names its cue though the failure does not follow it
    # the same failures on a colour-marker world: pattern words name nothing, the sketch rows are apart
    colour = failure_spurious_report(failures, _world("marker"))
    assert colour["named"] == 0 and colour["spurious_driven_colourless"] == 1
    named = [_failure(0, 1, [MARKERS[1]])]
    assert failure_spurious_report(named, _world("marker"))["named_among_nameable"] == 1


def test_bank_adds_pattern_captions_only_when_asked():
    plain = world_caption_texts(relational=0, distractors=10)
    patterned = world_caption_texts(relational=0, distractors=10, patterns=True)
    assert not any(f"{p} patch" in t for t in plain for p in PATTERNS if p not in MARKERS)
    extra = set(patterned) - set(plain)
    assert patterned[: len(plain)] == plain  # the colour-cue bank is a prefix: its captions do not move
    for p in PATTERNS:
        assert f"a {p} patch" in extra or f"an {p} patch" in extra


def test_tiny_clip_key_is_unchanged_for_colour_worlds():
    config = TinyClipTrainConfig(world_spurious=0.5)
    fields = asdict(config)
    del fields["world_spurious_cue"]  # the key before the field existed
    blob = json.dumps({**fields, "world_generator": GENERATOR_VERSION}, sort_keys=True, default=list)
    assert config.key() == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert TinyClipTrainConfig(world_spurious=0.5, world_spurious_cue="pattern").key() != config.key()


def test_pattern_worlds_are_recognised_through_subsets(tmp_path):
    from replens.world import WorldDataset, generate_world

    root = generate_world(WorldConfig(n=20, size=16, spurious=0.5, spurious_cue="pattern"), tmp_path / "w", progress=False)
    world = WorldDataset(root, "train")
    assert is_pattern_world(world) and is_pattern_world(SubsetSource(SubsetSource(world, [0, 2, 3]), [1]))
    assert not is_pattern_world(_world("marker")) and not is_pattern_world(object())  # not a pattern world
