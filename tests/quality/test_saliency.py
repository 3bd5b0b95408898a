"""Saliency IoU (section 3.5): the heat IoU formula, Grad-CAM targets and hooks, Salient ImageNet masks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from replens.models import create_backbone
from replens.quality import DiscriminativeTarget, SalientImageNetSource, discriminative_cams, heat_iou, saliency_iou

from .conftest import TinySource


def test_heat_iou_is_heat_in_intersection_over_heat_in_union():
    cam = np.array([[0.9, 0.6, 0.1], [0.0, 0.7, 0.2]])
    mask = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    # area (cam > 0.5) = {(0,0), (0,1), (1,1)}; union adds (0,2) and (1,0)
    assert heat_iou(cam, mask, 0.5) == pytest.approx((0.9 + 0.7) / (0.9 + 0.6 + 0.7 + 0.1 + 0.0))
    # threshold 0: the area is the heat's support and the IoU its share inside the mask
    assert heat_iou(cam, mask, 0.0) == pytest.approx((0.9 + 0.1 + 0.7) / cam.sum())
    assert np.isnan(heat_iou(np.zeros((2, 2)), np.zeros((2, 2), bool)))
    with pytest.raises(ValueError, match="differ in shape"):
        heat_iou(cam, mask[:1])


def test_target_sums_the_samples_discriminative_highly_activating_features():
    out = torch.zeros(40)
    out[3], out[7], out[11] = 10.0, 10.0, 0.5  # mean 0.51, std 2.19: 3 and 7 exceed mean + 4 std, 11 not
    target = DiscriminativeTarget([7, 11, 15])
    assert target.features(out).tolist() == [7]  # 3 is active but not discriminative
    assert float(target(out)) == pytest.approx(10.0)


def _hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in module.modules())


def test_cams_release_hooks_and_zero_the_images_without_targets():
    torch.manual_seed(0)
    model = create_backbone("small_cnn", widths=(8, 8, 16, 32)).eval()
    src = TinySource(n=6, size=16)
    images = torch.stack([torch.from_numpy(src.read(i).transpose(2, 0, 1).copy()) for i in range(6)])
    with torch.no_grad():
        feats = model(model.preprocess(images))
    cams, n_targets = discriminative_cams(model, images, np.arange(32), eps=1.0)
    assert _hooks(model) == 0
    assert n_targets.tolist() == [len(DiscriminativeTarget(np.arange(32), 1.0).features(f)) for f in feats]
    assert cams.shape == (6, 16, 16) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert n_targets.max() > 0 and cams[n_targets > 0].max() > 0.99  # min-max scaled heatmaps
    none, n_none = discriminative_cams(model, images, [], eps=1.0)  # empty D: no target anywhere
    assert (n_none == 0).all() and (none == 0).all() and _hooks(model) == 0


def test_saliency_iou_on_world_masks(tmp_path):
    from replens.world import WorldConfig, generate_world, load_world

    world = load_world(generate_world(WorldConfig(n=40, size=32, seed=1), tmp_path / "w", progress=False), "train")
    torch.manual_seed(0)
    model = create_backbone("small_cnn", widths=(8, 8, 16, 32))
    result = saliency_iou(model, world, np.arange(32), np.arange(6), eps=1.0, threshold=0.0, batch_size=4)
    assert result.layer == "block4" and _hooks(model) == 0
    scored = ~np.isnan(result.iou_core)
    assert scored.any()
    # recompute one image's IoU from its own heatmap and masks
    i = int(np.flatnonzero(scored)[0])
    sample = world[int(result.indices[i])]
    cams, _ = discriminative_cams(model, sample["image"][None], np.arange(32), eps=1.0)
    assert result.iou_core[i] == pytest.approx(heat_iou(cams[0], world.core_mask(int(result.indices[i])), 0.0))
    summary = result.summary(correct=np.array([True, False] * 3))
    assert summary["images"] == scored.sum() and set(summary) >= {"correct", "misclassified", "miou_core"}
    with pytest.raises(TypeError, match="core_mask"):
        saliency_iou(model, TinySource(n=2), [0], [0])


def test_salient_imagenet_loader(tmp_path):
    masks, images = tmp_path / "masks", tmp_path / "images"
    rows = []
    # class 7 (n000007): feature 10 core (2 of 5 say background), feature 20 spurious (3 of 5)
    for feature, spurious_votes in ((10, 2), (20, 3)):
        for worker in range(5):
            answer = "background" if worker < spurious_votes else "main_object"
            rows.append([worker, "n000007", 7, feature, 1, answer, 5.0, "x"])
    masks.mkdir()
    with open(masks / "discover_spurious_features.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["WorkerId", "Input.wordnet_id", "Input.class_index", "Input.feature_index",
                         "Input.feature_rank", "Answer.main", "Answer.confidence", "Answer.reasons"])
        writer.writerows(rows)
    cls = masks / "n000007"
    for feature in (10, 20):
        (cls / f"feature_{feature}").mkdir(parents=True)
    with open(cls / "image_names_map.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["10", "20"], ["img_a", "img_a"], ["img_b", ""]])
    soft_core = np.zeros((8, 8), np.uint8)
    soft_core[:4] = 255
    soft_sp = np.zeros((8, 8), np.uint8)
    soft_sp[:, 6:] = 200
    for name in ("img_a", "img_b"):
        Image.fromarray(soft_core).save(cls / "feature_10" / f"{name}.JPEG", quality=100)
    Image.fromarray(soft_sp).save(cls / "feature_20" / "img_a.JPEG", quality=100)
    (images / "n000007").mkdir(parents=True)
    for name in ("img_a", "img_b"):
        Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(images / "n000007" / f"{name}.JPEG")
    src = SalientImageNetSource(masks, images, image_size=8)
    assert len(src) == 2 and src.name(0) == "n000007/img_a" and src.classes == ["n000007"]
    assert src[0]["image"].shape == (3, 8, 8)
    core = src.core_mask(0)
    assert core[:4].all() and not core[4:].any()
    assert src.spurious_mask(0)[:, 6:].all() and not src.spurious_mask(0)[:, :5].any()
    assert not src.spurious_mask(1).any()  # img_b has no spurious feature
