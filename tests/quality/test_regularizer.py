"""Q-Score regularisation (Eq. 3.3) and the lasso baseline as training plug-ins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from replens.engine import TrainConfig, load_checkpoint, train
from replens.quality import QScoreRegularizer, qscore_array, qscore_regularizer_terms
from replens.ssl import create_plugin, list_plugins

from .conftest import TinySource, direct_qscore, sparse_representations


def _direct_terms(h: np.ndarray, discriminative: np.ndarray, eps: float):
    """Eq. 3.3's two terms in float64: mean_i 1[Q_i < alpha] Q_i and sum_k 1[|H_k|_1 > beta] |H_k|_1."""
    ref = direct_qscore(h, eps, 0, 0)
    hn = h / np.linalg.norm(h, axis=1, keepdims=True)
    q = np.zeros(len(h))
    for i, s in enumerate(ref["L"]):
        chosen = sorted(s & set(discriminative.tolist()))
        q[i] = np.mean(hn[i, chosen] - hn[i].mean()) if chosen else 0.0
    alpha = q.mean()
    cols = np.abs(hn).sum(axis=0)
    beta = cols.mean()
    return np.mean(q * (q < alpha)), np.sum(cols * (cols > beta)), q


def test_terms_match_equation_3_3():
    x, _ = sparse_representations(64, 32, seed=5)
    disc = qscore_array(x, band=(30, 100)).discriminative
    mask = torch.zeros(32, dtype=torch.bool)
    mask[disc] = True
    h = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    terms = qscore_regularizer_terms(h, mask)
    q_term, l1_term, q = _direct_terms(x, disc, 4.0)
    assert float(terms["q_term"].detach()) == pytest.approx(q_term, rel=1e-5)
    assert float(terms["l1_term"].detach()) == pytest.approx(l1_term, rel=1e-5)
    np.testing.assert_allclose(terms["q"].numpy(), q, rtol=1e-5, atol=1e-7)
    assert (q > 0).sum() > 10


def test_gradient_raises_low_scores_and_lowers_busy_columns():
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 0.2, (64, 32))
    x[np.arange(64), np.arange(64) % 4] += rng.uniform(2, 10, 64)  # one spike per row, of varied size
    disc = torch.zeros(32, dtype=torch.bool)
    disc[:4] = True
    h = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    before = qscore_regularizer_terms(h, disc)
    loss = -before["q_term"]
    loss.backward()
    with torch.no_grad():
        stepped = h - 0.05 * h.grad
    after = qscore_regularizer_terms(stepped, disc)
    low = (before["q"] < before["alpha"]) & (before["q"] > 0)
    assert low.any() and bool((after["q"][low] > before["q"][low]).all())
    h.grad = None
    penalty = qscore_regularizer_terms(h, disc)["l1_term"]
    penalty.backward()
    with torch.no_grad():
        smaller = qscore_regularizer_terms(h - 1e-3 * h.grad, disc)["l1_term"]
    assert float(smaller) < float(penalty.detach())


def _cfg(**kw):
    base = dict(backbone="small_cnn", image_size=16, epochs=2, batch_size=16, log_every=1, checkpoint_every=0,
                warmup_epochs=0.0, accelerator="cpu", lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_engine_run_with_qscore_reg_and_exact_resume(tmp_path):
    assert {"qscore_reg", "lasso_reg"} <= set(list_plugins())
    src = TinySource(n=48, size=16)
    cfg = _cfg(plugins=["qscore_reg"], plugin_args={"qscore_reg": {"lambda1": 0.5, "lambda2": 1e-3}})
    full = train(cfg, src, tmp_path / "full", progress=False)
    records = _records(tmp_path / "full")
    assert full["finished"] and len(records) == 6
    for rec in records:
        assert rec["qscore_reg/q_bonus"] <= 0.0 and rec["qscore_reg/l1_penalty"] >= 0.0
        assert rec["qscore_reg/discriminative"] > 0
        # the logged total is the recipe's loss plus both terms
        assert rec["loss"] == pytest.approx(rec["ssl_loss"] + rec["qscore_reg/q_bonus"] + rec["qscore_reg/l1_penalty"],
                                            rel=1e-5, abs=1e-6)
    state = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    assert float(state["plugins.0.seen"]) == 6 * 2 * 16  # running counts over both views of every step
    # interrupted after 3 steps (checkpoint every 2) and resumed: the running D estimate resumes too
    part_cfg = _cfg(plugins=["qscore_reg"], plugin_args=cfg.plugin_args, checkpoint_every=2)
    train(part_cfg, src, tmp_path / "part", progress=False, stop_after=3)
    train(part_cfg, src, tmp_path / "part", progress=False, resume=True)
    a = [r["qscore_reg/q_bonus"] for r in records]
    b = [r["qscore_reg/q_bonus"] for r in _records(tmp_path / "part")]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_fixed_feature_set_and_lasso(tmp_path):
    (tmp_path / "sets.json").write_text(json.dumps({"discriminative": [1, 4, 200]}))
    plugin = create_plugin("qscore_reg", features=str(tmp_path / "sets.json"))

    class _M:
        class backbone:  # noqa: N801
            feature_dim = 64

    with pytest.raises(ValueError, match="feature 200 does not exist"):
        plugin.setup(_M(), {})
    (tmp_path / "sets.json").write_text(json.dumps({"discriminative": [1, 4, 20]}))
    plugin = QScoreRegularizer(features=str(tmp_path / "sets.json"))
    plugin.setup(_M(), {})
    h = torch.rand(8, 64)
    plugin.loss({"h": h}, {}, 0)
    assert plugin.discriminative_features().tolist() == [1, 4, 20]  # fixed: not re-estimated
    with pytest.raises(ValueError, match="expected"):
        plugin.loss({"h": torch.rand(8, 10)}, {}, 0)
    lasso = create_plugin("lasso_reg", weight=0.1)
    h = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert float(lasso.loss({"h": h}, {}, 0)["l1"]) == pytest.approx(0.1 * (3.0 + 0.5) / 2)
    out = train(_cfg(plugins=["lasso_reg"], epochs=1), TinySource(n=32), tmp_path / "lasso", progress=False)
    assert out["finished"] and all("lasso_reg/l1" in r for r in _records(tmp_path / "lasso"))


def test_cli_train_from_checkpoint_with_qscore_reg(tmp_path):
    from replens.cli import main
    from replens.world import WorldConfig, generate_world

    world = generate_world(WorldConfig(n=64, size=16, seed=0), tmp_path / "world", progress=False)
    common = ["train", "--data", f"world:{world}?split=train", "--backbone", "small_cnn", "--epochs", "1",
              "--batch-size", "16", "--image-size", "16", "--quiet", "--set", "accelerator=cpu"]
    assert main([*common, "--out", str(tmp_path / "base")]) == 0
    weights = tmp_path / "base" / "backbone.safetensors"
    assert main([*common, "--out", str(tmp_path / "reg"), "--from", str(weights), "--qscore-reg",
                 "--lr", "1e-5"]) == 0
    records = _records(tmp_path / "reg")
    assert records and all("qscore_reg/l1_penalty" in r for r in records)
    (tmp_path / "sets.json").write_text(json.dumps({"discriminative": [0, 5, 9]}))
    assert main([*common, "--out", str(tmp_path / "fixed"), "--from", str(weights), "--qscore-features",
                 str(tmp_path / "sets.json")]) == 0  # the flag enables the plug-in with a fixed D
    assert all(r["qscore_reg/discriminative"] == 3 for r in _records(tmp_path / "fixed"))
