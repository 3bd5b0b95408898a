"""Smoke tests of the chapter 3 (Q-Score), chapter 4 (FALCON), appendix A and appendix B recipes.

Every recipe runs end to end through ``run_recipe`` at the smallest budget: a
tiny world (320 scenes at 32 px, half of them the probe/test split), three
optimiser steps per training, a tiny CLIP trained for three steps, small
FALCON and compression settings through ``ctx.options``. Encoders, worlds,
embeddings and FALCON runs are shared by the recipes through the module's
cache folder, as they are in a real run. The tests check the outputs: values
present and in range, the relations the tables must satisfy (partitions,
symmetry, sums), the figures are PNG files and the paper's numbers are attached.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from replens.apps.reproduce import RecipeContext, get_recipe, list_recipes, load_paper_numbers, run_recipe
from replens.apps.reproduce.helpers import RANDOM_INIT
from support import TINY_VIT_CLIP

TINY_WORLD = {"n": 320, "size": 32, "test_fraction": 0.5, "shard_size": 512}
TINY_TRAIN = {"max_steps": 3, "batch_size": 32}
TINY_OPTIONS: dict[str, Any] = {"min_samples": 3, "max_groups": 6, "max_images": 12, "fractions": "0.2,0.45",
                                "seeds": 1, "saliency_images": 40}
MINE = ("3", "4", "a", "b")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP (the architecture of tests/explain) trained for three steps on a tiny world."""
    from replens.vl import TinyClipTrainConfig, train_tiny_clip
    from replens.world import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("clip")
    world = generate_world(WorldConfig(n=80, size=32, seed=5, test_fraction=0.25, shard_size=64), root / "w",
                           progress=False)
    model = TINY_VIT_CLIP
    train_tiny_clip(world, root / "model.safetensors", TinyClipTrainConfig(model=model, steps=3, batch_size=16),
                    progress=False)
    return root / "model.safetensors"


