"""The run-folder contract: reuse only on a matching fingerprint, --overwrite, locks, file outputs, kill -9.

The kill tests start a command in a subprocess, ``kill -9`` it part-way (when a
file appears, or half-way through writing a given file), rerun it into the same
folder (which takes over the dead process's lock and resumes) and compare the
outputs with an uninterrupted run: the same files, the same results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from replens.cli import main
from replens.models import create_backbone, load_embeddings, save_checkpoint
from replens.runs import LOCK, RECORD, RunFolderError, open_run, safe_name
from replens.world import WorldConfig, generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(WorldConfig(n=96, size=32, seed=2), tmp_path_factory.mktemp("w") / "w", progress=False)


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


#: Run as ``python -c _KILL_AT_WRITE TARGET ARGV...``: ``replens ARGV`` that ``kill -9``s itself part-way through the
#: atomic write of the file whose path ends with TARGET, leaving half of it in the staging file (a deterministic
#: kill mid-save; a poll on the files could miss a save of a few milliseconds).
_KILL_AT_WRITE = """
import os, runpy, signal, sys, tempfile
from pathlib import Path
import replens.runs as runs
target, real = sys.argv[1], runs.atomic_write
def atomic_write(path, write):
    path = Path(path)
    if not str(path).endswith(os.sep + target):
        return real(path, write)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    write(Path(tmp))
    data = Path(tmp).read_bytes()
    Path(tmp).write_bytes(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
runs.atomic_write = atomic_write
sys.argv = ["replens", *sys.argv[2:]]
runpy.run_module("replens.cli", run_name="__main__", alter_sys=True)
"""


def _kill_when(argv: list[str], ready: object = None, *, at_write: str | None = None, timeout: float = 120.0) -> None:
    """Run ``replens argv`` in a subprocess and ``kill -9`` it as soon as ``ready()`` holds.

    With ``at_write`` the subprocess kills itself instead, half-way through writing that file (a path suffix).
    """
    prefix = ["-c", _KILL_AT_WRITE, at_write] if at_write else ["-m", "replens.cli"]
    proc = subprocess.Popen([sys.executable, *prefix, *argv], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while (ready is None or not ready()) and proc.poll() is None and time.time() < deadline:  # type: ignore[operator]
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_rerun_reuses_and_other_inputs_are_refused_until_overwrite(world, tmp_path, capsys):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.safetensors", create_backbone("small_cnn"))
    run = tmp_path / "emb"
    argv = ["embed", "--model", "small_cnn", "--weights", str(weights), "--data", f"world:{world}", "--out", str(run),
            "--quiet", "--chunk-size", "32"]
    assert main(argv) == 0
    record = json.loads((run / RECORD).read_text())
    assert record["state"] == "finished" and not (run / LOCK).exists()
    assert record["fingerprint"]["inputs"]["weights"]["sha256"] and "data" in record["fingerprint"]["inputs"]
    first = load_embeddings(run).features.copy()
    chunk = run / "chunk-00000.npy"
    stamp = chunk.stat().st_mtime_ns
    assert main(argv) == 0 and chunk.stat().st_mtime_ns == stamp  # same inputs: finished work is reused

    # the same weights path with other content: named, with the two ways on, and nothing changes
    save_checkpoint(weights, create_backbone("small_cnn"))
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the content of weights" in err and "--overwrite" in err and "another --out" in err
    assert chunk.stat().st_mtime_ns == stamp
    assert main([*argv, "--overwrite"]) == 0
    assert not np.allclose(load_embeddings(run).features, first)  # recomputed with the new weights


def test_library_resume_checks_the_weights(world, tmp_path):
    from replens.data import open_source
    from replens.models import EmbeddingsError, extract_features

    source = open_source(f"world:{world}")
    torch.manual_seed(0)
    extract_features(create_backbone("small_cnn"), source, tmp_path / "e", progress=False)
    with pytest.raises(EmbeddingsError, match="weights_sha256"):
        extract_features(create_backbone("small_cnn"), source, tmp_path / "e", progress=False)


def test_lock_names_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    run = open_run(tmp_path / "r", {"command": "x", "a": 1})
    with pytest.raises(RunFolderError, match=rf"being written by process {os.getpid()}"):
        open_run(tmp_path / "r", {"command": "x", "a": 1})
    run.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "r" / LOCK).write_text(f"{dead.pid}\n")
    # what a writer killed mid-save leaves: our atomic_write's staging file and safetensors' own (Rust tempfile)
    (tmp_path / "r" / ".model.safetensors.ab12cd.tmp").write_bytes(b"half")
    (tmp_path / "r" / ".tmpI42k3M").write_bytes(b"half")
    # and a killed Q-Score stream's spill folder, made where a caller points it (here the run folder)
    from replens.quality.qscore import QScoreStream
    stream = QScoreStream(spill_dir=tmp_path / "r", background=False)
    spill = stream._dir
    assert spill.parent == tmp_path / "r" and (spill / "cols.bin").exists()
    with open_run(tmp_path / "r", {"command": "x", "a": 1}) as again:
        assert again.reused and again.finished_before
        assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]
    assert not (tmp_path / "r" / LOCK).exists() and not spill.exists()
    stream.close()


def test_fda_preview_to_a_file_writes_only_that_file(world, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("precious: 1\n")
    (run / "metrics.json").write_text("{}\n")
    assert main(["fda", "preview", f"world:{world}", "--images", "1", "--out", str(run / "fda.png"), "--quiet"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "fda.png", "metrics.json"]
    assert (run / "config.yaml").read_text() == "precious: 1\n" and (run / "metrics.json").read_text() == "{}\n"


def test_derived_names_stay_inside_the_run_folder(world, tmp_path):
    assert safe_name("..") == "item" and safe_name("../../etc") == "_.._etc" and safe_name("a/b c") == "a_b_c"
    weights = save_checkpoint(tmp_path / "w.safetensors", create_backbone("small_cnn"))
    out = tmp_path / "ddm"
    assert main(["ddm", "eval", "--weights", f"..={weights}", "--model", "small_cnn", "--train-data",
                 f"world:{world}", "--no-plots", "--probe-iters", "5", "--out", str(out), "--quiet"]) == 0
    assert (out / "model0").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["ddm", "w.safetensors"]


def test_a_failed_resume_changes_nothing(world, tmp_path, capsys):
    run = tmp_path / "train"
    argv = ["train", "--data", f"world:{world}", "--no-eval", "--epochs", "1", "--batch-size", "32", "--out", str(run),
            "--quiet"]
    assert main(argv) == 0
    ckpt = run / "checkpoint.pt"
    good = ckpt.read_bytes()
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": create_backbone("resnet_tiny").state_dict(), "state": {"step": 1}}, foreign)
    for bad in (good[:300], foreign.read_bytes()):  # truncated; another model's checkpoint
        ckpt.write_bytes(bad)
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        capsys.readouterr()
        assert main([*argv, "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "checkpoint.pt" in err and "Traceback" not in err, err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_kill_9_during_embed_then_rerun_matches(world, tmp_path):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.safetensors", create_backbone("resnet_tiny"))
    args = ["embed", "--model", "resnet_tiny", "--weights", str(weights), "--data", f"world:{world}", "--quiet",
            "--chunk-size", "16", "--batch-size", "4"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*args, "--out", str(full)]) == 0
    _kill_when([*args, "--out", str(killed)], lambda: (killed / "chunk-00001.npy").exists())
    meta = json.loads((killed / "meta.json").read_text())
    assert not meta["complete"] and (killed / LOCK).exists()  # killed part-way, its lock left behind
    # a rerun with other weights would mix two models' chunks: refused, the killed run's chunks kept
    other = save_checkpoint(tmp_path / "other.safetensors", create_backbone("resnet_tiny"))
    chunks = {p.name: p.read_bytes() for p in killed.glob("chunk-*.npy")}
    assert main([*args[:4], str(other), *args[5:], "--out", str(killed)]) == 2
    assert {p.name: p.read_bytes() for p in killed.glob("chunk-*.npy")} == chunks
    assert main([*args, "--out", str(killed)]) == 0
    a, b = load_embeddings(full), load_embeddings(killed)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.names == b.names and json.loads((killed / RECORD).read_text())["state"] == "finished"


def test_kill_9_during_qscore_then_rerun_matches(world, tmp_path):
    args = ["qscore", "--model", "resnet_tiny", "--data", f"world:{world}?split=train", "--test-data",
            f"world:{world}?split=test", "--labels", "--eps", "1", "--format", "csv", "--no-compression", "--quiet",
            "--batch-size", "4"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*args, "--out", str(full)]) == 0
    _kill_when([*args, "--out", str(killed)], lambda: (killed / "embeddings-train" / "meta.json").exists())
    assert not (killed / "scores.csv").exists()
    assert main([*args, "--out", str(killed)]) == 0
    assert (killed / "scores.csv").read_text() == (full / "scores.csv").read_text()
    assert (killed / "feature_sets.json").read_text() == (full / "feature_sets.json").read_text()


def test_kill_9_during_the_token_cache_then_rerun_matches(world, tmp_path):
    from replens.tokens import TokenDataset
    from replens.vl import TinyClipTrainConfig, train_tiny_clip
    from support import TINY_VIT_CLIP

    vl = tmp_path / "vl.safetensors"
    train_tiny_clip(world, vl, TinyClipTrainConfig(model=TINY_VIT_CLIP, steps=1, batch_size=8), progress=False)
    args = ["tokens", "extract", "--data", f"world:{world}?split=train", "--vl", str(vl), "--shard-size", "16",
            "--batch-size", "4", "--quiet"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*args, "--out", str(full)]) == 0
    shards = sorted(p.name for p in full.iterdir() if p.name != LOCK)
    _kill_when([*args, "--out", str(killed)], lambda: len(list(killed.glob("shard-*.safetensors"))) >= 1)
    assert main([*args, "--out", str(killed)]) == 0
    assert sorted(p.name for p in killed.iterdir()) == shards  # no half-written files of the killed run left
    a, b = TokenDataset(full), TokenDataset(killed)
    assert len(a) == len(b) and a.captions == b.captions
    assert [s.length for s in a.samples] == [s.length for s in b.samples]


@pytest.fixture(scope="module")
def vl_and_bank(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from replens.explain.bank import build_bank, world_caption_texts
    from replens.vl import TinyClipTrainConfig, load_vl_model, train_tiny_clip
    from support import TINY_VIT_CLIP

    root = tmp_path_factory.mktemp("vl")
    vl = root / "vl.safetensors"
    train_tiny_clip(world, vl, TinyClipTrainConfig(model=TINY_VIT_CLIP, steps=1, batch_size=8), progress=False)
    build_bank(world_caption_texts(relational=0, distractors=30)[::40], load_vl_model(vl), root / "bank", shard_size=100)
    return vl, root / "bank"


#: FALCON options that find a few single-feature groups among the 19 test images of the module's world.
TINY_FALCON = ["--mode", "features", "--alpha-std", "2", "--min-samples", "1", "--gamma", "-1", "--max-groups", "3"]


def _same(a: object, b: object, ignore: tuple[str, ...] = (), where: str = "") -> None:
    """``a == b`` with floats to a relative tolerance of 1e-6 (NaN equals NaN), keys in ``ignore`` skipped at any depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            if key not in ignore:
                _same(a[key], b[key], ignore, f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, ignore, f"{where}[{k}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True), where
    else:
        assert a == b, where


def test_kill_9_during_explain_then_rerun_matches(world, vl_and_bank, tmp_path):
    vl, bank = vl_and_bank
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.safetensors", create_backbone("small_cnn"))
    args = ["explain", "--model", "small_cnn", "--weights", str(weights), "--data", f"world:{world}?split=test",
            "--vl", str(vl), "--captions", str(bank), "--failures", "--train-data", f"world:{world}?split=train",
            "--max-failures", "5", *TINY_FALCON, "--quiet"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*args, "--out", str(full)]) == 0
    concepts = json.loads((full / "concepts.json").read_text())
    assert concepts["groups"] and (full / "failures.json").is_file()  # groups and failures to compare
    _kill_when([*args, "--out", str(killed)], at_write="concepts.json")  # mid-save: some outputs written, some not
    assert (killed / "representations.npy").is_file() and not (killed / "metrics.json").exists()
    assert list(killed.glob(".concepts.json.*.tmp")) and (killed / LOCK).exists()  # half a file, a dead lock
    assert main([*args, "--out", str(killed)]) == 0
    assert _files(killed) == _files(full)  # no half-written file of the killed run left, none missing
    for name in ("concepts.json", "failures.json", "rows.json"):
        _same(json.loads((killed / name).read_text()), json.loads((full / name).read_text()), name)
    np.testing.assert_allclose(np.load(killed / "representations.npy"), np.load(full / "representations.npy"),
                               rtol=1e-6)
    _same(json.loads((killed / "metrics.json").read_text()), json.loads((full / "metrics.json").read_text()),
          ignore=("seconds",))
    assert json.loads((killed / RECORD).read_text())["state"] == "finished"


def test_kill_9_during_audit_then_rerun_matches(world, vl_and_bank, tmp_path):
    vl, bank = vl_and_bank
    args = ["audit", "--world", str(world), "--set", "train.epochs=1", "--set", "train.batch_size=16",
            "--set", f"vl={vl}", "--set", f"captions={bank}", "--set", f"cache_dir={tmp_path / 'cache'}",
            "--set", f"explain_args=[{', '.join(repr(a) for a in TINY_FALCON)}]",
            "--set", "qscore_args=[--no-compression]", "--set", "failures_shown=3", "--quiet"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*args, "--out", str(full)]) == 0
    # killed in the Q-Score step (a poll), then in the explain step's save (the process kills itself)
    _kill_when([*args, "--out", str(killed)], lambda: (killed / "qscore" / RECORD).exists())
    assert (killed / "train" / "train_summary.json").is_file() and not (killed / "qscore" / "metrics.json").exists()
    _kill_when([*args, "--out", str(killed)], at_write=os.path.join("explain", "report.html"))
    assert (killed / "qscore" / "metrics.json").is_file() and not (killed / "explain" / "metrics.json").exists()
    assert list((killed / "explain").glob(".report.html.*.tmp")) and (killed / "explain" / LOCK).exists()
    assert main([*args, "--out", str(killed)]) == 0
    assert _files(killed) == _files(full)  # no half-written file or stale lock of the killed runs left
    a, b = json.loads((full / "summary.json").read_text()), json.loads((killed / "summary.json").read_text())
    assert b["runs"] == 3 and a["runs"] == 1
    _same(b, a, ignore=("created", "timings", "seconds", "runs", "images_per_s"))  # all but the clock's numbers
    assert a["groups"] and a["failures"] and a["qscore"]["n"] == 19  # the compared sections are not empty
    assert (killed / "qscore" / "scores.csv").read_text() == (full / "qscore" / "scores.csv").read_text()
    for folder in (killed, killed / "qscore", killed / "explain"):
        assert json.loads((folder / RECORD).read_text())["state"] == "finished"


