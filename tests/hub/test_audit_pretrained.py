"""``replens audit --model M --pretrained --data folder:TRAIN --test-data folder:TEST --vl HUB-MODEL`` end to end.

The connected-machine command is ``--model resnet50 --pretrained --vl ViT-B-32:openai``; here the same
path runs on a small registered backbone (cifar_resnet20, its akamaster checkpoint layout) and the tiny
CLIP in open_clip's hub format, both served by a local server on 127.0.0.1 (FALCON included).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from local_hub import LocalHub
from replens.cli import main
from replens.models import create_backbone
from replens.models.cifar_resnet import AKAMASTER_FILES
from support import TINY_VIT_CLIP


def _folder(root: Path, n: int, seed: int) -> Path:
    """An ImageFolder of ``n`` 32 px images in 3 classes whose colour carries the class."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % 3
        pixels = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
        pixels[8:24, 8:24, label] = 200 + rng.integers(0, 55)
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"class{label}" / f"{i:03d}.png")
    return root


def test_audit_of_a_pretrained_model_with_a_hub_vl_model(
    hub: LocalHub, caches: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replens.vl import build_tiny_clip

    torch.manual_seed(0)
    buffer = io.BytesIO()
    state = create_backbone("cifar_resnet20").state_dict()
    torch.save({"best_prec1": 91.7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, buffer)
    hub.add(f"/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{AKAMASTER_FILES[20]}",
            buffer.getvalue())
    for f in build_tiny_clip(TINY_VIT_CLIP, seed=1).save_open_clip(tmp_path / "clip").iterdir():
        hub.add_hf("replens/tiny-clip", f.name, f.read_bytes())
    train, test = _folder(tmp_path / "train", 48, 0), _folder(tmp_path / "test", 36, 1)

    def audit(out: Path, *extra: str) -> int:
        return main([*extra, "audit", "--model", "cifar_resnet20", "--pretrained", "--data", f"folder:{train}",
                     "--test-data", f"folder:{test}", "--vl", "hf-hub:replens/tiny-clip", "--image-size", "32",
                     "--set", f"cache_dir={tmp_path / 'cache'}",
                     "--set", "explain_args=[--alpha-std, '2', --min-samples, '3', --gamma, '-1', --max-groups, '3']",
                     "--out", str(out), "--quiet"])

    assert audit(tmp_path / "run") == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["overview"]["linear_top1"] == summary["overview"]["linear_top1"]  # a number, not NaN
    assert (tmp_path / "run" / "explain" / "metrics.json").is_file() and (tmp_path / "run" / "index.html").is_file()
    explain_config = (tmp_path / "run" / "explain" / "config.yaml").read_text()
    assert "hf-hub:replens/tiny-clip" in explain_config and "pretrained: true" in explain_config
    assert hub.hits("resnet20") and hub.hits("replens/tiny-clip/resolve/main/open_clip_config.json")
    seen = len(hub.requests)

    capsys.readouterr()
    assert audit(tmp_path / "run-offline", "--offline") == 0  # everything now comes from the caches
    assert len(hub.requests) == seen
