"""Single-run verdicts (a bootstrap over test samples) and the Q-Score recipes on a supervised checkpoint.

The verdict cases are hand-made AUROC effects; the recipe cases run Figures 3.4
and 3.2 through ``run_recipe`` on a random-init CIFAR ResNet-20 saved in the
shared checkpoints' format (``{"best_prec1", "state_dict"}`` with ``module.``
keys) beside tiny CIFAR-10-like WebDataset shards, all in tmp_path.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from replens.apps.reproduce import RecipeContext, run_recipe
from replens.apps.reproduce.recipes.ch3 import auroc_percent, first_auroc_vs_chance
from replens.apps.reproduce.verdict import (
    HOLDS,
    NO_RESULT,
    NOT_SIGNIFICANT,
    REVERSED,
    Claim,
    judge,
    resampled_verdict,
)

CLASSES = ["airplane", "bird", "cat"]


def auroc_samples(effect: float, n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Q-Scores that rank correct samples above wrong ones by ``effect`` standard deviations (one encoder)."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.6
    scores = rng.normal(size=n) + effect * correct
    return {"qscore": scores[:, None], "correct": correct[:, None]}


def test_auroc_percent_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    correct = rng.random(300) < 0.7
    scores = np.round(rng.normal(size=300) + correct, 1)  # rounded: many ties
    assert auroc_percent(correct, scores) == pytest.approx(100 * roc_auc_score(correct, scores))
    assert np.isnan(auroc_percent(np.ones(5, dtype=bool), np.arange(5.0)))  # one outcome only


def test_bootstrap_over_test_samples_holds_on_a_clear_effect_and_reverses_on_the_opposite():
    v = resampled_verdict(auroc_samples(1.5), first_auroc_vs_chance, resamples=500)
    assert v.verdict == HOLDS and v.n == 400 and v.control_mean == 50.0 and v.treatment_mean > 75
    assert v.test == "bootstrap over test samples (500 resamples of 400)" and v.p_value == pytest.approx(1 / 500)
    assert 0 < v.difference_std < 5  # the bootstrap standard error of the AUROC
    reversed_ = resampled_verdict(auroc_samples(-1.5), first_auroc_vs_chance, resamples=500)
    assert reversed_.verdict == REVERSED and reversed_.treatment_mean < 25


def test_bootstrap_over_test_samples_of_noise_is_not_significant():
    for seed in range(3):
        v = resampled_verdict(auroc_samples(0.0, seed=seed), first_auroc_vs_chance, resamples=500)
        assert v.verdict == NOT_SIGNIFICANT and v.p_value >= 0.05, (seed, v)
    one_outcome = {"qscore": np.zeros((10, 1)), "correct": np.ones((10, 1), dtype=bool)}
    assert resampled_verdict(one_outcome, first_auroc_vs_chance).verdict == NO_RESULT
    assert resampled_verdict({"other": np.zeros(5)}, first_auroc_vs_chance).verdict == NO_RESULT  # no such array
    with pytest.raises(ValueError, match="share their first axis"):
        resampled_verdict({"qscore": np.zeros((3, 1)), "correct": np.zeros((4, 1))}, first_auroc_vs_chance)


def test_judge_bootstraps_one_run_with_samples_and_keeps_the_paired_test_over_seeds():
    claim = Claim("AUROC above 50", pairs=lambda rows: (50.0, rows[0]["auroc"]), resample=first_auroc_vs_chance,
                  resamples=300)
    samples = auroc_samples(1.5)
    one = judge(claim, [[{"auroc": 85.0}]], samples)
    assert one.verdict == HOLDS and one.test.startswith("bootstrap over test samples") and one.n == 400
    assert "bootstrap over test samples (300 resamples of 400)" in claim.describe(samples=400)
    without = judge(claim, [[{"auroc": 85.0}]])
    assert without.verdict == NOT_SIGNIFICANT and without.test == "none"  # one run, no samples: no test
    seeds = judge(claim, [[{"auroc": 80.0 + s}] for s in range(3)], samples)
    assert seeds.test == "paired t-test" and seeds.n == 3  # several runs: paired over seeds, samples unused
    plain = Claim("no resampling", pairs=lambda rows: (50.0, rows[0]["auroc"]))
    assert judge(plain, [[{"auroc": 85.0}]], samples).test == "none"


# --------------------------------------------------------------------------- the recipes on a checkpoint
def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _shard(path: Path, n: int, rng: np.random.Generator) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for i in range(n):
            label = i % len(CLASSES)
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            colour = label if rng.random() < 0.6 else int(rng.integers(len(CLASSES)))
            image[:, :, colour] = 255  # mostly the class's channel: a probe learns it, with some mistakes
            for name, data in ((f"{i:06d}.png", _png(image)), (f"{i:06d}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ROOT/cifar10/{train,test}-0.tar.gz`` (tiny) and ``ROOT/weights/cifar10_resnet20.th`` (random init)."""
    import torch

    from replens.models.cifar_resnet import CifarResNet

    root = tmp_path_factory.mktemp("shared")
    (root / "cifar10").mkdir()
    (root / "cifar10" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    _shard(root / "cifar10" / "train-0.tar.gz", 90, rng)
    _shard(root / "cifar10" / "test-0.tar.gz", 60, rng)
    (root / "weights").mkdir()
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in CifarResNet(depth=20).state_dict().items()}
    torch.save({"best_prec1": 0.0, "state_dict": state}, root / "weights" / "cifar10_resnet20.th")
    return root


