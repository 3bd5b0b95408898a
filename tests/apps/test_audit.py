"""``replens audit`` end to end on a tiny world: train (VICReg, here with DDM + FDA), probe, Q-Score, FALCON, the HTML
report in headless Chromium, resume, and the diagnose-only mode with --model/--data."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from replens.cli import main
from support import TINY_VIT_CLIP


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from replens.world import WorldConfig, generate_world

    # a planted cause as in the default audit: the marker colour tied to the class in half the train images
    cfg = WorldConfig(n=240, size=32, seed=5, test_fraction=0.4, shard_size=128, spurious=0.5)
    return Path(generate_world(cfg, tmp_path_factory.mktemp("world") / "w", progress=False))


@pytest.fixture(scope="module")
def vl_and_bank(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from replens.explain.bank import build_bank, world_caption_texts
    from replens.vl import TinyClipTrainConfig, load_vl_model, train_tiny_clip

    model = TINY_VIT_CLIP
    root = tmp_path_factory.mktemp("vl")
    train_tiny_clip(world, root / "model.safetensors", TinyClipTrainConfig(model=model, steps=3, batch_size=16),
                    progress=False)
    build_bank(world_caption_texts(relational=0, distractors=30)[::40], load_vl_model(root / "model.safetensors"),
               root / "bank", shard_size=100)
    return root / "model.safetensors", root / "bank"


@pytest.fixture(scope="module")
def audit(world: Path, vl_and_bank: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    vl, bank = vl_and_bank
    out = tmp_path_factory.mktemp("audit") / "run"
    args = ["audit", "--world", str(world), "--set", "train.epochs=2", "--set", "train.batch_size=32",
            "--set", "train.plugins=[ddm, fda]",
            "--set", f"vl={vl}", "--set", f"captions={bank}", "--set", f"cache_dir={out.parent / 'cache'}",
            "--set", "explain_args=[--alpha-std, '3', --min-samples, '3', --gamma, '-1', --max-groups, '4']",
            "--set", "failures_shown=5", "--out", str(out), "--quiet"]
    assert main(args) == 0
    (out.parent / "args.json").write_text(json.dumps(args))
    return out


def _scores(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "qscore" / "scores.csv", newline="") as handle:
        return {r["name"]: r for r in csv.DictReader(handle) if r["split"] == "test"}


def test_audit_trains_vicreg_with_ddm_and_fda_and_probes_against_random_init(audit: Path) -> None:
    summary = json.loads((audit / "summary.json").read_text())
    train_cfg = json.loads((audit / "train" / "train_summary.json").read_text())
    assert train_cfg["steps"] == 2 * (144 // 32)  # 144 train scenes, drop_last batches, 2 epochs
    ov = summary["overview"]
    assert ov["plugins"] == ["ddm", "fda"] and ov["method"] == "vicreg" and ov["test_samples"] == 96
    probe = json.loads((audit / "trained" / "probe.json").read_text())
    rows = {(r["encoder"], r["probe"]): r for r in summary["accuracy"]["rows"]}
    assert rows[("vicreg+ddm+fda", "linear")]["all"] == probe["linear"]["top1"] == ov["linear_top1"]
    random_probe = json.loads((audit / "random_init" / "probe.json").read_text())
    assert rows[("random init", "knn")]["per_domain"] == {
        d: random_probe["knn"]["per_domain"].get(d) for d in summary["accuracy"]["domains"]}
    assert set(summary["accuracy"]["domains"]) == {"photo", "cartoon", "sketch", "painting"}


def test_qscore_section_matches_the_per_sample_scores(audit: Path) -> None:
    from sklearn.metrics import roc_auc_score

    summary = json.loads((audit / "summary.json").read_text())
    q = summary["qscore"]
    scores = _scores(audit)
    correct = np.array([r["correct"] == "True" for r in scores.values()])
    values = np.array([float(r["qscore"]) for r in scores.values()])
    assert q["n"] == len(scores) == 96 and len(q["correct"]) == correct.sum() and len(q["wrong"]) == (~correct).sum()
    assert sorted(q["wrong"]) == pytest.approx(sorted(values[~correct].tolist()))
    if correct.any() and not correct.all():
        assert q["auroc"] == pytest.approx(100 * roc_auc_score(correct, values))
    assert summary["compression"]["k"] == sorted(summary["compression"]["k"])


def test_failures_are_misclassified_lowest_qscore_first_with_images(audit: Path) -> None:
    summary = json.loads((audit / "summary.json").read_text())
    failures = summary["failures"]
    explained = json.loads((audit / "explain" / "failures.json").read_text())["failures"]
    assert 0 < len(failures) <= 5
    q = [f["qscore"] for f in failures]
    assert q == sorted(q)
    every_failure_q = sorted(float(_scores(audit)[f["sample"]]["qscore"]) for f in explained)
    assert q == pytest.approx(every_failure_q[: len(q)])  # the lowest Q-Scores among all explained failures
    for f in failures:
        assert f["label"] != f["predicted"] and (audit / f["image"]).stat().st_size > 100
        assert f["explanation"].startswith(f"predicted {f['predicted']} for a {f['label']}")


def test_report_loads_in_chromium_with_every_image(audit: Path, open_in_chromium: Callable[..., dict[str, Any]]):
    summary = json.loads((audit / "summary.json").read_text())
    assert summary["groups"] and all(g["concepts"] for g in summary["groups"])
    for name in ("accuracy", "qscore_histogram", "roc", "pr", "compression", "failures", "groups"):
        assert (audit / summary["figures"][name]).is_file(), name
    page = open_in_chromium(audit / "index.html", audit / "screenshot.png")
    assert page["errors"] == [] and all(u.startswith("file://") for u in page["requests"])
    assert len(page["images"]) >= 5 + len(summary["failures"]) + len(summary["groups"])
    assert all(img["done"] and img["w"] > 0 for img in page["images"])
    assert "Overview" in (audit / "index.html").read_text() and "| all |" in (audit / "summary.md").read_text()


def test_rerun_resumes_from_finished_steps(audit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in (audit / "train" / "backbone.safetensors",
                                               audit / "qscore" / "metrics.json", audit / "explain" / "metrics.json")}
    before = json.loads((audit / "summary.json").read_text())
    config = json.loads(json.dumps(before["config"]))
    assert main(json.loads((audit.parent / "args.json").read_text())) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    after = json.loads((audit / "summary.json").read_text())
    assert after["accuracy"] == before["accuracy"] and after["failures"] == before["failures"]
    assert after["config"] == config
    # step times add up over runs: the rerun reports the compute the audit took, not its own seconds
    assert after["runs"] == before["runs"] + 1
    assert after["timings"]["train_s"] >= before["timings"]["train_s"] > 0
    assert after["seconds"] >= before["seconds"] + sum(after["timings"].values()) - sum(before["timings"].values())
    assert f"over {after['runs']} runs into this folder" in (audit / "summary.md").read_text()


def test_model_mode_diagnoses_a_given_encoder_without_training(audit: Path, world: Path, tmp_path: Path) -> None:
    out = tmp_path / "diag"
    code = main(["audit", "--model", "small_cnn", "--weights", str(audit / "train" / "backbone.safetensors"),
                 "--data", f"world:{world}", "--no-falcon", "--out", str(out), "--quiet"])
    assert code == 0 and not (out / "train").exists()
    summary = json.loads((out / "summary.json").read_text())
    trained = json.loads((audit / "trained" / "probe.json").read_text())
    assert summary["overview"]["linear_top1"] == pytest.approx(trained["linear"]["top1"])  # same encoder, same probe
    assert "failures" not in summary and summary["qscore"]["n"] == 96


def test_model_mode_errors_name_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--model", "small_cnn", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["audit", "--model", "small_cnn", "--data", "npz:/nope.npz", "--out", str(tmp_path / "b")]) == 2
    assert "--test-data" in capsys.readouterr().err


def test_headline_states_accuracy_auroc_and_group_count_in_words() -> None:
    from replens.apps.audit import _headline

    summary = {"overview": {"encoder": "small_cnn", "linear_top1": 22.917, "test_samples": 1200,
                            "random_linear_top1": 13.333, "classes": [str(k) for k in range(10)]},
               "qscore": {"auroc": 46.78}, "groups": [{"features": [150]}],
               "falcon": {"interpretable_groups": 1, "ground_truth_precision_at_1": 100.0}}
    assert _headline(summary) == ("small_cnn reaches 22.9% linear-probe top-1 on 1200 test images (random init 13.3%, "
                                  "chance 10%); its Q-Score flags probe failures without labels with AUROC 46.8 "
                                  "(chance 50); 1 feature group is explained in words (1 interpretable; true top "
                                  "concept in 100%).")
    summary["groups"] = [{"features": [1]}, {"features": [2, 3]}]
    del summary["falcon"]
    assert _headline(summary).endswith("; 2 feature groups are explained in words.")
    del summary["groups"], summary["qscore"]
    assert _headline(summary).endswith("(random init 13.3%, chance 10%).")


def test_verdicts_follow_their_stated_tests() -> None:
    from replens.apps.audit import _auroc_ci, _verdicts

    # Hanley & McNeil's standard error: AUROC 0.5 with 50 + 50 samples has SE 0.0577 (their Table 1 case)
    lo, hi = _auroc_ci(50.0, 50, 50)
    assert (hi - lo) / 2 == pytest.approx(1.96 * 100 * 0.0577, abs=0.2)
    base = {"overview": {"linear_top1": 60.0, "random_linear_top1": 25.0, "test_samples": 1200,
                         "classes": [str(k) for k in range(10)]}}
    clear = _verdicts({**base, "qscore": {"auroc": 70.0, "auprc": 80.0, "correct_rate": 60.0,
                                          "correct": [0.0] * 720, "wrong": [0.0] * 480}})
    assert clear[0].startswith("Encoder learns: 60.0% linear-probe top-1 vs 25.0%")
    assert clear[1].startswith("Q-Score separates correct from wrong without labels: AUROC 70.0 vs 50 by chance")
    noise = _verdicts({"overview": {**base["overview"], "linear_top1": 26.0},
                       "qscore": {"auroc": 51.0, "auprc": 60.0, "correct_rate": 60.0,
                                  "correct": [0.0] * 720, "wrong": [0.0] * 480}})
    assert noise[0].startswith("Encoder does not beat its random init") and "does not separate" in noise[1]
    reversed_ = _verdicts({**base, "qscore": {"auroc": 40.0, "auprc": 50.0, "correct_rate": 60.0,
                                              "correct": [0.0] * 720, "wrong": [0.0] * 480}})
    assert "ranks wrong above correct" in reversed_[1]
    cause = {"with_marker": 400, "cue_failures": 80, "share": 20.0, "chance_share": 10.0, "strength": 0.5,
             "cue_failures_colourless": 0, "named_share": 25.0}
    pattern = _verdicts({**base, "failure_causes": {**cause, "kind": "pattern"}})[-1]
    assert pattern.startswith("Planted cause (marker pattern tied to the class in 50% of train images")
    assert pattern.endswith("FALCON names the marker pattern for 25% of them.")
    colour = _verdicts({**base, "failure_causes": {**cause, "cue_failures_colourless": 8}})[-1]  # older summaries
    assert "marker colour tied" in colour and "the 8 in sketches show the marker as a grey level" in colour


def test_planted_cause_and_vl_accuracy_are_counted_from_the_failures(audit: Path, world: Path) -> None:
    from replens.world import WorldDataset
    from replens.world.vocab import MARKERS, SHAPES

    summary = json.loads((audit / "summary.json").read_text())
    cause = summary["failure_causes"]
    failures = json.loads((audit / "explain" / "failures.json").read_text())["failures"]
    rows = json.loads((audit / "explain" / "rows.json").read_text())
    test = WorldDataset(world, split="test")
    assert len(rows["names"]) == len(WorldDataset(world, split="train"))  # FALCON's probe set: the train split
    cue = named = grey = 0
    for f in failures:  # failures of the test split, each at its position there
        record = test.record(int(f["index"]))
        assert record["name"] == f["sample"]
        marker = record["marker"]
        if marker is not None and MARKERS.index(marker) == SHAPES.index(f["prediction"]):
            cue += 1
            if record["domain"] == "sketch":  # the marker is a grey level there: not nameable by its colour
                grey += 1
                continue
            named += bool({marker, f"{marker} patch"} & {w["term"] for w in f["words"][:8] + f["phrases"][:8]})
    assert cause["failures"] == len(failures) and cause["cue_failures"] == cue and cause["named"] == named
    assert cause["cue_failures_colourless"] == grey
    assert cause["strength"] == 0.5 and cause["chance_share"] == 10.0
    assert "planted_cause" in summary["protocol"] and "Protocol" in (audit / "summary.md").read_text()
    explain_metrics = json.loads((audit / "explain" / "metrics.json").read_text())
    precision = explain_metrics["ground_truth"]["top_k"]["precision"]["1"]  # JSON keys: strings
    assert summary["falcon"]["ground_truth_precision_at_1"] == pytest.approx(precision)  # the fresh run's int keys
    vl = summary["falcon"]["vl_accuracy"]
    assert 0 <= vl["shape_crops"] <= 100 and 0 <= vl["shape_images"] <= 100 and vl["images"] == 96
    assert summary["overview"]["verdicts"][0].startswith("Encoder")
    assert any(v.startswith("Planted cause") for v in summary["overview"]["verdicts"]) == (cause["with_marker"] > 0)


def test_encoding_section_is_the_correlation_ratio_of_the_test_embeddings(audit: Path, world: Path) -> None:
    from replens.evaluate.factors import correlation_ratio
    from replens.models import load_embeddings
    from replens.world import WorldDataset

    summary = json.loads((audit / "summary.json").read_text())
    enc = {e["factor"]: e for e in summary["encoding"]["factors"]}
    assert list(enc) == ["class", "domain", "planted cue"]
    emb = load_embeddings(audit / "trained" / "embeddings-test")
    x = np.asarray(emb.features, dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cues = WorldDataset(world, split="test").spurious_cues[emb.index]
    for name, labels in (("class", emb.labels), ("domain", emb.domains), ("planted cue", cues)):
        eta = correlation_ratio(x, labels)
        assert enc[name]["best"] == pytest.approx(eta.max()) and enc[name]["top_features"][0] == int(eta.argmax())
    d = json.loads((audit / "qscore" / "feature_sets.json").read_text())["discriminative"]
    assert enc["domain"]["median_in"]["discriminative"] == pytest.approx(
        np.median(correlation_ratio(x, emb.domains)[d]))
    assert any(v.startswith("What single features encode") for v in summary["overview"]["verdicts"])
    assert "## What single features encode" in (audit / "summary.md").read_text()


def test_random_init_control_has_the_audited_architecture(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from replens.apps.audit import _architecture
    from replens.models import create_backbone

    assert _architecture(None) == {}  # pretrained weights by name: the default architecture
    for widths in ([8, 8, 16, 48], [8, 8, 16, 32]):  # trained here or given with --weights: the file's header
        weights = tmp_path / f"w{widths[-1]}.safetensors"
        state = {k: v.contiguous() for k, v in create_backbone("small_cnn", widths=widths).state_dict().items()}
        save_file(state, str(weights), metadata={"backbone": "small_cnn", "backbone_args": f'{{"widths": {widths}}}'})
        assert _architecture(str(weights)) == {"widths": widths}
        assert create_backbone("small_cnn", **_architecture(str(weights))).feature_dim == widths[-1]


def test_training_seed_follows_seed_or_train_seed_and_train_seed_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replens.apps.audit import AuditConfig, _train_config

    assert _train_config(AuditConfig(seed=4)).seed == 4  # --seed seeds the training too
    assert _train_config(AuditConfig(seed=4, train_seed=1)).seed == 1  # the training alone, same world
    assert AuditConfig(seed=4, train_seed=1).train.seed == 0  # the rest of the training config is untouched
    # train.seed would be silently replaced: refused before any world or training, naming the option to use
    assert main(["audit", "--set", "train.seed=3", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "train_seed=3" in capsys.readouterr().err and not (tmp_path / "a" / "train").exists()


_VL_SCRIPT = """
from pathlib import Path
import sys
from replens.apps.audit import AuditConfig, _start_vl_training, _stop_vl_training, _tiny_clip_config, _vl_name
from replens.vl import tiny_clip_cache_path

