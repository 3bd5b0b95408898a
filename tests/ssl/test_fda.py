"""The fda training plug-in (paper section 5.5) and the format transform's dual encoder (section 5.6.1)."""

import importlib
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replens.augment import ViewConfig, ViewPipeline, fda_config, frequency_image, simclr_view_config
from replens.cli import main
from replens.engine import load_checkpoint
from replens.ssl import create_method, create_plugin, list_methods, method_class
from replens.world import WorldConfig, generate_world

engine_train = importlib.import_module("replens.engine.train")  # the module (the package exports a function of that name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(WorldConfig(n=64, size=32, seed=3), tmp_path_factory.mktemp("fda") / "world", progress=False)


@pytest.fixture
def recorded_views(monkeypatch):
    """The view configs the training loop builds its pipelines from."""
    seen: list[ViewConfig] = []

    class Recording(ViewPipeline):
        def __init__(self, config=None):
            super().__init__(config)
            seen.append(self.config)

    monkeypatch.setattr(engine_train, "ViewPipeline", Recording)
    return seen


class _TinyBackbone(nn.Module):
    feature_dim = 16
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)

    def forward(self, x):
        return self.norm(self.conv(x)).mean((2, 3))


# ------------------------------------------------------------------ plug-in
def test_plugin_puts_table_c2_fda_on_the_left_view_only():
    base = simclr_view_config(32, (0.5,) * 3, (0.25,) * 3)
    left, right = create_plugin("fda").view_configs([base, base])
    assert left.fda == fda_config(32) and left.fda_order == "before" and left.augment and left.output == "image"
    assert right is base and right.fda is None
    # Table C.2 left-view probabilities
    assert (left.fda.amplitude_prob, left.fda.phase_prob, left.fda.mask_prob, left.fda.gmm_prob) == (0.2, 0.2, 0.5, 0.2)
    # view kinds and FDA options are plug-in arguments
    plug = create_plugin("fda", left_view="image-aug+fda", right_view="freq", mask_prob=1.0, reference_size=112)
    left, right = plug.view_configs([base, base])
    assert left.fda_order == "after" and left.fda.mask_prob == 1.0
    assert left.fda.gmm_sigma == pytest.approx((10 * 32 / 112, 15 * 32 / 112))
    assert right.output == "frequency" and not right.augment


def test_plugin_rejects_unknown_kinds_and_options():
    with pytest.raises(KeyError, match="plugin_args.fda.left_view"):
        create_plugin("fda", left_view="fourier")
    with pytest.raises(KeyError, match="mask_probability"):
        create_plugin("fda", mask_probability=0.3)
    with pytest.raises(ValueError, match="gmm_prob"):
        create_plugin("fda", gmm_prob=2)


def test_replens_train_fda_runs_and_augments_the_left_view(world, tmp_path, recorded_views):
    out = tmp_path / "run"
    rc = main(["train", "--data", f"world:{world}", "--fda", "--batch-size", "16", "--set", "max_steps=2",
               "--set", "log_every=1", "--out", str(out), "--quiet", "--no-eval"])
    assert rc == 0
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(np.isfinite(x["loss"]) for x in lines)
    assert "fda" in (out / "config.yaml").read_text()
    left, right = recorded_views[:2]
    assert left.fda == fda_config(32) and right.fda is None


def test_view_flags_enable_the_plugin(world, tmp_path, recorded_views):
    rc = main(["train", "--data", f"world:{world}", "--left-view", "fda", "--right-view", "raw", "--batch-size", "16",
               "--set", "max_steps=1", "--out", str(tmp_path / "run"), "--quiet", "--no-eval"])
    assert rc == 0
    left, right = recorded_views[:2]
    assert left.fda is not None and not left.augment
    assert right.fda is None and not right.augment
    with pytest.raises(SystemExit):  # argparse names the bad kind
        main(["train", "--data", f"world:{world}", "--left-view", "nope", "--out", str(tmp_path / "bad"), "--quiet", "--no-eval"])
    assert main(["train", "--data", f"world:{world}", "--set", "plugins=[fda]", "--set", "plugin_args.fda.left_view=x",
                 "--out", str(tmp_path / "bad"), "--quiet", "--no-eval"]) == 2


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_fda_works_with_every_method(method):
    """The plug-in's views feed every registered recipe (the whole loop runs in the CLI tests above)."""
    torch.manual_seed(0)
    labelled = method_class(method).needs_labels  # the loop passes num_classes and the batch labels
    recipe = create_method(method, _TinyBackbone(), **({"num_classes": 2} if labelled else {}))
    if recipe.n_views < 2:  # FDA augments the left view of a pair (5.5.1): a one-view recipe is refused
        with pytest.raises(ValueError, match="two views"):
            create_plugin("fda").view_configs(recipe.view_configs(16, _TinyBackbone.mean, _TinyBackbone.std))
        return
    configs = create_plugin("fda").view_configs(recipe.view_configs(16, _TinyBackbone.mean, _TinyBackbone.std))
    assert configs[0].fda is not None and all(c.fda is None for c in configs[1:])  # left view only (5.5.1)
    images = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    g = torch.Generator().manual_seed(1)
    views = [ViewPipeline(c)(images, g) for c in configs]
    recipe.on_step_start(0, 10, 0)
    out = recipe(views, torch.arange(8) % 2) if labelled else recipe(views)
    assert torch.isfinite(out["loss"]) and out["h"].requires_grad
    out["loss"].backward()


