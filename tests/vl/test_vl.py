"""The VL wrapper, the embedded tiny CLIP, zero-shot classification and ``replens vl``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from replens.models import WeightsError
from replens.vl import (
    TinyClipTrainConfig,
    build_tiny_clip,
    class_text_embeddings,
    load_vl_model,
    train_tiny_clip,
    world_templates,
    world_training_items,
    zero_shot_classify,
)
from support import TINY_VIT_CLIP

SMALL = TINY_VIT_CLIP


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from replens.world import WorldConfig, generate_world

    cfg = WorldConfig(n=80, size=32, seed=5, test_fraction=0.25, shard_size=64)
    return Path(generate_world(cfg, tmp_path_factory.mktemp("world") / "w", progress=False))


@pytest.fixture(scope="module")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = tmp_path_factory.mktemp("clip") / "model.safetensors"
    vl, summary = train_tiny_clip(
        world, path, TinyClipTrainConfig(model=SMALL, steps=4, batch_size=16), progress=False, log_every=1
    )
    return vl, summary, path


def test_training_items_describe_their_regions(world: Path):
    from replens.world import load_world
    from replens.world.vocab import article

    split = load_world(world, "train")
    items = world_training_items(split, pad=0.0)
    by_image: dict[int, list] = {}
    for it in items:
        by_image.setdefault(it.image, []).append(it)
    for i, its in by_image.items():
        rec = split.record(i)
        full = [it for it in its if it.kind == "image"]
        assert len(full) == 1 and set(rec["captions"]) <= set(full[0].captions)
        objects = [it for it in its if it.kind == "object"]
        assert [tuple(o["box"]) for o in rec["objects"]] == [it.box for it in objects]  # pad 0: the true boxes
        for obj, it in zip(rec["objects"], objects, strict=True):
            assert all(obj["shape"] in c for c in it.captions)
            # a colour is named only where the domain draws it (not in sketches)
            assert all((obj["colour"] in c) == (rec["domain"] != "sketch") for c in it.captions)
            assert not any(obj["size"] + " " in c for c in it.captions)  # crops lose the size
        markers = [it for it in its if it.kind == "marker"]
        if rec["domain"] == "sketch":  # a grey level, which no colour word names
            assert not markers and not any("patch" in c for c in full[0].captions)
            continue
        (marker,) = markers
        assert marker.captions == (f"{article(rec['marker'])} {rec['marker']} patch",)
        x0, y0, x1, y1 = marker.box
        seg = split.segmentation(i)
        assert (seg[y0:y1, x0:x1] == 255).all() and (seg == 255).sum() == (x1 - x0) * (y1 - y0)


def test_trained_tiny_clip_round_trips(trained, tmp_path: Path):
    vl, summary, path = trained
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"]) and len(summary["loss_curve"]) == 4
    again = load_vl_model(path)
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(again.embed_images(images), vl.embed_images(images))
    torch.testing.assert_close(again.embed_texts(["a red circle"]), vl.embed_texts(["a red circle"]))
    emb = vl.embed_images(images)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert again.fingerprint == load_vl_model(path.parent).fingerprint  # a folder with model.safetensors works
    fresh = build_tiny_clip(SMALL, seed=1)
    assert not torch.allclose(fresh.embed_texts(["a red circle"]), vl.embed_texts(["a red circle"]))


def test_preprocess_resizes_and_normalises():
    vl = build_tiny_clip(SMALL)
    img = torch.full((1, 3, 64, 48), 255, dtype=torch.uint8)
    x = vl.preprocess(img)
    assert x.shape == (1, 3, 32, 32)
    expected = (1.0 - torch.tensor(vl.mean)) / torch.tensor(vl.std)
    torch.testing.assert_close(x[0, :, 5, 5], expected)
    tokens = vl.tokenize(["a red circle"])
    assert tokens.shape == (1, SMALL.context_length) and int(tokens[0, 0]) == 49406  # open_clip's start token


def test_zero_shot_matches_a_direct_computation(trained, world: Path):
    from replens.world import load_world

    vl = trained[0]
    test = load_world(world, "test")
    result = zero_shot_classify(vl, test)
    templates = world_templates(test.domain_names)
    text = class_text_embeddings(vl, test.classes, templates)
    prompts = vl.embed_texts([t.format(c) for c in test.classes for t in templates])
    direct_text = torch.nn.functional.normalize(prompts.view(len(test.classes), len(templates), -1).mean(1), dim=1)
    torch.testing.assert_close(text, direct_text)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    pred = (vl.embed_images(images) @ direct_text.T).argmax(1).numpy()
    np.testing.assert_array_equal(result["predictions"], pred)
    assert result["top1"] == pytest.approx(100 * float((pred == test.labels).mean()))


def test_missing_weights_give_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from replens.hub import DownloadError

    monkeypatch.setenv("REPLENS_OFFLINE", "1")  # never reach the network from a test
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsError, match="VL checkpoint not found"):
        load_vl_model(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="needs weights"):
        load_vl_model("ViT-B-32")
    with pytest.raises(DownloadError, match="vit_base_patch32_clip_224.openai, files .* and offline mode is on"):
        load_vl_model("open_clip:ViT-B-32:openai")
    with pytest.raises(DownloadError, match=r"hf-hub:org/clip config is not cached \(looked in .*models--org--clip"):
        load_vl_model("hf-hub:org/clip")
    with pytest.raises(KeyError, match="unknown open_clip model"):
        load_vl_model("NoSuchNet-7:foo")
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="not a replens VL checkpoint"):
        load_vl_model(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="replens vl train"):
        load_vl_model(None, cache_dir=tmp_path, train_if_missing=False)


def test_cli_vl_train_and_zeroshot(world: Path, tmp_path: Path, trained):
    from replens.cli import main

    out = tmp_path / "vl"
    assert (
        main(["vl", "train", "--world", str(world), "--steps", "2", "--batch-size", "8", "--out", str(out), "--quiet"])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 2 and 0.0 <= metrics["zero_shot"]["top1"] <= 100.0
    assert (out / "config.yaml").is_file() and (out / "model.safetensors").is_file()
    zs = tmp_path / "zs"
    assert (
        main(
            [
                "vl",
                "zeroshot",
                "--vl",
                str(trained[2]),
                "--data",
                f"world:{world}?split=test",
                "--out",
                str(zs),
                "--quiet",
            ]
        )
        == 0
    )
    zs_metrics = json.loads((zs / "metrics.json").read_text())
    assert zs_metrics["samples"] == 20
    attrs = zs_metrics["crop_attributes"]
    assert {"colour", "shape", "texture", "marker"} <= set(attrs) and all(
        0 <= attrs[k] <= 100 for k in ("colour", "marker")
    )
    assert (
        main(
            [
                "vl",
                "zeroshot",
                "--vl",
                str(tmp_path / "nope.safetensors"),
                "--data",
                f"world:{world}",
                "--out",
                str(zs),
                "--quiet",
            ]
        )
        == 2
    )
