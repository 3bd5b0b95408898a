"""ARO / Winoground / SugarCrepe scores and loaders of the public formats (files written here)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replens.evaluate.compositional import (
    caption_choice_accuracy,
    evaluate_choice_items,
    evaluate_winoground_items,
    load_aro_order,
    load_aro_vg,
    load_sugarcrepe,
    load_winoground,
    order_perturbations,
    pre_caption,
    winoground_scores,
)


def test_caption_choice_accuracy_needs_a_strict_win() -> None:
    scores = [[0.9, 0.1], [0.2, 0.3], [0.5, 0.5], [0.7, 0.2, 0.69]]
    assert caption_choice_accuracy(scores[:3]) == pytest.approx(100 / 3)
    assert caption_choice_accuracy([scores[3]]) == 100


def test_winoground_scores_follow_thrush_et_al() -> None:
    # s[c, i]: caption c with image i; caption c belongs to image c
    both = [[0.9, 0.1], [0.2, 0.8]]
    text_only = [[0.5, 0.6], [0.1, 0.7]]  # each image prefers its caption; caption 0 prefers image 1
    image_only = [[0.5, 0.4], [0.6, 0.7]]  # each caption prefers its image; image 0 prefers caption 1
    neither = [[0.1, 0.9], [0.9, 0.1]]
    got = winoground_scores(np.array([both, text_only, image_only, neither]))
    assert got == {"text": 50.0, "image": 50.0, "group": 25.0}


def _image(path: Path, value: int, size: tuple[int, int] = (20, 30)) -> None:
    arr = np.full((*size, 3), value, dtype=np.uint8)
    arr[:, : size[1] // 2, 0] = 255 - value
    Image.fromarray(arr).save(path)


def test_aro_vg_rows_and_crop(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    _image(tmp_path / "images" / "a.jpg", 10)
    rows = [{"image_id": "1", "image_path": "a.jpg", "bbox_x": 5, "bbox_y": 2, "bbox_w": 10, "bbox_h": 8,
             "true_caption": "the horse is eating the grass", "false_caption": "the grass is eating the horse",
             "relation_name": "eating"}]
    (tmp_path / "vgr.json").write_text(json.dumps(rows))
    (item,) = load_aro_vg(tmp_path / "vgr.json", tmp_path / "images")
    assert item.captions[0] == "the horse is eating the grass" and item.meta["relation_name"] == "eating"
    assert item.load_image().shape == (8, 10, 3)
    rows[0].pop("false_caption")
    (tmp_path / "vgr.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"vgr.json row 0: missing keys \['false_caption'\]"):
        load_aro_vg(tmp_path / "vgr.json", tmp_path / "images")


def test_order_perturbations_keep_the_words() -> None:
    caption = "A large brown dog runs across the green field near a small red house"
    rng = np.random.default_rng(0)
    shuffles = order_perturbations(caption, rng)
    assert len(shuffles) == 4
    words = Counter(caption.split())
    for s in shuffles:
        assert Counter(s.split()) == words  # a permutation of the same words
    assert any(s != caption for s in shuffles)
    # 1: nouns and adjectives permuted among themselves, the other words stay put
    from replens.evaluate.compositional import _nlp

    doc = _nlp()(caption)
    fixed = [i for i, t in enumerate(doc) if t.tag_ not in {"NN", "NNS", "NNP", "NNPS", "JJ", "JJR", "JJS"}]
    first = shuffles[0].split()
    assert all(first[i] == doc[i].text for i in fixed)
    # 3: words only move within their trigram
    third = shuffles[2].split()
    tokens = [t.text for t in doc]
    for g in range(0, len(tokens), 3):
        assert sorted(third[g : g + 3]) == sorted(tokens[g : g + 3])
    assert pre_caption("A dog; (running)!  fast.", 3) == "a dog running"


def test_order_winoground_and_sugarcrepe_loaders_and_evaluation(tmp_path: Path) -> None:
    _image(tmp_path / "x.png", 30)
    _image(tmp_path / "y.png", 200)
    (tmp_path / "karpathy.json").write_text(json.dumps([{"image": "x.png", "caption": ["a man rides a horse.",
                                                                                      "two dogs play"]}]))
    items = load_aro_order(tmp_path / "karpathy.json", tmp_path)
    assert len(items) == 2 and len(items[0].captions) == 5 and items[0].captions[0] == "a man rides a horse"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "images").mkdir()
    _image(tmp_path / "data" / "images" / "ex_0_img_0.png", 30)
    _image(tmp_path / "data" / "images" / "ex_0_img_1.png", 200)
    (tmp_path / "data" / "examples.jsonl").write_text(json.dumps(
        {"id": 0, "caption_0": "dark", "caption_1": "bright", "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
         "tag": "Object"}) + "\n")
    wino = load_winoground(tmp_path)
    assert wino[0].image_paths[1].name == "ex_0_img_1.png" and wino[0].meta["tag"] == "Object"
    (tmp_path / "swap_att.json").write_text(json.dumps({"7": {"filename": "y.png", "caption": "bright",
                                                              "negative_caption": "dark"}}))
    crepe = load_sugarcrepe(tmp_path / "swap_att.json", tmp_path)
    assert crepe[0].meta == {"id": "7", "category": "swap_att"}

    # a "model" that embeds brightness: images by mean pixel, captions by their word
    def embed_images(images: list[np.ndarray]) -> np.ndarray:
        return np.array([[im.mean() / 255, 1 - im.mean() / 255] for im in images])

    def embed_texts(texts: list[str]) -> np.ndarray:
        return np.array([[1.0, 0.0] if t == "bright" else [0.0, 1.0] if t == "dark" else [0.5, 0.5] for t in texts])

    assert evaluate_choice_items(crepe, embed_images, embed_texts)["accuracy"] == 100
    res = evaluate_winoground_items(wino, embed_images, embed_texts)
    assert (res["text"], res["image"], res["group"]) == (100.0, 100.0, 100.0)
    with pytest.raises(FileNotFoundError, match="examples.jsonl"):
        load_winoground(tmp_path / "nowhere")
