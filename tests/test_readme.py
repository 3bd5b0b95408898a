"""The README's Python API section runs as written: its ``python`` blocks, in order, in one namespace."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_one_block_per_capability() -> None:
    code = "\n".join(_api_blocks())
    for call in ("replens.train(", "score(", "explain(", "replens.audit("):
        assert call in code, call


def test_readme_python_api_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in _api_blocks():
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102  (the README's own code)
    trained, report, found, audit = (namespace[k] for k in ("trained", "report", "found", "audit_report"))
    assert trained.finished and trained.steps == 192 // 32  # 192 train scenes, drop_last batches of 32
    assert (tmp_path / "runs/api-train/backbone.safetensors").is_file()
    assert 0 <= trained.trained["linear"]["top1"] <= 100
    # the saved Q-Score report reloads to the same table, and its test split is what the probe judged
    scores, correct, names = report.judged()
    assert len(scores) == 48 and set(names) == set(report.scores_of("test"))
    assert (tmp_path / "runs/api-qscore/scores.csv").is_file() and (tmp_path / "runs/api-qscore/roc.png").is_file()
    loaded = type(found).load(tmp_path / "runs/api-explain")
    assert json.loads(json.dumps(found.groups)) == loaded.groups
    assert found.failure_records and json.loads(json.dumps(found.failure_records)) == loaded.failure_records
    assert loaded.metrics["gamma"] == 0.5  # the tiny CLIP's threshold, chosen by the library as by the CLI
    assert audit.summary["overview"]["test_samples"] == 48 and audit.headline.endswith(".")
    assert type(audit).load(audit.path).summary["overview"] == audit.summary["overview"]
    assert "discriminative features, AUROC" in capsys.readouterr().out
