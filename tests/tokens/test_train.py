"""CLIP-style training of every image side, exact resume, saved models, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replens.cli import main
from replens.tokens import (
    ENCODERS,
    PairData,
    TokenDataset,
    TokenTrainConfig,
    embed_captions,
    embed_items,
    load_token_model,
    train_token_model,
)
from replens.tokens.train import lr_at


def _config(encoder: str, steps: int = 4, **kw: object) -> TokenTrainConfig:
    base = dict(encoder=encoder, preset="tiny", steps=steps, batch_size=16, lr=2e-3, eval_every=2, log_every=1,
                checkpoint_every=2, patch_size=8, max_eval=16)
    base.update(kw)
    return TokenTrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_every_encoder_trains_saves_and_reloads(encoder: str, caches: dict[str, Path], vl, tmp_path: Path) -> None:
    train, test = PairData(TokenDataset(caches["train"])), PairData(TokenDataset(caches["test"]))
    result = train_token_model(_config(encoder), train, vl, tmp_path, val_data=test, progress=False)
    assert result["finished"] and math.isfinite(result["final_loss"])
    assert 0 <= result["eval"]["t2i_r1"] <= 100 and -1 <= result["eval"]["off_diag_sim"] <= 1
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4] and "t2i_r5" in lines[1] and "diag_sim" in lines[3]
    model, meta = load_token_model(tmp_path / "model.safetensors")
    assert meta["kind"] == encoder
    trained = result["model"].eval()
    torch.testing.assert_close(embed_items(model, test), embed_items(trained, test))
    torch.testing.assert_close(embed_captions(model, ["a red circle"]), embed_captions(trained, ["a red circle"]))
    # the VL model passed in is not modified (a copy is fine-tuned)
    assert not torch.equal(trained.vl.model.token_embedding.weight, vl.model.token_embedding.weight)


def test_resume_continues_exactly(caches: dict[str, Path], vl, tmp_path: Path) -> None:
    train = PairData(TokenDataset(caches["train"]))
    config = _config("tokens", steps=4, dropout=0.1, checkpoint_every=2)
    full = train_token_model(config, train, vl, tmp_path / "full", progress=False)
    part = train_token_model(config, train, vl, tmp_path / "part", progress=False, stop_after=2)
    assert not part["finished"] and not (tmp_path / "part" / "model.safetensors").exists()
    resumed = train_token_model(config, train, vl, tmp_path / "part", progress=False, resume=True)
    assert resumed["finished"] and resumed["steps"] == 4
    for (name, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    full_log = (tmp_path / "full" / "metrics.jsonl").read_text()
    assert full_log == (tmp_path / "part" / "metrics.jsonl").read_text()
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4


def test_first_loss_is_the_clip_loss(caches: dict[str, Path], vl, tmp_path: Path) -> None:
    """The logged loss is the symmetric cross-entropy of CLIP over the batch's cosine logits."""
    train = PairData(TokenDataset(caches["train"]))
    config = _config("tokens", steps=1, lr=0.0)
    records: list[dict] = []
    result = train_token_model(config, train, vl, tmp_path, progress=False, on_log=records.append)
    model = result["model"]
    from replens.engine.loop import epoch_batches

    idx = epoch_batches(len(train), 16, 0, 0)[0]
    rng = np.random.default_rng([0, 0])
    caps = [train.captions[i][rng.integers(len(train.captions[i]))] for i in idx]
    with torch.no_grad():
        img = model.encode_image(**train.inputs(model, idx, 77))
        txt = model.encode_text(model.vl.tokenize(caps))
        logits = model.logit_scale.exp() * img @ txt.T
        labels = torch.arange(16)
        ref = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert records[0]["loss"] == pytest.approx(float(ref), rel=1e-4)


def test_learning_rate_schedule() -> None:
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5, abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_cli_extract_train_eval(world: Path, vl_file: Path, tmp_path: Path) -> None:
    common = ["--vl", str(vl_file), "--quiet"]
    for split in ("train", "test"):
        assert main(["tokens", "extract", "--data", f"world:{world}?split={split}", "--out", str(tmp_path / split),
                     "--shard-size", "32", *common]) == 0
    assert main(["tokens", "train", "--tokens", str(tmp_path / "train"), "--val-tokens", str(tmp_path / "test"),
                 "--preset", "tiny", "--steps", "3", "--batch-size", "16", "--eval-every", "3",
                 "--out", str(tmp_path / "run"), *common]) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["finished"] and summary["steps"] == 3
    assert main(["tokens", "eval", "--model", str(tmp_path / "run"), "--tokens", str(tmp_path / "test"),
                 "--compositional", "8", "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["encoder"] == "tokens"
    assert set(metrics["compositional"]) >= {"relation_swap", "attribute_swap", "word_order", "groups", "aro_mean"}
    assert all(0 <= metrics["compositional"][k] <= 100 for k in ("relation_swap", "attribute_swap", "word_order"))
    assert metrics["retrieval"]["n_images"] == 16
    assert (tmp_path / "eval" / "config.yaml").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokens", "train", "--tokens", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "no token cache" in capsys.readouterr().err
    assert main(["tokens", "extract", "--data", "npz:/nowhere.npz", "--out", str(tmp_path / "t"), "--quiet",
                 "--vl", str(tmp_path / "no-vl.safetensors")]) == 2


def test_background_batch_workers_give_the_same_run(caches: dict[str, Path], vl, tmp_path: Path) -> None:
    train = PairData(TokenDataset(caches["train"]))
    inline = train_token_model(_config("tokens", steps=3), train, vl, tmp_path / "a", progress=False)
    workers = train_token_model(_config("tokens", steps=3, num_workers=2), train, vl, tmp_path / "b", progress=False)
    for a, b in zip(inline["model"].state_dict().values(), workers["model"].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_cli_eval_on_real_benchmark_formats(caches: dict[str, Path], vl, tmp_path: Path) -> None:
    """ARO and Winoground files (written here) through ``replens tokens eval`` with an image model."""
    from PIL import Image

    train = PairData(TokenDataset(caches["train"]))
    train_token_model(_config("vit", steps=2), train, vl, tmp_path / "vit", progress=False)
    images = tmp_path / "images"
    (images / "data" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "data/images/i0.png", "data/images/i1.png"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / name)
    rows = [{"image_path": "a.jpg", "bbox_x": 0, "bbox_y": 0, "bbox_w": 30, "bbox_h": 30,
             "true_caption": "the cat is on the mat", "false_caption": "the mat is on the cat"}] * 3
    (tmp_path / "vgr.json").write_text(json.dumps(rows))
    (images / "data" / "examples.jsonl").write_text(json.dumps(
        {"caption_0": "a red circle", "caption_1": "a blue square", "image_0": "i0", "image_1": "i1"}))
    assert main(["tokens", "eval", "--model", str(tmp_path / "vit"), "--aro-relation", str(tmp_path / "vgr.json"),
                 "--aro-images", str(images), "--winoground", str(images), "--out", str(tmp_path / "ev"),
                 "--quiet"]) == 0
    bench = json.loads((tmp_path / "ev" / "metrics.json").read_text())["benchmarks"]
    assert bench["vg_relation"]["n"] == 3 and bench["vg_relation"]["accuracy"] in (0.0, 100.0)
    assert bench["winoground"]["n"] == 1
