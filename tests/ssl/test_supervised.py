"""The ``supervised`` method (``replens.ssl.supervised``): cross-entropy, l2 PGD (Madry et al. 2018) and the loop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from replens.cli import main
from replens.data import ArraySource
from replens.engine import TrainConfig, load_checkpoint, train
from replens.models import create_backbone
from replens.ssl import create_method, method_class
from replens.ssl.supervised import l2_pgd


class _TinyBackbone(nn.Module):
    feature_dim = 16
    mean = (0.5, 0.4, 0.3)
    std = (0.25, 0.2, 0.3)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


def _two_colours(n: int = 64, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose class (0 or 1) is a reddish or a bluish tint: linearly separable, chance 50 %."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 120, size=(n, size, size, 3)).astype(np.int64)
    images[labels == 0, ..., 0] += 120
    images[labels == 1, ..., 2] += 120
    return images.astype(np.uint8), labels.astype(np.int64)


def _cfg(**kw) -> TrainConfig:
    base = dict(method="supervised", backbone="small_cnn", backbone_args={"widths": [8, 8, 16, 16]}, image_size=16,
                epochs=2, batch_size=16, lr=3e-3, warmup_epochs=0.0, log_every=1, checkpoint_every=0,
                accelerator="cpu")
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ the loss
def test_method_is_registered_as_labelled():
    assert method_class("supervised").needs_labels and not method_class("simclr").needs_labels
    m = create_method("supervised", _TinyBackbone(), num_classes=3)
    assert m.n_views == 1 and m.head.out_features == 3
    with pytest.raises(ValueError, match="labels"):
        m([torch.zeros(2, 3, 8, 8)])  # labelled recipes refuse to run without labels


def test_loss_is_the_cross_entropy_of_the_linear_head():
    torch.manual_seed(0)
    m = create_method("supervised", _TinyBackbone(), num_classes=3).eval()
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        out = m([x], y)
        h = m.backbone(x)
        ref = F.cross_entropy(h @ m.head.weight.T + m.head.bias, y)
    assert torch.allclose(out["loss"], ref, atol=1e-6)
    assert torch.allclose(out["representation"], h, atol=1e-6) and out["h"].shape == (6, 16)


def test_adversarial_loss_is_the_cross_entropy_on_the_pgd_view_in_pixel_units():
    torch.manual_seed(0)
    eps, steps = 0.4, 3
    m = create_method("supervised", _TinyBackbone(), num_classes=3, adversarial_eps=eps, pgd_steps=steps)
    m.view_configs(8, _TinyBackbone.mean, _TinyBackbone.std)
    mean, std = torch.tensor(_TinyBackbone.mean).view(1, 3, 1, 1), torch.tensor(_TinyBackbone.std).view(1, 3, 1, 1)
    pixels = torch.rand(6, 3, 8, 8) * 0.6 + 0.2
    x, y = (pixels - mean) / std, torch.tensor([0, 1, 2, 2, 1, 0])

    def logits(z):  # the attacked function: normalise, encode (eval mode), head
        return m.head(m.backbone((z - mean) / std))

    m.train()
    m.backbone.eval()
    expected = l2_pgd(logits, pixels, y, eps, steps)
    m.backbone.train()
    adv = m.adversarial(x, y)
    assert m.backbone.training  # the mode is restored after the attack
    torch.testing.assert_close(adv * std + mean, expected, atol=1e-5, rtol=1e-5)
    moved = (adv * std + mean - pixels).flatten(1).norm(dim=1)
    assert (moved <= eps + 1e-4).all() and (moved > 0.5 * eps).all()  # radius in [0, 1] pixel units
    out = m([x], y)
    assert torch.allclose(out["loss"], F.cross_entropy(m.logits(adv), y), atol=1e-5)
    with torch.no_grad():
        m.backbone.eval()
        assert F.cross_entropy(logits(expected), y) > F.cross_entropy(logits(pixels), y)


# ------------------------------------------------------------------ l2 PGD
def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_backbone("small_cnn", widths=(8, 8, 16, 32), num_classes=3).eval()


def test_l2_pgd_stays_in_the_ball_and_raises_the_loss():
    model = _model()
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])

    def logits(z):
        return model.logits(model.preprocess(z))

    adv = l2_pgd(logits, x, y, eps=0.5, steps=4)
    assert (adv.sub(x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all() and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(logits(adv), y) > F.cross_entropy(logits(x), y)
    assert torch.equal(l2_pgd(logits, x, y, eps=0.0, steps=4), x)


def test_one_pgd_step_is_the_projected_normalised_gradient():
    """Step 2.5 eps along g / ||g||, projected back onto the ball: exactly eps g / ||g|| (no pixel clamps)."""
    model = _model()
    x, y = torch.rand(4, 3, 16, 16) * 0.4 + 0.3, torch.tensor([0, 1, 2, 0])
    eps = 0.05

    def logits(z):
        return model.logits(model.preprocess(z))

    z = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(logits(z), y), z)
    expected = x + eps * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(l2_pgd(logits, x, y, eps=eps, steps=1), expected, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ the loop
def test_replens_train_supervised_learns_two_colour_classes(tmp_path: Path):
    images, labels = _two_colours()
    np.savez(tmp_path / "colours.npz", images=images, labels=labels)
    out = tmp_path / "run"
    rc = main(["train", "--data", f"npz:{tmp_path / 'colours.npz'}", "--method", "supervised", "--image-size", "16",
               "--batch-size", "16", "--epochs", "3", "--lr", "3e-3", "--set", "log_every=1",
               "--set", "warmup_epochs=0", "--set", "view_args.crop_scale=[1.0, 1.0]",
               "--out", str(out), "--quiet", "--no-eval"])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    assert np.mean([r["ssl_loss"] for r in lines[-3:]]) < np.mean([r["ssl_loss"] for r in lines[:3]])
    assert np.mean([r["online_probe_acc"] for r in lines[-3:]]) > 80  # chance is 50 %
    # backbone.safetensors is the plain encoder; the classifier head lives in the checkpoint
    weights = load_file(out / "backbone.safetensors")
    encoder = create_backbone("small_cnn")
    assert set(weights) == set(encoder.state_dict())
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    encoder.load_state_dict(weights)
    encoder.eval()
    with torch.no_grad():
        x = encoder.preprocess(torch.from_numpy(images).permute(0, 3, 1, 2))
        pred = (encoder(x) @ state["head.weight"].T + state["head.bias"]).argmax(1).numpy()
    assert (pred == labels).mean() > 0.9  # the trained head separates the two colours


def test_robust_training_resumes_exactly(tmp_path: Path):
    images, labels = _two_colours(48)
    src = ArraySource(images, labels)
    cfg = _cfg(method_args={"adversarial_eps": 0.5, "pgd_steps": 2})
    full = train(cfg, src, tmp_path / "full", progress=False)
    assert full["finished"] and full["steps"] == 6
    part = _cfg(method_args={"adversarial_eps": 0.5, "pgd_steps": 2}, checkpoint_every=2)
    assert not train(part, src, tmp_path / "part", progress=False, stop_after=3)["finished"]
    train(part, src, tmp_path / "part", progress=False, resume=True)

    def losses(run):
        return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]

    np.testing.assert_allclose(losses(tmp_path / "full"), losses(tmp_path / "part"), rtol=1e-5, atol=1e-6)
    a, b = load_file(tmp_path / "full" / "backbone.safetensors"), load_file(tmp_path / "part" / "backbone.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # same initialisation, data and views: the first step's loss is higher on the PGD views
    train(_cfg(), src, tmp_path / "std", progress=False)
    assert losses(tmp_path / "full")[0] > losses(tmp_path / "std")[0]


def test_unlabelled_source_is_a_clear_error_naming_it(tmp_path: Path):
    images, _ = _two_colours(32)
    src = ArraySource(images)  # labels -1
    with pytest.raises(ValueError, match=re.escape(src.describe()) + ".*32 unlabelled"):
        train(_cfg(), src, tmp_path, progress=False)
    one_class = ArraySource(images, np.zeros(32, dtype=np.int64))
    with pytest.raises(ValueError, match="1 class"):
        train(_cfg(), one_class, tmp_path, progress=False)
