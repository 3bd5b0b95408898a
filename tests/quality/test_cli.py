"""``replens qscore`` end to end on a tiny world."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from replens.cli import main
from replens.models import load_embeddings
from replens.quality import band_features, qscore_array


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from replens.world import WorldConfig, generate_world

    return generate_world(WorldConfig(n=120, size=32, seed=2), tmp_path_factory.mktemp("w") / "world", progress=False)


def test_qscore_with_labels_test_split_and_saliency(world, tmp_path):
    out = tmp_path / "run"
    code = main(["qscore", "--model", "small_cnn", "--data", f"world:{world}?split=train",
                 "--test-data", f"world:{world}?split=test", "--labels", "--band", "30,95", "--eps", "2",
                 "--fractions", "0.3", "--seeds", "1", "--saliency", "4", "--saliency-threshold", "0",
                 "--out", str(out), "--quiet", "--seed", "3"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("config.yaml", "scores.parquet", "failures.csv", "feature_sets.json", "activation.png",
                 "roc.png", "pr.png", "compression.png"):
        assert (out / name).is_file(), name
    cols = pq.read_table(out / "scores.parquet").to_pydict()
    train_emb = load_embeddings(out / "embeddings-train")
    test_emb = load_embeddings(out / "embeddings-test")
    ref_train = qscore_array(np.asarray(train_emb.features), eps=2, band=(30, 95))
    ref_test = qscore_array(np.asarray(test_emb.features), eps=2, discriminative=ref_train.discriminative)
    split = np.array(cols["split"])
    np.testing.assert_allclose(np.array(cols["qscore"])[split == "train"], ref_train.scores, rtol=1e-6)
    np.testing.assert_allclose(np.array(cols["qscore"])[split == "test"], ref_test.scores, rtol=1e-6)
    sets = json.loads((out / "feature_sets.json").read_text())
    assert sets["discriminative"] == ref_train.discriminative.tolist() and sets["band"] == [30.0, 95.0]
    correct = np.array([c for c, s in zip(cols["correct"], cols["split"], strict=True) if s == "test"], dtype=bool)
    assert metrics["probe"]["top1"] == pytest.approx(100 * correct.mean())
    assert metrics["failure_prediction"]["count"] == len(test_emb)
    (point,) = metrics["compression"]["points"]
    assert point["size"] == len(band_features(np.array(sets["percentages"]), *point["band"]))
    assert metrics["saliency"]["images"] + metrics["saliency"]["skipped_no_discriminative"] \
        + metrics["saliency"]["skipped_zero_heatmap"] == 4
    assert {"rankme", "alpha_req"} <= set(metrics["spectrum"])
    with open(out / "failures.csv") as handle:
        rows = list(csv.DictReader(handle))
    q = [float(r["qscore"]) for r in rows]
    assert q == sorted(q) and len(rows) == len(test_emb)


def test_qscore_from_embeddings_without_labels_csv(world, tmp_path):
    emb = tmp_path / "emb"
    assert main(["embed", "--model", "small_cnn", "--data", f"world:{world}?split=train", "--out", str(emb),
                 "--quiet"]) == 0
    out = tmp_path / "run"
    assert main(["qscore", "--embeddings", str(emb), "--format", "csv", "--top-failures", "5", "--out", str(out),
                 "--quiet"]) == 0
    with open(out / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    ref = qscore_array(np.asarray(load_embeddings(emb).features))
    np.testing.assert_allclose([float(r["qscore"]) for r in rows], ref.scores, rtol=1e-6)
    assert all(r["correct"] == "" for r in rows)
    with open(out / "failures.csv") as handle:
        failures = list(csv.DictReader(handle))
    assert len(failures) == 5 and failures[0]["name"] == rows[int(np.argmin(ref.scores))]["name"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "failure_prediction" not in metrics and metrics["qscore"]["train"]["samples"] == len(rows)
    # labels without a second split: a seeded holdout of the one split is judged
    out2 = tmp_path / "holdout"
    assert main(["qscore", "--embeddings", str(emb), "--labels", "--holdout", "0.25", "--no-compression",
                 "--out", str(out2), "--quiet"]) == 0
    metrics = json.loads((out2 / "metrics.json").read_text())
    assert metrics["probe"]["eval_split"] == "train"
    assert metrics["probe"]["eval_samples"] == round(0.25 * len(rows))
    assert metrics["probe"]["train_samples"] == len(rows) - round(0.25 * len(rows))
    assert not (out2 / "compression.png").exists() and (out2 / "roc.png").is_file()


def test_qscore_errors(world, tmp_path, capsys):
    assert main(["qscore", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "give --model and --data, or --embeddings" in capsys.readouterr().err
    assert main(["qscore", "--embeddings", str(tmp_path / "missing"), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "no meta.json" in capsys.readouterr().err
    assert main(["qscore", "--model", "small_cnn", "--data", f"world:{world}", "--band", "90,10",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "--band" in capsys.readouterr().err
