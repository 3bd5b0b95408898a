"""Extractor (c): Visual Genome and PSG scene-graph JSON, written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replens.cli import main
from replens.tokens import TokenDataset, load_psg, load_visual_genome


def _vg(root: Path) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id in (1, 2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{image_id}.jpg")
    data = [
        {
            "image_id": 1,
            "objects": [
                {"object_id": 10, "x": 2, "y": 3, "w": 10, "h": 12, "names": ["man"]},
                {"object_id": 11, "x": 20, "y": 5, "w": 15, "h": 20, "names": ["horse"]},
                {"object_id": 12, "x": 30, "y": 25, "w": 8, "h": 8, "names": ["hat"]},
            ],
            "relationships": [
                {"predicate": "Riding", "subject_id": 10, "object_id": 11},
                {"predicate": "wearing", "subject": {"object_id": 10}, "object": {"object_id": 12}},
                {"predicate": "near", "subject_id": 10, "object_id": 99},  # unknown object: skipped
            ],
        },
        {"image_id": 2, "objects": [{"object_id": 1, "x": 0, "y": 0, "w": 5, "h": 5, "names": ["dog"]}],
         "relationships": []},
    ]
    path = root / "scene_graphs.json"
    path.write_text(json.dumps(data))
    return path, images


def test_visual_genome(tmp_path: Path) -> None:
    path, images = _vg(tmp_path)
    records = load_visual_genome(path, images)
    assert [r.name for r in records] == ["1", "2"]
    first = records[0]
    np.testing.assert_array_equal(first.boxes, [[2, 3, 12, 15], [20, 5, 35, 25], [30, 25, 38, 33]])
    assert first.names == ["man", "horse", "hat"]
    assert first.relations == [(0, 1, "riding"), (0, 2, "wearing")]
    graph = first.graph(*first.load_image().shape[:2])
    assert graph.image_size == (40, 48) and graph.masks is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 3, "objects": [{"object_id": 1, "x": 0}]}]))
    with pytest.raises(ValueError, match=r"bad.json image 0 object 0: missing keys \['y', 'w', 'h'\]"):
        load_visual_genome(bad, images)


def test_psg_with_panoptic_masks(tmp_path: Path) -> None:
    seg = np.zeros((20, 30, 3), dtype=np.uint8)
    seg[2:8, 3:10] = (5, 1, 0)  # segment id 5 + 256 = 261
    seg[10:18, 15:28] = (7, 0, 0)  # segment id 7
    Image.fromarray(seg).save(tmp_path / "seg.png")
    Image.fromarray(np.full((20, 30, 3), 100, dtype=np.uint8)).save(tmp_path / "img.jpg")
    data = {
        "thing_classes": ["person", "cup"],
        "stuff_classes": ["table"],
        "predicate_classes": ["holding", "on"],
        "data": [
            {
                "file_name": "img.jpg",
                "image_id": "a1",
                "pan_seg_file_name": "seg.png",
                "segments_info": [{"id": 261, "category_id": 0}, {"id": 7, "category_id": 2}],
                "annotations": [
                    {"bbox": [3, 2, 10, 8], "category_id": 0},
                    {"bbox": [15, 10, 28, 18], "category_id": 2},
                ],
                "relations": [[0, 1, 1]],
            }
        ],
    }
    (tmp_path / "psg.json").write_text(json.dumps(data))
    (rec,) = load_psg(tmp_path / "psg.json", tmp_path)
    assert rec.names == ["person", "table"] and rec.relations == [(0, 1, "on")]
    graph = rec.graph(20, 30)
    np.testing.assert_array_equal(graph.masks[0], np.all(seg == (5, 1, 0), axis=-1))
    np.testing.assert_array_equal(graph.masks[1], np.all(seg == (7, 0, 0), axis=-1))
    data["data"][0]["relations"] = [[0, 5, 0]]
    (tmp_path / "psg.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="entry 0 relation 0: index out of range"):
        load_psg(tmp_path / "psg.json", tmp_path)


def test_scene_graph_extraction_from_the_cli(tmp_path: Path, vl_file: Path) -> None:
    path, images = _vg(tmp_path / "vg")
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"1": ["a man riding a horse"], "2": "a dog"}))
    out = tmp_path / "tok"
    code = main(["tokens", "extract", "--extractor", "scene-graph", "--scene-graphs", str(path), "--images",
                 str(images), "--captions", str(captions), "--vl", str(vl_file), "--out", str(out), "--quiet"])
    assert code == 0
    data = TokenDataset(out)
    assert data.captions == [["a man riding a horse"], ["a dog"]]
    first = data[0]
    assert first.n_objects == 3 and first.relation_names == ["riding", "wearing"]
    assert first.triplets.tolist() == [[0, 1, 0], [0, 2, 1]]
    np.testing.assert_allclose(first.boxes[0], [2 / 48, 3 / 40, 12 / 48, 15 / 40], rtol=1e-6)
    assert (out / "config.yaml").is_file() and json.loads((out / "metrics.json").read_text())["images"] == 2