# no `if __name__ == "__main__":` guard, as in many users' scripts: the child must not run this file again
cfg = AuditConfig(world_n=120, world_size=16, vl_steps=2, cache_dir=sys.argv[1], domains=["photo", "sketch"])
process = _start_vl_training(cfg)
assert process is not None
try:
    path = _vl_name(cfg, False, process)
finally:
    _stop_vl_training(process)
assert process.error_file.closed
assert Path(path) == tiny_clip_cache_path(_tiny_clip_config(cfg), cfg.cache_dir) and Path(path).is_file(), path
assert _start_vl_training(cfg) is None  # cached now: nothing to train beside the encoder
print("trained", path)
"""


def test_tiny_clip_trains_in_a_second_interpreter_even_from_an_unguarded_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text(_VL_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("trained") == 1  # the script ran once: the child did not re-run it


def test_a_failed_background_tiny_clip_names_its_error(tmp_path: Path) -> None:
    from replens.apps.audit import AuditConfig, _start_vl_training, _stop_vl_training, _vl_name

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cfg = AuditConfig(world_n=120, world_size=16, vl_steps=2, cache_dir=str(blocker))
    process = _start_vl_training(cfg)
    try:
        with pytest.raises(RuntimeError, match=r"tiny CLIP in a background process failed \(exit code 1\): \w+Error"):
            _vl_name(cfg, False, process)
    finally:
        _stop_vl_training(process)
