"""End to end: ``replens captions build`` and ``replens explain`` (groups, failures, transfer) via ``main``."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from replens.cli import main
from replens.explain.bank import world_caption_texts


def test_explain_end_to_end(tiny_world: Path, tiny_clip_path: Path, tmp_path: Path):
    captions = tmp_path / "captions.txt"
    texts = world_caption_texts(relational=0, distractors=30)
    captions.write_text("\n".join(texts[::40]) + "\n")
    bank = tmp_path / "bank"
    assert (
        main(
            [
                "captions",
                "build",
                "--from",
                str(captions),
                "--vl",
                str(tiny_clip_path),
                "--shard-size",
                "100",
                "--out",
                str(bank),
                "--quiet",
            ]
        )
        == 0
    )
    manifest = json.loads((bank / "bank.json").read_text())
    assert manifest["count"] == len(texts[::40]) and len(manifest["shards"]) == -(-manifest["count"] // 100)

    data = f"world:{tiny_world}?split=test"
    common = [
        "--data",
        data,
        "--vl",
        str(tiny_clip_path),
        "--captions",
        str(bank),
        "--alpha-std",
        "3",
        "--min-samples",
        "3",
        "--gamma",
        "-1",
        "--max-groups",
        "3",
        "--quiet",
    ]
    run1 = tmp_path / "run1"
    assert (
        main(
            [
                "explain",
                "--model",
                "small_cnn",
                *common,
                "--failures",
                "--train-data",
                f"world:{tiny_world}?split=train",
                "--out",
                str(run1),
            ]
        )
        == 0
    )

    concepts = json.loads((run1 / "concepts.json").read_text())
    groups = concepts["groups"]
    assert 1 <= len(groups) <= 3 and all(g["interpretable"] for g in groups)  # gamma -1: all interpretable
    raw = np.load(run1 / "representations.npy")
    h = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    alpha = concepts["summary"]["alpha"]
    assert abs(alpha - (h.mean() + 3 * h.std())) < 1e-5
    names = json.loads((run1 / "rows.json").read_text())["names"]
    row = {n: i for i, n in enumerate(names)}
    for g in groups:
        rows = [row[n] for n in g["highly"]]
        active = h[rows] >= alpha
        assert (active[:, g["features"]]).all() and active.sum(1).tolist() == [len(g["features"])] * len(rows)
        assert len(g["highly"]) > 3 and len(g["lowly"]) <= 10 and set(g["lowly"]).isdisjoint(g["highly"])
        assert all(len(caps) == 5 for caps in g["highly_captions"])
        scores = [w["score"] for w in g["words"]]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 8
        removed = {r["term"] for r in g["removed"]}
        assert removed.isdisjoint(w["term"] for w in g["words"])
        assert all(r["low"] >= 0.1 for r in g["removed"])
    with open(run1 / "concepts.csv") as fh:
        rows_csv = list(csv.DictReader(fh))
    words_csv = [(r["group"], r["term"]) for r in rows_csv if r["kind"] == "word"]
    assert words_csv == [(g["group"], w["term"]) for g in groups for w in g["words"]]

    page = (run1 / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for src in re.findall(r'src="([^"]+)"', page):
        assert (run1 / src).is_file(), src
    metrics = json.loads((run1 / "metrics.json").read_text())
    assert set(metrics["ground_truth"]["top_k"]["precision"]) == {"1", "2", "3", "4", "5", "6"}
    assert "failures" in metrics and metrics["failures"]["misclassified"] >= metrics["failures"]["explained"]
    failures = json.loads((run1 / "failures.json").read_text())["failures"]
    assert all(f["label"] != f["prediction"] for f in failures)
    assert "spurious" in metrics["failures"] and metrics["failures"]["spurious"]["cue"] == "marker"

    run2 = tmp_path / "run2"
    assert (
        main(
            [
                "explain",
                "--model",
                "resnet_tiny",
                *common,
                "--transfer-from",
                str(run1),
                "--transfer-std",
                "2",
                "--out",
                str(run2),
            ]
        )
        == 0
    )
    transfer = json.loads((run2 / "transfer.json").read_text())
    assert transfer["source_run"] == str(run1)
    for t in transfer["groups"]:
        assert t["target_features"] and (t["carry"] != t["carry"] or 0.0 <= t["carry"] <= 1.0)

    assert (
        main(
            [
                "explain",
                "--model",
                "small_cnn",
                *common,
                "--transfer-from",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "run3"),
            ]
        )
        == 2
    )


def test_failures_of_another_split_than_the_probe_set(tiny_world: Path, tiny_clip_path: Path, tmp_path: Path):
    """Groups from the train split (the probe set D), failures of the test split (``--failure-data``): each
    failure is a test sample the train-fitted probe gets wrong, found by its own position in the test split."""
    from replens.data import open_source

    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(world_caption_texts(relational=0, distractors=30)[::40]) + "\n")
    bank = tmp_path / "bank"
    assert main(["captions", "build", "--from", str(captions), "--vl", str(tiny_clip_path), "--out", str(bank),
                 "--quiet"]) == 0
    train, test = f"world:{tiny_world}?split=train", f"world:{tiny_world}?split=test"
    out = tmp_path / "run"
    assert main(["explain", "--model", "small_cnn", "--data", train, "--vl", str(tiny_clip_path), "--captions",
                 str(bank), "--alpha-std", "3", "--min-samples", "3", "--gamma", "-1", "--max-groups", "2",
                 "--failures", "--train-data", train, "--failure-data", test, "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "rows.json").read_text())
    source = open_source(test)
    assert len(rows["names"]) == len(open_source(train))  # the groups' probe set is the train split
    record = json.loads((out / "failures.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())["failures"]
    assert record["data"] == metrics["data"] == test and metrics["explained"] == len(record["failures"]) > 0
    assert metrics["misclassified"] == metrics["explained"]  # every test mistake (fewer than the cap)
    classes = list(source.classes)
    test_names = set()
    for f in record["failures"]:
        sample = source[f["index"]]
        assert sample["name"] == f["sample"] and classes[int(sample["label"])] == f["label"] != f["prediction"]
        test_names.add(f["sample"])
    assert test_names.isdisjoint(rows["names"])  # test samples, not rows of the probe set
    from replens.explain.outputs import image_strip

    for k, f in enumerate(record["failures"][:3]):  # the page shows the test images, in the record's order
        shown = (out / "images" / f"failure-{k}.png").read_bytes()
        assert shown == image_strip([source[f["index"]]["image"]], size=64)