def test_frequency_views_without_the_dual_encoder_warn(caplog):
    plug = create_plugin("fda", right_view="freq")
    with caplog.at_level(logging.WARNING):
        plug.setup(create_method("simclr", _TinyBackbone()), {})
    assert "dual_encoder" in caplog.text


# ------------------------------------------------------------- dual encoder
def infonce(z_a, z_b, tau):
    """Eq. 5.2 over the 2N views: positive is the other format of the same image, the rest are negatives."""
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    n = len(z_a)
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, positive)


def test_dual_encoder_loss_is_infonce_between_two_unshared_encoders():
    torch.manual_seed(0)
    m = create_method("dual_encoder", _TinyBackbone(), temperature=0.3)
    image_params = {id(p) for p in m.backbone.parameters()} | {id(p) for p in m.projection_head.parameters()}
    freq_params = {id(p) for p in m.freq_backbone.parameters()} | {id(p) for p in m.freq_projection_head.parameters()}
    assert not image_params & freq_params
    assert not torch.equal(m.backbone.conv.weight, m.freq_backbone.conv.weight)  # independently initialised
    x = torch.rand(8, 3, 8, 8)
    views = [x, frequency_image(x)]
    out = m.training_step(views)
    ref = infonce(m.projection_head(m.backbone(views[0])), m.freq_projection_head(m.freq_backbone(views[1])), 0.3)
    torch.testing.assert_close(out["loss"], ref, rtol=1e-4, atol=1e-5)
    assert out["h"].shape == (16, 16) and out["h"].requires_grad
    torch.testing.assert_close(out["representation"], m.backbone(views[0]).detach())
    out["loss"].backward()
    assert m.backbone.conv.weight.grad.abs().sum() > 0 and m.freq_backbone.conv.weight.grad.abs().sum() > 0
    # the image encoder only sees the image view, the frequency encoder only the frequency view
    m.zero_grad()
    m.training_step([x, torch.zeros_like(x)])["loss"].backward()
    assert m.freq_backbone.conv.weight.grad.abs().sum() == 0  # zero input: no gradient reaches its weights
    with pytest.raises(KeyError, match="method_args.right_view"):
        create_method("dual_encoder", _TinyBackbone(), right_view="fourier")


def test_dual_encoder_default_views_are_x_and_f():
    m = create_method("dual_encoder", _TinyBackbone())
    left, right = m.view_configs(16, (0.5,) * 3, (0.25,) * 3)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    l_pipe, r_pipe = ViewPipeline(left), ViewPipeline(right)
    torch.testing.assert_close(l_pipe(x, g, normalize=False), x.float() / 255, atol=1e-5, rtol=0)
    torch.testing.assert_close(r_pipe(x, g, normalize=False), frequency_image(x), atol=1e-5, rtol=0)


def test_dual_encoder_trains_with_frequency_views(world, tmp_path, recorded_views):
    out = tmp_path / "run"
    rc = main(["train", "--data", f"world:{world}", "--method", "dual_encoder", "--left-view", "raw",
               "--right-view", "freq-aug", "--batch-size", "16", "--set", "max_steps=3", "--out", str(out), "--quiet", "--no-eval"])
    assert rc == 0
    left, right = recorded_views[:2]
    assert left.output == "image" and left.fda is None and not left.augment
    assert right.output == "frequency" and right.fda is not None
    from safetensors.torch import load_file

    ckpt = load_checkpoint(out / "checkpoint.pt")["model"]
    saved = load_file(out / "backbone.safetensors")
    # the run's backbone is the image encoder g_im, and the frequency encoder is a separate, trained network
    for key, value in saved.items():
        assert torch.equal(value, ckpt[f"backbone.{key}"])
        if value.is_floating_point() and value.ndim > 1:
            assert not torch.equal(value, ckpt[f"freq_backbone.{key}"])
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 3