@pytest.fixture(scope="module")
def runner(cache: Path, tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs")

    def run(id: str, **options: Any) -> dict[str, Any]:
        ctx = RecipeContext(budget="small", data=None, out=root / id, progress=False, cache_dir=cache,
                            world_overrides=TINY_WORLD, train_overrides=TINY_TRAIN,
                            options={**TINY_OPTIONS, "vl": str(tiny_clip), **options})
        res = run_recipe(id, ctx)
        paper = load_paper_numbers(id)
        assert res["paper"] == paper and res["section"] == paper["section"], "the paper's numbers are attached"
        assert res["status"] == "result", f"{id}: no result on the embedded default: {res['no_result']}"
        assert res["budget"] == "small" and res["seconds"] > 0
        for fig in res["figures"]:
            assert (ctx.out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
        assert (ctx.out / "table.md").is_file() and (ctx.out / "result.json").is_file()
        for row in res["rows"]:
            for key, value in row.items():
                if isinstance(value, int | float) and any(t in key for t in ("pct", "auroc", "auprc", "top1",
                                                                              "miou", "iou", "precision", "recall")):
                    assert math.isnan(value) or 0.0 <= value <= 100.0, (id, key, value)  # key numbers: status
        rec = get_recipe(id)  # the claim's numbers come out of every run's rows, or the recipe says why it has none
        if rec.claim is None:
            assert rec.no_claim and res["no_claim"] == rec.no_claim and res["verdict"] is None
        else:
            v = res["verdict"]
            assert v["verdict"] != "no result" and v["n"] == len(res["seeds"]), (id, v)
            assert finite(v["control_mean"]) and finite(v["treatment_mean"]), (id, v)
        res["out"] = ctx.out
        return res

    return run


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_every_recipe_of_chapters_3_4_and_appendices_a_b_has_paper_numbers():
    mine = [r for r in list_recipes() if r.chapter in MINE]
    assert len(mine) == 40
    for r in mine:
        assert load_paper_numbers(r.id)["section"].split(".")[0].lower() == r.section.split(".")[0].lower()


# ---------------------------------------------------------------- chapter 3
def test_fig_3_1_parts_partition_the_features(runner):
    res = runner("fig-3.1")
    parts = {r["part"]: r for r in res["rows"]}
    assert set(parts) == {"lower", "discriminative", "upper"}
    assert sum(r["features"] for r in parts.values()) == 256  # small_cnn, r = 256
    assert parts["discriminative"]["features"] == math.ceil(0.95 * 256) - math.ceil(0.50 * 256)
    assert parts["lower"]["mean_A_pct"] <= parts["discriminative"]["mean_A_pct"] <= parts["upper"]["mean_A_pct"]
    assert res["figures"] == ["activation.png", "heatmaps.png"]


def test_fig_3_2_compression_sizes_grow_with_the_kept_fraction(runner):
    res = runner("fig-3.2")
    sizes = [r["size"] for r in res["rows"]]
    assert sizes == sorted(sizes) and len(sizes) == 2
    assert all(finite(r["discriminative"]) and finite(r["pca"]) and finite(r["all_features"]) for r in res["rows"])


def test_fig_3_3_and_3_5_compare_the_baseline_with_its_qscore_finetune(runner):
    res = runner("fig-3.3")
    assert [r["model"] for r in res["rows"]] == ["baseline", "Q-Score"]
    trainings = res["protocol"]["trainings"]
    assert trainings["simclr-qscore"]["config"]["plugins"] == ["qscore_reg"]
    assert trainings["simclr-qscore"]["config"]["init_from"].endswith("backbone.safetensors")
    assert all(0 <= r["disc_activation_correct"] <= 1 for r in res["rows"])
    res = runner("fig-3.5")
    assert res["protocol"]["baseline_misclassified"] >= len(res["rows"]) > 0
    for r in res["rows"]:
        assert r["prediction_before"] != r["label"] and 0 < r["confidence_before"] <= 1
        assert r["correct_after"] == (r["prediction_after"] == r["label"])


def test_fig_3_4_one_curve_per_method(runner):
    res = runner("fig-3.4")
    assert [r["model"] for r in res["rows"]] == ["SimCLR", "BYOL"]
    for r in res["rows"]:
        assert r["auprc_chance"] == pytest.approx(r["top1"], abs=0.01)  # correct samples are the positives
    assert res["figures"] == ["roc.png", "pr.png"]


def test_table_3_1_baseline_lasso_qscore(runner):
    res = runner("table-3.1")
    assert [r["model"] for r in res["rows"]] == ["SimCLR", "BYOL", RANDOM_INIT]
    for r in res["rows"][:-1]:
        assert r["qscore_gain"] == pytest.approx(r["qscore"] - r["baseline"], abs=0.011)
    assert 0 <= res["rows"][-1]["baseline"] <= 100  # the untrained SimCLR architecture, probed alike
    assert res["verdict"]["control_mean"] == pytest.approx(res["rows"][0]["baseline"])
    plugins = {k: v["config"]["plugins"] for k, v in res["protocol"]["trainings"].items()}
    assert plugins["byol-lasso"] == ["lasso_reg"] and plugins["byol-continued"] == []


def test_fig_3_6_and_3_7_saliency(runner):
    res = runner("fig-3.6")
    rows = res["rows"]
    assert {r["outcome"] for r in rows} <= {"correct", "misclassified"} and rows
    # the claim compares each mask's IoU above its control: the same heatmap against another sample's mask
    excess = [np.mean([r[f"iou_{m}"] - r[f"iou_{m}_other"] for r in rows]) for m in ("spurious", "core")]
    assert get_recipe("fig-3.6").claim.pairs(rows) == pytest.approx(tuple(excess))
    res = runner("fig-3.7")
    assert len(res["rows"]) == 2 * 2 * 2  # methods x (baseline, Q-Score) x outcomes
    assert sum(r["images"] for r in res["rows"][:2]) <= 40


# ---------------------------------------------------------------- chapter 4
def test_fig_4_2_and_4_4_single_features_and_groups(runner):
    res = runner("fig-4.2")
    assert res["rows"] and all(r["highly"] > 3 and r["concepts"] for r in res["rows"])
    assert (res["out"] / "report.html").is_file()
    res = runner("fig-4.4")
    assert [r["mode"] for r in res["rows"]] == ["features", "groups"]
    for r in res["rows"]:
        assert 0 <= r["interpretable"] <= r["examined"] <= min(r["candidates"], 6)


def test_table_4_1_recall_at_six_is_complete(runner):
    res = runner("table-4.1")
    assert [r["top_k"] for r in res["rows"]] == [1, 2, 3, 4, 5, 6]
    assert res["protocol"]["groups_judged"] > 0
    recall = [r["recall"] for r in res["rows"]]
    if math.isnan(recall[-1]):  # recall is relative to the related words of the top 6: none in any group
        assert all(math.isnan(r) for r in recall) and all(r["precision"] == 0 for r in res["rows"])
    else:
        assert recall[-1] == pytest.approx(100.0)  # recall@6 over the top 6: by definition
        assert recall == sorted(recall)


def test_table_4_2_votes_sum_to_one_hundred(runner):
    res = runner("table-4.2")
    assert [r["framework"] for r in res["rows"]][0] == "FALCON"
    assert res["protocol"]["groups_judged"] > 0
    assert sum(r["best_pct"] for r in res["rows"]) == pytest.approx(100.0, abs=0.05)


def test_fig_4_5_4_6_4_7(runner):
    res = runner("fig-4.5")
    assert res["protocol"]["explained_features"] > 0 and res["rows"]
    for r in res["rows"]:
        assert 0 <= r["concepts_in_image"] <= 5
    res = runner("fig-4.6")
    assert res["protocol"]["explained"] <= res["protocol"]["misclassified"]
    assert all(r["ground_truth"] != r["prediction"] for r in res["rows"])
    # groups from the train split (FALCON's probe set), failures of the test split, each at its own position
    assert "images of the train split" in res["protocol"]["probe_set"] and res["protocol"]["failures_of"] == "test split"
    from replens.world import WorldDataset

    world = Path(res["protocol"]["failure_set"].split("world:")[1])
    test = WorldDataset(world, split="test")
    names = {test.record(i)["name"]: test.record(i)["class"] for i in range(len(test))}
    for f in json.loads((res["out"] / "failures.json").read_text())["failures"]:
        assert names[f["sample"]] == f["label"] != f["prediction"]  # a test image, with its true class
    res = runner("fig-4.7")
    assert res["protocol"]["mapped_groups"] == len(res["rows"]) > 0
    for r in res["rows"]:
        assert 0 <= r["carry"] <= 1


def test_falcon_probe_set_is_a_larger_draw_of_the_shared_world(tmp_path: Path):
    """FALCON's probe set at the small budget: the shared world's settings (seed, planted cue) with
    PROBE_WORLD_N scenes; option probe_n changes the size, the paper budget and tests' tiny worlds keep theirs."""
    from dataclasses import replace

    from replens.apps.reproduce.recipes import ch3, ch4

    ctx = RecipeContext(budget="small", data=None, out=tmp_path, progress=False, cache_dir=tmp_path)
    shared = ctx.world_config(**ch3.WORLD)
    probe = ctx.world_config(**ch4.probe_world(ctx))
    assert probe.n == ch4.PROBE_WORLD_N > shared.n
    assert replace(probe, n=shared.n) == shared and probe.spurious == ch3.WORLD["spurious"] > 0
    assert ctx.world_config(**ch4.probe_world(replace(ctx, options={"probe_n": "500"}))).n == 500
    paper = replace(ctx, budget="paper")
    assert paper.world_config(**ch4.probe_world(paper)) == paper.world_config(**ch3.WORLD)
    tiny = replace(ctx, world_overrides=TINY_WORLD)
    assert tiny.world_config(**ch4.probe_world(tiny)).n == TINY_WORLD["n"]


# ---------------------------------------------------------------- appendix A
def test_fig_a_1_sparsity_rows(runner):
    res = runner("fig-a.1")
    for r in res["rows"]:
        assert 0 <= r["exact_zero_pct"] <= r["near_zero_pct"] <= 100 and r["mean_highly"] > 0


def test_tables_a_1_and_a_2(runner):
    res = runner("table-a.1")
    assert {"baseline", "lasso", "qscore", "continued"} <= set(res["rows"][0])
    assert res["rows"][-1]["model"] == RANDOM_INIT
    res = runner("table-a.2")
    avg = [r for r in res["rows"] if r["transfer_dataset"] == "Average"]
    assert [r["model"] for r in avg] == ["SimCLR", "BYOL", RANDOM_INIT]  # the untrained encoder as control
    for a in avg:
        per = [r["baseline"] for r in res["rows"] if r["model"] == a["model"] and r["transfer_dataset"] != "Average"]
        assert a["baseline"] == pytest.approx(np.mean(per), abs=0.011)


def test_figs_a_2_to_a_7(runner):
    res = runner("fig-a.2")
    assert {r["dataset"] for r in res["rows"]} == {"seen", "tinted", "single-object photo"}
    res = runner("fig-a.3")
    assert [r["model"] for r in res["rows"]] == ["baseline", "Q-Score"]
    res = runner("fig-a.4")
    for r in res["rows"]:
        assert r["size"] >= 2 and 0 < r["top_class_share_pct"] <= 100
    res = runner("fig-a.5")
    assert {"pca", "random_mean", "discriminative"} <= set(res["rows"][0])
    res = runner("fig-a.6")
    for r in res["rows"]:
        assert math.isnan(r["correlation"]) or -1 <= r["correlation"] <= 1
    res = runner("fig-a.7")
    assert res["rows"][0]["model"] == "MoCo" and {"lower_tail", "upper_tail"} <= set(res["rows"][0])


def test_fig_a_8_search_order(runner):
    res = runner("fig-a.8")
    first = [r for r in res["rows"] if r["search"] == "lambda1"]
    second = [r for r in res["rows"] if r["search"] == "lambda2"]
    assert [r["lambda2"] for r in first] == [0.0, 0.0, 0.0] and len(second) == 2
    top = max(r["val_top1"] for r in first)  # selected on the validation split; ties -> the smallest lambda
    best = min(r["lambda1"] for r in first if r["val_top1"] >= top - 0.01)
    assert all(r["lambda1"] == best for r in second) and res["protocol"]["best_lambda1"] == best
    assert "validation split" in res["protocol"]["selection"]


def test_fig_a_9_and_a_10(runner):
    res = runner("fig-a.9")
    assert [r["model"] for r in res["rows"]] == ["Supervised", "Robust (l2 PGD)", "SimCLR"]
    robust = res["protocol"]["trainings"]["robust"]["config"]
    assert robust["method"] == "supervised" and robust["method_args"]["adversarial_eps"] > 0
    res = runner("fig-a.10")
    assert len(res["rows"]) == 4
    for r in res["rows"]:
        assert r["mean_highly"] > 0 and 0.1 <= r["mean_confidence"] <= 1.0  # 10 classes: confidence >= 1/10


@pytest.mark.parametrize("id", ["fig-a.11", "fig-a.12", "fig-a.13", "fig-a.14"])
def test_figs_a_11_to_a_14_one_class_each(runner, id):
    res = runner(id)
    assert [r["feature_kind"] for r in res["rows"]] == ["discriminative", "lowly activating"]
    disc, low = res["rows"]
    assert disc["class"] == low["class"] == res["protocol"]["class"]
    assert disc["mean_activation_correct"] >= low["mean_activation_correct"] or math.isnan(
        disc["mean_activation_correct"])


# ---------------------------------------------------------------- appendix B
def test_table_b_1_and_fig_b_1_shared_concepts(runner):
    res = runner("table-b.1")
    stats = {r["model"]: r for r in res["rows"]}
    assert list(stats) == ["SimCLR", "MoCo", "Supervised"]
    res = runner("fig-b.1")
    shared = {(r["model"], r["other"]): r for r in res["rows"]}
    for (a, b), r in shared.items():
        assert r["shared"] == shared[(b, a)]["shared"]  # symmetric
        assert r["shared"] <= min(r["own_concepts"], shared[(b, a)]["own_concepts"])
        assert r["own_concepts"] == stats[a]["unique_concepts"]
    for name, count in res["protocol"]["unshared_counts"].items():
        assert count <= stats[name]["unique_concepts"]


def test_table_b_3_and_fig_b_2(runner):
    res = runner("table-b.3")
    for r in res["rows"]:
        assert r["percent_features"] == pytest.approx(100 * r["features"] / r["dim"], abs=0.01)
    res = runner("fig-b.2")
    for r in res["rows"]:
        assert 0 <= r["interpretable"] <= r["groups"] and r["group_size"] >= 1


def test_figs_b_3_b_4_b_6_b_7_b_8(runner):
    res = runner("fig-b.3")
    sims = [r["avg_clip_similarity"] for r in res["rows"]]
    assert sims == sorted(sims)
    res = runner("fig-b.4")
    assert [r["relevance"] for r in res["rows"]] == ["relevant", "irrelevant"]
    res = runner("fig-b.6")
    assert all(r["concepts"] <= 6 for r in res["rows"])
    res = runner("fig-b.7")
    assert all(r["unseen_images"] > 0 for r in res["rows"])
    res = runner("fig-b.8")
    assert [r["layer"] for r in res["rows"]] == ["block1", "block2", "block3", "block4"]
    assert [r["channels"] for r in res["rows"]] == [32, 64, 128, 256]