def _run(root: Path, tmp_path: Path, id: str, **options: str) -> tuple[dict, Path]:
    ctx = RecipeContext(budget="small", data=f"cifar10:{root}", out=tmp_path / id, progress=False,
                        cache_dir=tmp_path / "cache", options=dict(options))
    return run_recipe(id, ctx), ctx.out


def test_fig_3_4_on_a_checkpoint_is_judged_by_a_bootstrap_over_test_samples(data_root: Path, tmp_path: Path):
    res, out = _run(data_root, tmp_path, "fig-3.4", limit="60")  # real_limit: 60 training, 30 test images
    assert res["status"] == "result" and res["seeds"] == [0] and res["runs"] == []
    (row,) = res["rows"]
    assert row["model"] == "ResNet-20 (supervised)" and row["test_samples"] == 30
    assert res["protocol"]["encoders"] == ["ResNet-20 (supervised)"] and res["protocol"]["train_images"] == 60
    assert "stand-in for the paper's SSL encoders" in res["protocol"]["encoder_kind"]
    with np.load(out / "samples.npz") as npz:
        assert npz["qscore"].shape == (30, 1) and npz["correct"].dtype == bool
        assert auroc_percent(npz["correct"][:, 0], npz["qscore"][:, 0]) == pytest.approx(row["auroc"], abs=0.01)
    v = res["verdict"]
    assert v["test"] == "bootstrap over test samples (2000 resamples of 30)" and v["n"] == 30
    assert v["treatment_mean"] == pytest.approx(row["auroc"], abs=0.01) and v["verdict"] != NO_RESULT
    assert res["claim"]["test"].startswith("bootstrap over test samples") and res["samples"] == "samples.npz"
    assert "bootstrap over test samples" in (out / "table.md").read_text()
    folders = [p.name for p in (tmp_path / "cache" / "reproduce-models").iterdir()]
    assert len(folders) == 1 and folders[0].startswith("cifar10_resnet20-")  # cached by the weights, not trained
    assert json.loads((out / "result.json").read_text())["protocol"].get("trainings") is None


def test_fig_3_2_on_a_checkpoint_and_clear_errors(data_root: Path, tmp_path: Path):
    res, out = _run(data_root, tmp_path, "fig-3.2", limit="60", fractions="0.25,0.5", subsets="2",
                    encoders="cifar10_resnet20")
    assert {r["model"] for r in res["rows"]} == {"ResNet-20 (supervised)"} and res["figures"]
    with np.load(out / "samples.npz") as npz:  # the per-sample correctness behind the rows' accuracies
        disc, rand = npz["discriminative"], npz["random"]
    assert disc.shape == rand.shape == (30, 2) and disc.dtype == bool
    assert set(np.unique(rand * 2)) <= {0.0, 1.0, 2.0}  # the share of 2 random subsets
    for j, row in enumerate(res["rows"]):
        assert row["discriminative"] == pytest.approx(100 * disc[:, j].mean(), abs=0.01)
        assert row["random_mean"] == pytest.approx(100 * rand[:, j].mean(), abs=0.01)
    v = res["verdict"]
    assert v["test"] == "bootstrap over test samples (2000 resamples of 30)" and v["verdict"] != NO_RESULT
    assert v["treatment_mean"] == pytest.approx(100 * disc.mean()) and v["control_mean"] == pytest.approx(
        100 * rand.mean())
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*weights/cifar10_resnet56\.th not found"):
        _run(data_root, tmp_path, "fig-3.4", encoders="cifar10_resnet56")
    with pytest.raises(ValueError, match="unknown encoder 'vgg'"):
        _run(data_root, tmp_path, "fig-3.4", encoders="vgg")
    with pytest.raises(ValueError, match="needs --data"):
        run_recipe("fig-3.4", RecipeContext(budget="small", data=None, out=tmp_path / "w", progress=False,
                                            cache_dir=tmp_path / "cache", options={"encoders": "cifar10_resnet20"}))
