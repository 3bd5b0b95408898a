"""End-to-end CLI tests on a tiny world (the foundation's commands)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from replens.cli import build_parser, main
from replens.models import load_embeddings


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("config.yaml", "metrics.json", "preview.png")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    assert main(["world", "--n", "160", "--size", "32", "--out", str(out), "--preview", "--quiet", "--seed", "3"]) == 0
    return out


def _leaf_commands(parser, prefix=()):
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not subs:
        yield prefix, parser
        return
    for name, sp in subs[0].choices.items():
        yield from _leaf_commands(sp, (*prefix, name))


def test_every_command_has_help_seed_and_out(capsys):
    leaves = list(_leaf_commands(build_parser()))
    assert len(leaves) >= 6
    for path, sp in leaves:
        flags = {o for a in sp._actions for o in a.option_strings}
        assert {"--help", "--seed", "--out"} <= flags, path
        with pytest.raises(SystemExit) as exc:
            main([*path, "--help"])
        assert exc.value.code == 0


def test_list_shows_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("small_cnn", "cifar_resnet20", "wds", "world", "simclr", "byol"):
        assert name in out


def test_world_writes_manifest_preview_and_is_deterministic(world, tmp_path):
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["config"]["n"] == 160
    assert (world / "preview.png").stat().st_size > 1000
    assert json.loads((world / "metrics.json").read_text())["scenes"] == 160
    assert yaml.safe_load((world / "config.yaml").read_text())["command"] == "world"
    again = tmp_path / "again"
    assert main(["world", "--n", "160", "--size", "32", "--out", str(again), "--quiet", "--seed", "3"]) == 0
    assert _tree_hash(again) == _tree_hash(world)  # byte-identical shards and manifest
    other = tmp_path / "other"
    assert main(["world", "--n", "160", "--size", "32", "--out", str(other), "--quiet", "--seed", "4"]) == 0
    assert _tree_hash(other) != _tree_hash(again)



def test_world_cue_option_draws_the_pattern_cue(tmp_path):
    out = tmp_path / "pat"
    assert main(["world", "--n", "40", "--size", "32", "--spurious", "1", "--cue", "pattern", "--out", str(out),
                 "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["spurious_cue"] == "pattern" and manifest["markers"][0] == "striped"
    from replens.world import WorldDataset

    train = WorldDataset(out, "train")
    assert all(train.record(i)["marker"] == manifest["markers"][train.labels[i]] for i in range(len(train)))
    with pytest.raises(SystemExit):
        main(["world", "--n", "40", "--cue", "stripes", "--out", str(tmp_path / "bad"), "--quiet"])


def test_embed_probe_and_train_end_to_end(world, tmp_path, capsys):
    emb = tmp_path / "emb"
    assert main(["embed", "--model", "small_cnn", "--data", f"world:{world}", "--out", str(emb), "--normalize",
                 "--quiet", "--batch-size", "64"]) == 0
    e = load_embeddings(emb)
    assert e.features.shape == (128, 256)
    assert np.allclose(np.linalg.norm(e.features, axis=1), 1.0, atol=1e-5)
    assert (emb / "metrics.json").exists() and (emb / "config.yaml").exists()

    run = tmp_path / "train"
    assert main(["train", "--data", f"world:{world}", "--epochs", "2", "--batch-size", "32", "--image-size", "32",
                 "--out", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["finished"] and metrics["training"]["steps"] == 8
    assert 0 <= metrics["training"]["knn_acc"] <= 100  # monitor on the world's test split
    assert metrics["trained"]["linear"]["count"] == 32 and "random_init" in metrics
    assert (run / "backbone.safetensors").exists()
    assert "linear probe top-1" in capsys.readouterr().out

    probe = tmp_path / "probe"
    assert main(["probe", "--model", "small_cnn", "--weights", str(run / "backbone.safetensors"),
                 "--data", f"world:{world}", "--test-data", f"world:{world}?split=test", "--out", str(probe),
                 "--quiet"]) == 0
    metrics = json.loads((probe / "metrics.json").read_text())
    assert set(metrics["linear"]["per_domain"]) <= {"photo", "cartoon", "sketch", "painting"}
    assert metrics["linear"]["count"] == 32
    assert "linear top-1" in capsys.readouterr().out



def test_presets_load_and_unknown_presets_are_named(tmp_path, capsys):
    from replens.config import load_config, preset_path
    from replens.engine import TrainConfig

    cifar = load_config(TrainConfig, preset_path("cifar10"))
    assert cifar.backbone == "resnet18" and cifar.backbone_args == {"stem": "cifar"} and cifar.optimizer == "lars"
    assert load_config(TrainConfig, preset_path("imagenet")).image_size == 224
    assert main(["train", "--data", "npz:/x.npz", "--preset", "nope"]) == 2
    assert "world" in capsys.readouterr().err


def test_user_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["embed", "--model", "small_cnn", "--data", "nope:/x", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "wds" in err and "Traceback" not in err
    assert main(["embed", "--model", "small_cnn", "--weights", str(tmp_path / "missing.safetensors"),
                 "--data", "npz:/does/not/exist.npz", "--out", str(tmp_path / "e2")]) == 2
    assert main(["train", "--data", "npz:/x.npz", "--set", "nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_a_seed_from_set_is_kept_and_an_explicit_seed_flag_wins(world, tmp_path):
    import yaml

    base = ["train", "--data", f"world:{world}", "--epochs", "1", "--batch-size", "64", "--image-size", "32",
            "--quiet", "--no-eval"]

    def run(name: str, *extra: str) -> tuple[int, bytes]:
        out = tmp_path / name
        assert main([*base, "--out", str(out), *extra]) == 0
        return yaml.safe_load((out / "config.yaml").read_text())["seed"], (out / "backbone.safetensors").read_bytes()

    default_seed, default_weights = run("default")
    set_seed, set_weights = run("set", "--set", "seed=4")
    flag_seed, flag_weights = run("flag", "--set", "seed=4", "--seed", "5")
    assert (default_seed, set_seed, flag_seed) == (0, 4, 5)
    assert len({default_weights, set_weights, flag_weights}) == 3  # the seed reached the initialisation
