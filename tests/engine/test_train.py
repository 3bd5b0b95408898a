import json

import numpy as np
import pytest
import torch

from replens.data.base import ImageSource
from replens.engine import TrainConfig, load_checkpoint, lr_at, train
from replens.ssl import list_methods


class _Blobs(ImageSource):
    """Tiny in-memory source: coloured squares on noise."""

    def __init__(self, n=64, size=16, seed=0):
        super().__init__(None)
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 4, n)
        for i, y in enumerate(self.labels):
            self.images[i, 4:12, 4:12] = [(60 * y) % 256, 255 - 60 * y, 128]
        self.domains = np.zeros(n, dtype=np.int64)
        self.classes = ["a", "b", "c", "d"]
        self.domain_names = ["only"]

    def read(self, index):
        return self.images[index]


def _cfg(**kw):
    base = dict(
        backbone="small_cnn",
        image_size=16,
        epochs=3,
        batch_size=16,
        log_every=1,
        checkpoint_every=0,
        warmup_epochs=0.5,
        accelerator="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_resume_continues_the_same_loss_curve(tmp_path):
    src = _Blobs()
    full = train(_cfg(), src, tmp_path / "full", progress=False)
    assert full["finished"] and full["steps"] == 12
    # interrupted run: checkpoints every 5 steps, stops after 7 (2 steps after the last checkpoint are lost)
    part = train(_cfg(checkpoint_every=5), src, tmp_path / "part", progress=False, stop_after=7)
    assert not part["finished"]
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["state"]["step"] == 5
    train(_cfg(checkpoint_every=5), src, tmp_path / "part", progress=False, resume=True)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_training_lowers_the_loss_and_writes_weights(tmp_path):
    src = _Blobs(n=128)
    out = train(_cfg(epochs=6, lr=3e-3), src, tmp_path, progress=False)
    losses = _losses(tmp_path)
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    from safetensors.torch import load_file

    weights = load_file(out["backbone_weights"])
    state = out["backbone"].state_dict()
    assert weights.keys() == state.keys()
    assert all(torch.equal(weights[k], state[k]) for k in state)


def test_weights_of_a_non_default_architecture_rebuild_from_the_file_alone(tmp_path):
    from replens.models import create_backbone
    from replens.models.weights import WeightsError, checkpoint_backbone_args

    widths = [8, 8, 16, 48]  # the default SmallCNN ends in 256 features: its weights would not fit
    out = train(_cfg(epochs=1, backbone_args={"widths": widths}), _Blobs(n=32), tmp_path, progress=False)
    assert checkpoint_backbone_args(out["backbone_weights"]) == {"widths": widths}
    rebuilt = create_backbone("small_cnn", weights=out["backbone_weights"]).eval()
    assert rebuilt.feature_dim == 48
    trained = out["backbone"].eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(rebuilt(x), trained(x))
    with pytest.raises(WeightsError, match="shape mismatch"):  # explicit options win over the file's
        create_backbone("small_cnn", weights=out["backbone_weights"], widths=(8, 8, 16, 32))
    plain = train(_cfg(epochs=1), _Blobs(n=32), tmp_path / "plain", progress=False)
    assert checkpoint_backbone_args(plain["backbone_weights"]) == {}  # default runs: header unchanged


def test_batch_larger_than_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="larger than the dataset"):
        train(_cfg(batch_size=1000), _Blobs(), tmp_path, progress=False)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match="step"):
        train(_cfg(lr=1e30, optimizer="sgd"), _Blobs(), tmp_path, progress=False)


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_every_method_trains_in_the_loop(method, tmp_path):
    out = train(_cfg(method=method, epochs=1, batch_size=16), _Blobs(n=32), tmp_path, progress=False)
    assert out["finished"] and out["steps"] == 2
    assert np.isfinite(_losses(tmp_path)).all()


def test_bf16_channels_last_lars_and_tensorboard(tmp_path):
    cfg = _cfg(epochs=1, precision="bf16-mixed", channels_last=True, optimizer="lars", lr=0.3, tensorboard=True)
    out = train(cfg, _Blobs(n=32), tmp_path, progress=False)
    assert out["finished"] and np.isfinite(_losses(tmp_path)).all()
    assert any((tmp_path / "tensorboard").iterdir())
    # weights stay float32 under mixed precision
    assert all(v.dtype == torch.float32 for v in out["backbone"].state_dict().values() if v.is_floating_point())


def test_online_probe_learns_the_labels(tmp_path):
    src = _Blobs(n=128)
    train(_cfg(epochs=8, lr=3e-3), src, tmp_path, progress=False)
    accs = [json.loads(line)["online_probe_acc"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(accs[-8:]) > np.mean(accs[:8]) and np.mean(accs[-8:]) > 50  # 4 classes: chance is 25 %
