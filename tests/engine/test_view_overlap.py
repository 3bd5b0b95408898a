"""The training loop's view overlap (next step's views made ahead) gives exactly the views and weights of a plain loop."""

import importlib
import json

import numpy as np
import torch

from replens.augment import ViewConfig, ViewFeed, ViewPipeline
from replens.data.arrays import ArraySource
from replens.engine import TrainConfig, load_checkpoint, train

train_module = importlib.import_module("replens.engine.train")  # the module (the package exports the function)


def _source(n=48, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return ArraySource(images, rng.integers(0, 3, n))


def _cfg(**kw):
    base = dict(backbone="small_cnn", image_size=16, epochs=2, batch_size=16, log_every=1, checkpoint_every=0,
                warmup_epochs=0.5, accelerator="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _batches(n_batches, size=16):
    g = torch.Generator().manual_seed(1)
    for i in range(n_batches):
        yield {"image": torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=g), "index": i}


def test_view_feed_prepared_ahead_equals_made_on_demand():
    pipe = ViewPipeline(ViewConfig(size=8))

    def make_views(images, step):
        g = torch.Generator().manual_seed(100 + step)
        return [pipe(images, g), pipe(images, g)]

    plain = ViewFeed(_batches(5), make_views, "cpu", overlap=False)
    ahead = ViewFeed(_batches(5), make_views, "cpu", overlap=True)
    for step in range(5):
        b0, x0, v0 = plain.take(step)
        b1, x1, v1 = ahead.take(step)
        if step + 1 < 5:
            ahead.prepare(step + 1)
        assert b0["index"] == b1["index"] == step
        assert torch.equal(x0, x1)
        assert all(torch.equal(a, b) for a, b in zip(v0, v1, strict=True))


def test_view_feed_rejects_views_prepared_for_another_step():
    feed = ViewFeed(_batches(3), lambda images, step: [images.float()], "cpu", overlap=True)
    feed.prepare(1)
    try:
        feed.take(2)
    except RuntimeError as exc:
        assert "step 1" in str(exc)
    else:
        raise AssertionError("a mismatched step must raise")


def test_overlapped_training_is_bit_identical_and_resumes_exactly(tmp_path, monkeypatch):
    src = _source()
    plain = train(_cfg(), src, tmp_path / "plain", progress=False)
    monkeypatch.setattr(train_module, "_overlap_views", lambda device: True)
    ahead = train(_cfg(), src, tmp_path / "ahead", progress=False)
    assert plain["steps"] == ahead["steps"] == 6
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "ahead")
    for key, value in plain["backbone"].state_dict().items():
        assert torch.equal(value, ahead["backbone"].state_dict()[key]), key
    # interrupted with a view batch prepared ahead, then resumed: the same curve and weights
    cut = tmp_path / "cut"
    train(_cfg(checkpoint_every=2), src, cut, progress=False, stop_after=3)
    assert load_checkpoint(cut / "checkpoint.pt")["state"]["step"] == 2
    resumed = train(_cfg(checkpoint_every=2), src, cut, progress=False, resume=True)
    assert resumed["finished"]
    assert _losses(cut) == _losses(tmp_path / "plain")
    for key, value in plain["backbone"].state_dict().items():
        assert torch.equal(value, resumed["backbone"].state_dict()[key]), key
