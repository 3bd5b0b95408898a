"""Bad inputs across every command: exit code 2, one line naming the fault, no traceback, nothing lost.

One table, one test function (the few cases that need their own setup follow it): each
case runs ``replens.cli.main(argv)`` in process with ``--out`` pointing at a copy of a
finished ``embed`` run (``{run}``) or at a fresh path (``{fresh}``), and checks that

* the exit code is 2 (argparse's usage errors included),
* stderr is exactly one line, names the fault (a regular expression) and has no traceback,
* every file of the prior run folder is byte-identical afterwards, and a fresh
  folder is left without a run record (a corrected rerun is not blocked).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from replens.cli import main
from replens.models import create_backbone, save_checkpoint
from replens.runs import LOCK, RECORD
from replens.world import WorldConfig, generate_world


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    staging = path.with_suffix(".members")
    staging.mkdir()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            (staging / name).write_bytes(data)
            tar.add(staging / name, arcname=name)
    return path


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs of the table: a world, weights good and bad, shards, configs and a finished embed run."""
    root = tmp_path_factory.mktemp("bad")
    world = generate_world(WorldConfig(n=48, size=16, seed=5), root / "world", progress=False)
    torch.manual_seed(0)
    good = save_checkpoint(root / "w.safetensors", create_backbone("small_cnn"))
    other = save_checkpoint(root / "b.safetensors", create_backbone("small_cnn"))
    nan_state = create_backbone("small_cnn").state_dict()
    next(v for v in nan_state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    nan = save_checkpoint(root / "nan.safetensors", nan_state)
    tiny = save_checkpoint(root / "tiny.safetensors", create_backbone("resnet_tiny"))
    (root / "text.safetensors").write_text("Hello, this is not a weights file\n")
    (root / "text.pt").write_text("Hello, this is not a weights file\n")
    (root / "text.bin").write_text("Hello, this is not a weights file\n")
    full = root / "full.pt"
    torch.save(create_backbone("small_cnn").state_dict(), full)
    (root / "truncated.pt").write_bytes(full.read_bytes()[:200])
    torch.save({"weights": Path("/etc/passwd")}, root / "evil.pt")  # a pickled pathlib object: refused

    corrupt = Path(shutil.copytree(world, root / "corrupt"))
    shard = next(p for p in sorted(corrupt.rglob("*.npy")) if p.stat().st_size > 256)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    edited = Path(shutil.copytree(world, root / "edited"))
    manifest = json.loads((edited / "manifest.json").read_text())
    first = next(iter(manifest["shards"][0]["files"].values()))
    first["sha256"] = "0" * 64
    (edited / "manifest.json").write_text(json.dumps(manifest))

    shards = root / "shards"
    shards.mkdir()
    _tar(shards / "sparse.tar", {"a.png": _png(0), "a.cls": b"999", "b.png": _png(1), "b.cls": b"0"})
    (shards / "broken.tar").write_bytes(b"this is not a tar archive at all" * 4)
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "bad.yaml").write_text("epochs: [1\n")
    (root / "image.png").write_text("not an image")
    (root / "folder.png").mkdir()
    (root / "afile").write_text("x")

    prior = root / "prior"
    assert main(["embed", "--model", "small_cnn", "--weights", str(good), "--data", f"world:{world}",
                 "--out", str(prior), "--quiet", "--batch-size", "16"]) == 0
    test_emb = root / "test-emb"
    assert main(["embed", "--model", "small_cnn", "--data", f"world:{world}?split=test", "--layer", "block2",
                 "--out", str(test_emb), "--quiet"]) == 0
    pets = root / "pets"  # an image folder of two classes: other class names than the world's ten shapes
    for k, label in enumerate(("cat", "dog", "cat", "dog")):
        (pets / label).mkdir(parents=True, exist_ok=True)
        (pets / label / f"{k}.png").write_bytes(_png(10 + k))
    pets_emb = root / "pets-emb"
    assert main(["embed", "--model", "small_cnn", "--weights", str(good), "--data", f"folder:{pets}",
                 "--image-size", "16", "--out", str(pets_emb), "--quiet"]) == 0
    cli_world = root / "cli-world"  # a world that `replens world` made: a run folder with a record
    assert main(["world", "--n", "16", "--size", "16", "--out", str(cli_world), "--quiet"]) == 0
    return {"root": str(root), "world": str(world), "w": str(good), "b": str(other), "nan": str(nan),
            "tiny": str(tiny), "prior": str(prior), "corrupt": str(corrupt), "edited": str(edited),
            "shards": str(shards), "test_emb": str(test_emb), "pets_emb": str(pets_emb), "cli_world": str(cli_world)}


