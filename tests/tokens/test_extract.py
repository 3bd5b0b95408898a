"""Token extraction: mask pooling, the world's ground truth, geometric predicates, Mask R-CNN."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from replens.models import WeightsError, create_backbone
from replens.tokens import (
    GraphTokenizer,
    MaskRCNNTokenizer,
    RelationEmbedder,
    SceneGraph,
    TokenDataset,
    build_maskrcnn,
    find_maskrcnn_weights,
    geometric_relations,
    mask_pool,
    nearest_neighbours,
    tokenizer_from_cache,
    world_scene_graph,
)
from replens.world import load_world
from replens.world.annotate import relations_of


def test_mask_pool_is_the_masked_mean_of_feature_cells() -> None:
    torch.manual_seed(0)
    maps = torch.randn(5, 4, 4)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # exactly the top-left 2x2 cells
    masks[1, 0:2, 6:8] = True  # one cell: row 0, column 3
    masks[1, 0:1, 0:2] = True  # half of cell (0, 0)
    got = mask_pool(maps, masks)
    torch.testing.assert_close(got[0], maps[:, :2, :2].mean(dim=(1, 2)))
    expected = (1.0 * maps[:, 0, 3] + 0.5 * maps[:, 0, 0]) / 1.5
    torch.testing.assert_close(got[1], expected)
    tiny = torch.zeros(1, 64, 64, dtype=torch.bool)
    tiny[0, 5, 5] = True  # covers almost nothing of its cell: falls back to that cell
    torch.testing.assert_close(mask_pool(maps, tiny)[0], maps[:, 0, 0])


def test_world_scene_graph_is_the_ground_truth(world: Path) -> None:
    data = load_world(world, "train")
    for i in range(10):
        rec, graph = data.record(i), world_scene_graph(data, i)
        visible = [k for k, m in enumerate(data.masks(i)) if m.any()]
        assert len(graph.boxes) == len(visible)
        np.testing.assert_array_equal(graph.boxes, np.array([rec["objects"][k]["box"] for k in visible]))
        np.testing.assert_array_equal(graph.masks, data.masks(i)[visible])
        if len(visible) == len(rec["objects"]):
            assert graph.relations == [(r["subject"], r["object"], r["relation"]) for r in rec["relations"]]
        assert all(rec["objects"][visible[k]]["shape"] in name for k, name in enumerate(graph.names))


def test_geometric_predicates_agree_with_the_world_annotator() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 5))
        xy = rng.integers(0, 40, size=(n, 2))
        boxes = np.concatenate([xy, xy + rng.integers(4, 20, size=(n, 2))], axis=1)
        sizes = [1] * n  # equal sizes: the world adds no size words
        world_rel = {(r["subject"], r["object"], r["relation"]) for r in relations_of(boxes.tolist(), sizes, 64)}
        ours = set(geometric_relations(boxes, (64, 64), config=None))
        spatial = {"left of", "right of", "above", "below", "next to"}
        world_sub = {t for t in world_rel if t[2] in spatial}
        ours_sub = {t for t in ours if t[2] in spatial}
        assert ours_sub == world_sub


def test_inside_overlap_and_size_predicates() -> None:
    boxes = np.array([[0, 0, 40, 40], [10, 10, 20, 20], [20, 20, 50, 50]], dtype=float)
    rel = set(geometric_relations(boxes, (100, 100)))
    assert (1, 0, "inside") in rel and (0, 1, "inside") not in rel
    assert (0, 1, "bigger than") in rel and (1, 0, "smaller than") in rel
    assert (0, 2, "overlapping") in rel and (2, 0, "overlapping") in rel
    assert (1, 2, "overlapping") not in rel
    rels = geometric_relations(boxes, (100, 100))
    pairs = list(dict.fromkeys((s, o) for s, o, _ in rels))
    assert pairs[:2] == [(0, 1), (1, 0)]  # the nearest pair first, spatial predicate first within it
    assert rels[0][2] == "right of"


def test_graph_tokenizer_on_the_world(world: Path, vl) -> None:
    data = load_world(world, "train")
    torch.manual_seed(0)
    backbone = create_backbone("small_cnn")
    tok = GraphTokenizer(backbone, RelationEmbedder(vl))
    images = torch.stack([data[i]["image"] for i in range(4)])
    graphs = [world_scene_graph(data, i) for i in range(4)]
    out = tok.tokenize(images, graphs)
    with torch.no_grad():
        maps = backbone.forward_layers(backbone.preprocess(images), tok.layers)
    for b, (t, g) in enumerate(zip(out, graphs, strict=True)):
        assert t.n_objects == len(g.boxes) and t.n_relations == len(g.relations)
        # I is every stage average pooled and concatenated
        expected_i = torch.cat([m[b].mean(dim=(1, 2)) for m in maps.values()])
        np.testing.assert_allclose(t.image_features, expected_i.numpy(), rtol=1e-4, atol=1e-5)
        # V under a mask equals mask_pool of each stage
        m0 = torch.from_numpy(g.masks[:1])
        expected_v = torch.cat([mask_pool(m[b], m0)[0] for m in maps.values()])
        np.testing.assert_allclose(t.tangible[0], expected_v.numpy(), rtol=1e-4, atol=1e-5)
        # U is the VL text embedding of the predicate
        emb = vl.embed_texts([p for _, _, p in g.relations])
        np.testing.assert_allclose(t.intangible, emb.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(t.neighbours, nearest_neighbours(g.boxes))
        np.testing.assert_allclose(t.boxes, g.boxes / 32.0)


def test_tokenizer_from_cache_reproduces_the_cache(caches: dict[str, Path], world: Path) -> None:
    cache = TokenDataset(caches["test"])
    tok = tokenizer_from_cache(cache)  # no VL model: the cache's relation table covers the words
    data = load_world(world, "test")
    images = torch.stack([data[i]["image"] for i in range(3)])
    again = tok.tokenize(images, [world_scene_graph(data, i) for i in range(3)])
    for a, b in zip(again, cache.samples[:3], strict=True):
        np.testing.assert_allclose(a.tangible, b.tangible, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.intangible, b.intangible, rtol=1e-6)
        np.testing.assert_array_equal(a.triplets, b.triplets)


def test_box_masks_when_a_graph_has_no_masks() -> None:
    graph = SceneGraph(np.array([[2, 4, 6, 8]]), [], (16, 16))
    m = graph.object_masks(8, 8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:4, 1:3] = True
    np.testing.assert_array_equal(m[0], expected)
    with pytest.raises(ValueError, match="outside"):
        SceneGraph(np.zeros((1, 4)), [(0, 1, "on")], (8, 8))


def test_maskrcnn_missing_weights_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from replens.hub import DownloadError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("REPLENS_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth\) is not cached .*--maskrcnn"):
        find_maskrcnn_weights()
    with pytest.raises(WeightsError, match="not found"):
        build_maskrcnn(tmp_path / "nope.pth")
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({"backbone.body.conv1.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(WeightsError, match="do not match"):
        build_maskrcnn(bad)


def test_maskrcnn_tokenizer_runs_a_random_detector(vl) -> None:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_maskrcnn(load=False, min_size=64, max_size=64)
    with torch.no_grad():  # make every class score high, so that a random detector detects something
        model.roi_heads.box_predictor.cls_score.bias.zero_()
        model.roi_heads.box_predictor.cls_score.bias[1:] = 8.0
    tok = MaskRCNNTokenizer(RelationEmbedder(vl), model=model, score_threshold=0.0, max_objects=5)
    image = torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8)
    graphs, image_features, tangible = tok.detect([image])
    (tokens,) = tok.tokenize([image])
    assert time.perf_counter() - t0 < 60
    assert image_features.shape == (1, 5 * 256)  # five FPN levels of 256 channels
    g = graphs[0]
    assert 1 <= len(g.boxes) <= 5 and g.masks.shape[1:] == (48, 64)
    assert tokens.n_objects == len(g.boxes) and tokens.tangible.shape[1] == 5 * 256
    assert g.relations == geometric_relations(g.boxes, (48, 64), g.masks)
    assert set(tokens.relation_names) <= {"left of", "right of", "above", "below", "inside", "overlapping",
                                          "next to", "bigger than", "smaller than"}
    assert all(name in tok.class_names for name in g.names)
