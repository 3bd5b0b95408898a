"""``replens train --ddm`` / ``--ddm-domains`` through ``replens.cli.main``, exact resume, ``replens ddm eval``."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from replens.cli import main
from replens.data import open_source
from replens.engine import TrainConfig, load_checkpoint, train
from replens.models import create_backbone
from replens.world import WorldConfig, generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddm_world") / "w"
    return generate_world(WorldConfig(n=100, size=16, domains=("tint_red", "tint_green"), seed=0), out, progress=False)


def _lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddm_run(world, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddm_train") / "run"
    code = main(["train", "--data", f"world:{world}", "--ddm", "--image-size", "16", "--batch-size", "16",
                 "--set", "max_steps=3", "--set", "log_every=1", "--no-eval", "--out", str(run), "--quiet"])
    assert code == 0
    return run


def test_train_with_ddm_through_the_cli(ddm_run):
    lines = _lines(ddm_run)
    assert [r["step"] for r in lines] == [1, 2, 3]
    for r in lines:
        assert {"ddm/d_var", "ddm/d_invar", "ddm/ssl_scale", "ddm/critic_loss", "ddm/gp"} <= set(r)
        assert r["ddm/ssl_scale"] == pytest.approx(-0.5 * r["ssl_loss"], rel=1e-5)  # lambda = 0.5
    assert lines[0]["ddm/critic_lr"] == pytest.approx(0.005) and lines[2]["ddm/critic_lr"] < 0.005  # cosine
    ckpt = load_checkpoint(ddm_run / "checkpoint.pt")
    adam = ckpt["plugins"]["ddm"]["critic_optimizer"]
    assert adam["state"] and int(adam["state"][0]["step"]) == 3 * 5  # 5 critic updates per encoder step
    assert any(k.startswith("plugins.0.critic.") for k in ckpt["model"])
    # the saved encoder is the full r-dim backbone (prefix first), the same weights as the checkpoint's
    weights = load_file(str(ddm_run / "backbone.safetensors"))
    backbone = create_backbone("small_cnn", weights=str(ddm_run / "backbone.safetensors"))
    assert backbone.feature_dim == 256
    assert all(torch.equal(weights[k], ckpt["model"][f"backbone.{k}"]) for k in weights)


def test_train_with_pseudo_domains_through_the_cli(world, tmp_path):
    run = tmp_path / "pseudo"
    code = main(["train", "--data", f"world:{world}", "--ddm-domains", "2", "--image-size", "16", "--batch-size",
                 "16", "--epochs", "2", "--set", "log_every=1", "--set", "plugin_args.ddm.warmup_fraction=0.25",
                 "--set", "plugin_args.ddm.recluster_fraction=0.25", "--out", str(run), "--quiet"])
    assert code == 0
    lines = _lines(run)
    total = len(lines)
    warmup = round(0.25 * total)
    # warm-up: SSL alone; then DDM on pseudo-domains with the purity against the true tints logged
    assert all(r["ddm/d_var"] == 0.0 and "ddm/purity" not in r for r in lines[: warmup - 1])
    clustered = [r for r in lines if "ddm/purity" in r]
    assert clustered and all(0.5 <= r["ddm/purity"] <= 1.0 for r in clustered)
    assert any(r["ddm/d_var"] != 0.0 for r in lines[warmup:])
    history = load_checkpoint(run / "checkpoint.pt")["plugins"]["ddm"]["history"]
    assert [h["epsilon"] for h in history] == [0.5**t for t in range(len(history))]  # epsilon: 1, 1/2, 1/4, ...


@pytest.mark.parametrize("plugin_args", [{}, {"num_pseudo_domains": 2, "warmup_fraction": 0.25,
                                              "recluster_fraction": 0.25}], ids=["labels", "pseudo"])
def test_resume_with_the_critic_state_is_exact(world, tmp_path, plugin_args):
    source = open_source(f"world:{world}", image_size=16)
    cfg = dict(backbone="small_cnn", image_size=16, epochs=2, batch_size=16, log_every=1, accelerator="cpu",
               warmup_epochs=0.5, plugins=["ddm"], plugin_args={"ddm": plugin_args}, online_probe=False)
    full = train(TrainConfig(**cfg, checkpoint_every=0), source, tmp_path / "full", progress=False)
    part = train(TrainConfig(**cfg, checkpoint_every=3), source, tmp_path / "part", progress=False, stop_after=5)
    assert not part["finished"]
    train(TrainConfig(**cfg, checkpoint_every=3), source, tmp_path / "part", progress=False, resume=True)
    a, b = _lines(tmp_path / "full"), _lines(tmp_path / "part")
    assert len(a) == len(b) == full["steps"]
    for key in ("loss", "ddm/d_var", "ddm/d_invar", "ddm/critic_loss", "ddm/wasserstein"):
        np.testing.assert_allclose([r.get(key, 0.0) for r in a], [r.get(key, 0.0) for r in b], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    if plugin_args:
        assert [r.get("ddm/purity") for r in a] == [r.get("ddm/purity") for r in b]


def test_ddm_eval_writes_the_table_layout(ddm_run, world, tmp_path):
    out = tmp_path / "eval"
    code = main(["ddm", "eval", "--weights", f"ddm={ddm_run / 'backbone.safetensors'}",
                 "--weights", f"again={ddm_run / 'backbone.safetensors'}", "--compare", "SimCLR=again,ddm",
                 "--train-data", f"world:{world}", "--test-data", f"world:{world}?split=test", "--no-plots",
                 "--probe-iters", "20", "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    result = metrics["models"]["ddm"]
    assert set(result["per_domain"]) == {"tint_red", "tint_green"} and result["prefix_dim"] == 16
    assert result["per_domain"] == metrics["models"]["again"]["per_domain"]  # same weights, same numbers
    assert set(result["parts"]) == {"prefix", "invariant", "full"}
    table = (out / "table.md").read_text()
    assert "| Model | tint_red | tint_green | Average |" in table and "| SimCLR | " in table and " / " in table
    assert (out / "config.yaml").exists()


def test_ddm_eval_bad_weights_label_is_a_clear_error(ddm_run, world, tmp_path, capsys):
    code = main(["ddm", "eval", "--weights", f"a={ddm_run / 'backbone.safetensors'}", "--compare", "X=a,b",
                 "--train-data", f"world:{world}", "--out", str(tmp_path / "e"), "--quiet"])
    assert code == 2 and "no --weights labelled 'b'" in capsys.readouterr().err