EMBED = ["embed", "--model", "small_cnn", "--data", "world:{world}", "--quiet", "--out", "{run}"]
GOOD_EMBED = [*EMBED, "--weights", "{w}", "--batch-size", "16"]
TRAIN = ["train", "--data", "world:{world}", "--quiet", "--no-eval", "--out", "{run}"]
QSCORE = ["qscore", "--quiet", "--out", "{run}"]
EXPLAIN = ["explain", "--model", "small_cnn", "--data", "world:{world}?split=test", "--quiet", "--out", "{run}"]
FDA = ["fda", "preview", "--quiet"]
DDM = ["ddm", "eval", "--train-data", "world:{world}", "--quiet", "--out", "{run}"]

#: (case id, argv with {placeholders}, what stderr must name: a case-insensitive regular expression)
CASES: list[tuple[str, list[str], str]] = [
    # --- the run-folder contract: the prior run in {run} was `embed` with weights {w}
    ("embed-other-weights", [*EMBED, "--weights", "{b}", "--batch-size", "16"], r"other inputs: weights .*b.safetensors. now.*--overwrite"),
    ("embed-no-weights", [*EMBED, "--batch-size", "16"], r"other inputs: weights"),
    ("embed-other-layer", [*GOOD_EMBED, "--layer", "block2"], r"other inputs: layer"),
    ("embed-other-split", ["embed", "--model", "small_cnn", "--weights", "{w}", "--batch-size", "16", "--data",
                           "world:{world}?split=test", "--quiet", "--out", "{run}"], r"other inputs: data"),
    ("embed-other-size", [*GOOD_EMBED, "--image-size", "8"], r"other inputs: image_size"),
    ("embed-other-seed", [*GOOD_EMBED, "--seed", "1"], r"other inputs: seed"),
    ("embed-normalize", [*GOOD_EMBED, "--normalize"], r"other inputs: normalize"),
    ("train-into-embed-run", [*TRAIN, "--epochs", "1"], r"not reusable.*other inputs"),
    ("probe-into-embed-run", ["probe", "--train-emb", "{prior}", "--test-emb", "{prior}", "--quiet", "--out", "{run}"],
     r"not reusable"),
    ("qscore-into-embed-run", [*QSCORE, "--embeddings", "{prior}"], r"not reusable"),
    ("world-into-embed-run", ["world", "--n", "16", "--size", "16", "--quiet", "--out", "{run}"], r"not reusable"),
    ("fda-into-embed-run", [*FDA, "world:{world}", "--out", "{run}"], r"not reusable"),
    ("out-is-a-file", [*GOOD_EMBED[:-2], "--out", "{root}/afile", "--weights", "{w}"], r"afile is a file"),
    ("out-in-a-file", [*GOOD_EMBED[:-2], "--out", "{root}/afile/sub", "--weights", "{w}"], r"cannot create run folder"),
    ("out-locked", [*GOOD_EMBED], r"being written by process \d+"),
    ("out-foreign-overwrite", [*GOOD_EMBED[:-2], "--out", "{shards}", "--overwrite"], r"not a replens run folder"),
    ("out-foreign", [*GOOD_EMBED[:-2], "--out", "{shards}"], r"holds 3 file\(s\).*no run.json"),
    ("out-a-world", [*GOOD_EMBED[:-2], "--out", "{world}"], r"not reusable: it holds \d+ file\(s\).*manifest.json"),
    ("out-a-world-overwrite", [*GOOD_EMBED[:-2], "--out", "{world}", "--overwrite"], r"not a replens run folder"),
    ("world-into-other-world", ["world", "--n", "16", "--size", "16", "--seed", "1", "--quiet", "--out", "{cli_world}"],
     r"other inputs: seed \(0 before, 1 now\)"),
    # --- numbers out of range, caught by argparse or the config before any work
    ("embed-batch-negative", [*GOOD_EMBED, "--batch-size", "-5"], r"--batch-size.*positive integer"),
    ("embed-batch-zero", [*GOOD_EMBED, "--batch-size", "0"], r"--batch-size.*positive integer"),
    ("embed-chunk-zero", [*GOOD_EMBED, "--chunk-size", "0"], r"--chunk-size.*positive integer"),
    ("embed-image-size-text", [*GOOD_EMBED, "--image-size", "big"], r"--image-size.*'big'"),
    ("embed-workers-negative", [*GOOD_EMBED, "--workers", "-1"], r"--workers.*non-negative"),
    ("train-epochs-zero", [*TRAIN, "--epochs", "0"], r"epochs must be a positive integer, got 0"),
    ("train-epochs-negative", [*TRAIN, "--epochs", "-1"], r"epochs must be a positive integer, got -1"),
    ("train-batch-negative", [*TRAIN, "--batch-size", "-5"], r"--batch-size.*positive integer, got '-5'"),
    ("train-set-batch-negative", [*TRAIN, "--set", "batch_size=-5"], r"batch_size must be a positive integer, got -5"),
    ("train-batch-zero", [*TRAIN, "--set", "batch_size=0"], r"batch_size must be a positive integer, got 0"),
    ("train-epochs-fraction", [*TRAIN, "--set", "epochs=1.5"], r"epochs: expected an integer, got 1.5"),
    ("train-batch-bool", [*TRAIN, "--set", "batch_size=true"], r"batch_size: expected an integer"),
    ("train-max-steps-zero", [*TRAIN, "--set", "max_steps=0"], r"max_steps must be a positive integer"),
    ("train-lr-negative", [*TRAIN, "--lr", "-1"], r"lr must be a positive finite number"),
    ("train-lr-nan", [*TRAIN, "--set", "lr=.nan"], r"lr must be a positive finite number"),
    ("train-crop-scale-above-1", [*TRAIN, "--set", "view_args.crop_scale=[2,1]"], r"crop_scale must be"),
    ("train-crop-scale-unordered", [*TRAIN, "--set", "view_args.crop_scale=[0.5,0.2]"], r"crop_scale must be"),
    ("train-crop-scale-zero", [*TRAIN, "--set", "view_args.crop_scale=[0,1]"], r"crop_scale must be"),
    ("train-gray-prob", [*TRAIN, "--set", "view_args.gray_prob=2"], r"gray_prob must be a probability"),
    ("train-view-field", [*TRAIN, "--set", "view_args.nosuch=1"], r"unknown view field.*nosuch"),
    ("train-unknown-key", [*TRAIN, "--set", "nonsense=1"], r"nonsense"),
    ("train-set-no-equals", [*TRAIN, "--set", "epochs"], r"key=value"),
    ("train-set-bad-yaml", [*TRAIN, "--set", "epochs=[1"], r"epochs.*YAML"),
    ("train-preset", [*TRAIN, "--preset", "nope"], r"unknown preset 'nope'"),
    ("train-preset-path", [*TRAIN, "--preset", "../presets/world"], r"unknown preset"),
    ("train-config-missing", [*TRAIN, "--config", "{root}/missing.yaml"], r"cannot read config file .*missing.yaml"),
    ("train-config-list", [*TRAIN, "--config", "{root}/list.yaml"], r"list.yaml must hold a mapping"),
    ("train-config-bad-yaml", [*TRAIN, "--config", "{root}/bad.yaml"], r"cannot read config file .*bad.yaml"),
    ("train-preset-and-config", [*TRAIN, "--preset", "world", "--config", "{root}/list.yaml"], r"either --preset"),
    ("world-n-zero", ["world", "--n", "0", "--quiet", "--out", "{run}"], r"--n.*positive integer"),
    # --- weights
    ("weights-missing", [*EMBED, "--weights", "{root}/missing.safetensors"], r"not found: .*missing.safetensors"),
    ("weights-nan", [*EMBED, "--weights", "{nan}"], r"nan.safetensors hold NaN or infinite values in block1"),
    ("weights-text-safetensors", [*EMBED, "--weights", "{root}/text.safetensors"], r"cannot read safetensors file .*text.safetensors: .*header"),
    ("weights-text-pt", [*EMBED, "--weights", "{root}/text.pt"], r"cannot read torch file .*text.pt"),
    ("weights-text-bin", [*EMBED, "--weights", "{root}/text.bin"], r"cannot read torch file .*text.bin"),
    ("weights-truncated", [*EMBED, "--weights", "{root}/truncated.pt"], r"cannot read torch file .*truncated.pt"),
    ("weights-pickle", [*EMBED, "--weights", "{root}/evil.pt"], r"refusing to unpickle .*pathlib"),
    ("weights-other-model", [*EMBED, "--weights", "{tiny}"], r"tiny.safetensors do not match"),
    ("model-unknown", ["embed", "--model", "nosuch", "--data", "world:{world}", "--quiet", "--out", "{run}"],
     r"unknown backbone 'nosuch'"),
    ("model-timm-unknown", ["embed", "--model", "timm:nosuchnet", "--data", "world:{world}", "--quiet", "--out",
                            "{run}"], r"unknown timm model 'nosuchnet'"),
    ("layer-unknown", [*GOOD_EMBED, "--layer", "nosuch"], r"unknown layers 'nosuch' for small_cnn; known:"),
    # --- data
    ("data-scheme", [*GOOD_EMBED[:4], "nope:/x", *GOOD_EMBED[5:]], r"nope"),
    ("data-world-missing", [*GOOD_EMBED[:4], "world:{root}/nowhere", *GOOD_EMBED[5:]], r"cannot open the world"),
    ("data-world-flipped-byte", [*GOOD_EMBED[:4], "world:{corrupt}", *GOOD_EMBED[5:]], r"does not match its sha256"),
    ("data-world-edited-manifest", [*GOOD_EMBED[:4], "world:{edited}", *GOOD_EMBED[5:]], r"does not match its sha256"),
    ("data-world-split", [*GOOD_EMBED[:4], "world:{world}?split=nosuch", *GOOD_EMBED[5:]], r"nosuch"),
    ("data-wds-sparse-labels", [*GOOD_EMBED[:4], "wds:{shards}/sparse.tar", *GOOD_EMBED[5:]],
     r"up to 999 but only 2 distinct.*num_classes"),
    ("data-wds-label-above-count", [*GOOD_EMBED[:4], "wds:{shards}/sparse.tar?num_classes=10", *GOOD_EMBED[5:]],
     r"label 999, outside"),
    ("data-wds-missing", [*GOOD_EMBED[:4], "wds:{shards}/none.tar", *GOOD_EMBED[5:]], r"none.tar"),
    ("data-wds-not-tar", [*GOOD_EMBED[:4], "wds:{shards}/broken.tar", *GOOD_EMBED[5:]], r"broken.tar"),
    ("data-folder-missing", [*GOOD_EMBED[:4], "folder:{root}/nowhere", *GOOD_EMBED[5:]], r"nowhere"),
    # --- probe
    ("probe-nothing", ["probe", "--quiet", "--out", "{fresh}"], r"give --train-emb and --test-emb"),
    ("probe-emb-missing", ["probe", "--train-emb", "{root}/none", "--test-emb", "{prior}", "--quiet", "--out",
                           "{fresh}"], r"none"),
    ("probe-class-mismatch", ["probe", "--train-emb", "{prior}", "--test-emb", "{pets_emb}", "--quiet", "--out",
                              "{fresh}"], r"name different classes \(10 vs 2\)"),
    ("probe-dim-mismatch", ["probe", "--train-emb", "{prior}", "--test-emb", "{test_emb}", "--quiet", "--out",
                            "{fresh}"], r"features have shape \(N, \(256,\)\).*\(N, \(\d+,\)\)"),
    # --- qscore
    ("qscore-band-unordered", [*QSCORE, "--embeddings", "{prior}", "--band", "90,10"], r"--band needs"),
    ("qscore-band-text", [*QSCORE, "--embeddings", "{prior}", "--band", "a,b"], r"--band wants"),
    ("qscore-nothing", [*QSCORE], r"give --model and --data, or --embeddings"),
    ("qscore-both", [*QSCORE, "--embeddings", "{prior}", "--data", "world:{world}"], r"replaces --data"),
    ("qscore-test-only", [*QSCORE, "--model", "small_cnn", "--data", "world:{world}", "--test-embeddings", "{prior}"],
     r"--test-embeddings needs --embeddings"),
    ("qscore-emb-missing", [*QSCORE, "--embeddings", "{root}/none"], r"none"),
    ("qscore-layer", [*QSCORE, "--model", "small_cnn", "--data", "world:{world}", "--layer", "nosuch"],
     r"unknown layers 'nosuch'"),
    ("qscore-cam-layer", [*QSCORE, "--model", "small_cnn", "--data", "world:{world}", "--cam-layer", "nosuch"],
     r"unknown layers 'nosuch'"),
    ("qscore-saliency-no-model", [*QSCORE, "--embeddings", "{prior}", "--saliency", "4"], r"--saliency needs --model"),
    ("qscore-holdout", [*QSCORE[:-1], "{fresh}", "--embeddings", "{prior}", "--labels", "--holdout", "1.5"],
     r"--holdout must lie in \(0, 1\)"),
    # --- explain (the layer is checked before the VL model is loaded or trained)
    ("explain-layer", [*EXPLAIN, "--layer", "nosuch"], r"unknown layers 'nosuch'"),
    ("explain-data", ["explain", "--model", "small_cnn", "--data", "nope:/x", "--quiet", "--out", "{run}"], r"nope"),
    ("explain-weights-nan", [*EXPLAIN, "--weights", "{nan}"], r"NaN"),
    ("explain-mode", [*EXPLAIN, "--mode", "nosuch"], r"--mode: invalid choice"),
    # --- fda preview
    ("fda-image-missing", [*FDA, "{root}/missing.png", "--out", "{run}/fda.png"], r"missing.png does not exist"),
    ("fda-image-unreadable", [*FDA, "{root}/image.png", "--out", "{run}/fda.png"], r"image.png"),
    ("fda-out-is-folder", [*FDA, "world:{world}", "--out", "{root}/folder.png"], r"folder.png is a folder"),
    ("fda-images-zero", [*FDA, "world:{world}", "--images", "0", "--out", "{run}/fda.png"], r"--images.*positive"),
    # --- ddm eval
    ("ddm-weights-missing", [*DDM, "--weights", "{root}/none.safetensors"], r"none.safetensors: no such file"),
    ("ddm-label-twice", [*DDM, "--weights", "a={w}", "--weights", "a={w}"], r"label 'a' is given twice"),
    ("ddm-compare", [*DDM, "--weights", "a={w}", "--compare", "x=a"], r"--compare wants"),
    # --- tokens, vl, captions, audit
    ("tokens-train-missing", ["tokens", "train", "--tokens", "{root}/none", "--quiet", "--out", "{run}"],
     r"no token cache"),
    ("tokens-eval-missing", ["tokens", "eval", "--model", "{root}/none", "--quiet", "--out", "{run}"], r"none"),
    ("tokens-steps-zero", ["tokens", "train", "--tokens", "{root}/none", "--steps", "0", "--out", "{run}"],
     r"--steps.*positive"),
    ("vl-zeroshot-data", ["vl", "zeroshot", "--data", "nope:/x", "--vl", "{root}/none.safetensors", "--quiet",
                          "--out", "{fresh}"], r"none.safetensors|nope"),
    ("captions-neither", ["captions", "build", "--quiet", "--out", "{fresh}"], r"exactly one of --from"),
    ("audit-data-without-model", ["audit", "--data", "world:{world}", "--quiet", "--out", "{fresh}"],
     r"--data without --model"),
    ("audit-set-eps", ["audit", "--set", "eps=abc", "--quiet", "--out", "{run}"], r"eps"),
    ("audit-into-embed-run", ["audit", "--model", "small_cnn", "--data", "world:{world}", "--quiet", "--out", "{run}"],
     r"not reusable"),
    ("unknown-option", [*GOOD_EMBED, "--nosuch"], r"unrecognized arguments: --nosuch"),
]


