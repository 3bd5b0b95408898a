"""Training across processes: exact resume after ``kill -9`` and DDP with two gloo processes."""

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
from replens.engine import load_checkpoint
from replens.world import WorldConfig, generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(WorldConfig(n=160, size=32, seed=1), tmp_path_factory.mktemp("w") / "w", progress=False)


def _args(world: Path, out: Path, epochs: int = 4) -> list[str]:
    return ["train", "--data", f"world:{world}", "--no-eval", "--epochs", str(epochs), "--batch-size", "16", "--image-size", "32",
            "--backbone", "resnet_tiny", "--out", str(out), "--quiet", "--set", "checkpoint_every=3",
            "--set", "log_every=1", "--set", "warmup_epochs=0.5"]


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    # the same intra-op thread count as this process (tests/conftest.py sets one), so float sums match exactly
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


def test_resume_after_kill_9_matches_an_uninterrupted_run(world, tmp_path):
    full = tmp_path / "full"
    assert main(_args(world, full)) == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "replens.cli", *_args(world, killed)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = load_checkpoint(ckpt)["state"]["step"]
    assert 3 <= done < 32  # killed part-way, after at least one checkpoint
    assert main([*_args(world, killed), "--resume"]) == 0
    a, b = _losses(full), _losses(killed)
    assert len(a) == len(b) == 32
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert json.loads((killed / "metrics.json").read_text())["training"]["finished"]


def test_ddp_two_gloo_processes(world, tmp_path):
    run = tmp_path / "ddp"
    args = _args(world, run, epochs=1) + ["--set", "devices=2", "--set", "accelerator=cpu"]
    res = subprocess.run([sys.executable, "-m", "replens.cli", *args], env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "metrics.json").read_text())["training"]
    assert summary["world_size"] == 2 and summary["steps"] == 8 and summary["finished"]
    assert np.isfinite(_losses(run)).all()
    state = load_checkpoint(run / "checkpoint.pt")["model"]
    assert not any(k.startswith("module.") for k in state)
    assert any("running_mean" in k for k in state)  # batch-norm buffers saved under the plain names
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