def test_reproduce_keeps_the_run_folder_contract(tmp_path, monkeypatch, capsys):
    import replens.apps.reproduce.registry as registry
    from replens.apps.reproduce import RecipeResult, recipe
    from replens.apps.reproduce import paper as paper_module

    seen: list[dict] = []

    def fn(ctx):
        seen.append(dict(ctx.options))
        return RecipeResult(rows=[{"acc": 50.0 + ctx.seed}], protocol={"steps": 1})

    recipe("table-9.20", title="scratch", section="9.9", kind="table", needs="nothing")(fn)
    real = paper_module.load_paper_numbers
    def fake(id):
        return ({"section": "9.9", "title": "t", "columns": ["acc"], "rows": [{"acc": 60.0}]} if id == "table-9.20"
                else real(id))

    import replens.apps.commands.reproduce as reproduce_command
    import replens.apps.reproduce.report as report_module

    for module in (paper_module, registry, report_module, reproduce_command):  # each binds the name at import
        monkeypatch.setattr(module, "load_paper_numbers", fake)
    try:
        run = tmp_path / "r"
        argv = ["reproduce", "table-9.20", "--out", str(run), "--quiet", "--set", "k=1"]
        assert main(argv) == 0
        record = json.loads((run / RECORD).read_text())
        assert record["state"] == "finished" and record["fingerprint"]["config"]["options"] == {"k": 1}
        assert main(argv) == 0 and len(seen) == 2  # the same inputs: the folder is reused
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        capsys.readouterr()
        for other in (["--set", "k=2"], ["--seed", "1"], ["--budget", "paper"]):
            assert main([*argv[:-2], *other]) == 2, other  # other inputs: refused, named, nothing changes
            err = capsys.readouterr().err.strip()
            assert "\n" not in err and "other inputs" in err and "--overwrite" in err, err
            assert {p.name: p.read_bytes() for p in run.iterdir()} == before
        (run / "stale.txt").write_text("from the run with k=1")
        assert main([*argv[:-2], "--set", "k=2", "--overwrite"]) == 0  # --overwrite clears the folder first
        assert not (run / "stale.txt").exists() and seen[-1] == {"k": 2}
        assert json.loads((run / "result.json").read_text())["protocol"]["options"] == {"k": 2}
        assert json.loads((run / RECORD).read_text())["fingerprint"]["config"]["options"] == {"k": 2}
    finally:
        registry.RECIPES.remove("table-9.20")


def test_a_group_of_every_feature_saves_its_images(world, vl_and_bank, tmp_path):
    """A low alpha puts all 256 features in one group: its image names stay short (once 'File name too long')."""
    from replens.explain.outputs import group_image_stem

    assert group_image_stem("3,17") == "3_17"
    long = ",".join(map(str, range(256)))
    assert len(group_image_stem(long)) <= 80 and group_image_stem(long) != group_image_stem(long + ",256")
    vl, bank = vl_and_bank
    out = tmp_path / "explain"
    assert main(["explain", "--model", "small_cnn", "--data", f"world:{world}?split=test", "--vl", str(vl),
                 "--captions", str(bank), "--alpha-std", "-1", "--min-samples", "1", "--gamma", "-1",
                 "--max-groups", "1", "--quiet", "--out", str(out)]) == 0
    groups = json.loads((out / "concepts.json").read_text())["groups"]
    assert len(groups[0]["features"]) > 100
    page = (out / "report.html").read_text()
    for image in (out / "images").glob("group-*.png"):
        assert len(image.name) < 100 and f'src="images/{image.name}"' in page