@pytest.mark.parametrize(("case", "argv", "fault"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(ctx, tmp_path, capsys, case, argv, fault):
    run = Path(shutil.copytree(ctx["prior"], tmp_path / "run"))
    fresh = tmp_path / "fresh"
    if case == "out-locked":
        (run / LOCK).write_text(f"{os.getppid()}\n")  # a live process holds the folder
    before = _tree(run)
    args = [a.format(run=run, fresh=fresh, **ctx) for a in argv]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(fault, lines[0], re.IGNORECASE), lines[0]
    assert _tree(run) == before  # the prior run's files are byte-identical
    assert not (fresh / RECORD).exists()  # a fresh folder keeps no record that would pin these inputs


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_an_audit_with_other_weights_is_refused_not_reported_under_their_name(ctx, tmp_path, capsys):
    out = tmp_path / "audit"
    argv = ["audit", "--model", "small_cnn", "--data", f"world:{ctx['world']}", "--no-falcon", "--set", "qscore=false",
            "--quiet", "--out", str(out)]
    assert main([*argv, "--weights", ctx["w"]]) == 0
    before = _tree(out)
    capsys.readouterr()
    assert main([*argv, "--weights", ctx["b"]]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(r"other inputs: weights .*b.safetensors. now.*--overwrite", lines[0]), lines
    assert _tree(out) == before
    assert main([*argv, "--weights", ctx["w"]]) == 0  # the same inputs: reused
    assert json.loads((out / "summary.json").read_text())["overview"]["weights"] == ctx["w"]


def test_summary_md_escapes_names_as_the_html_does():
    from replens.apps.audit import render_summary

    summary = {
        "overview": {"headline": "h", "data": "world:<x>", "train_samples": 1, "test_samples": 1, "encoder": "e|*"},
        "accuracy": {"domains": ["<b>bold</b>", "a|b"],
                     "rows": [{"encoder": "e", "probe": "linear", "per_domain": {}, "all": 50.0}]},
        "failures": [{"name": "[x](javascript:alert(1))", "domain": "<img src=x onerror=alert(1)>",
                      "explanation": "predicted `rm` for a *cat*"}],
        "seconds": 1.0, "timings": {},
    }
    text = render_summary(summary)
    assert "<img" not in text and "<b>" not in text and "<x>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "| a\\|b |" in text and "encoder e\\|\\*" in text
    assert "\\[x\\](javascript:alert(1))" in text and "\\`rm\\`" in text and "\\*cat\\*" in text


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for out, fault in ((locked, r"run folder .*locked is not writable"),
                           (locked / "sub", r"cannot create run folder .*sub")):
            capsys.readouterr()
            assert main(["world", "--n", "4", "--size", "8", "--quiet", "--out", str(out)]) == 2
            lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            assert len(lines) == 1 and re.search(fault, lines[0]), lines
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o755)
