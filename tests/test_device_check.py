"""benchmarks/device_check.py --quick on the CPU: every section present, every smoke test passes, ratios are numbers."""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "device_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_quick_device_check_on_cpu(tmp_path):
    threads = torch.get_num_threads()
    try:
        code = _load().main(["--quick", "--device", "cpu", "--out", str(tmp_path / "check")])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "check.json").read_text())
    table = (tmp_path / "check.md").read_text()
    assert code == 0
    assert {"environment", "smoke", "benchmarks", "quick", "seconds"} <= set(report)
    env = report["environment"]
    assert env["device_type"] == "cpu" and env["torch"] == torch.__version__ and env["git_commit"]
    from replens.ssl import list_methods

    names = {s["name"] for s in report["smoke"]}
    expected = {f"ssl/{m}" for m in list_methods()} | {f"ssl-compile/{m}" for m in list_methods()}
    expected |= {"plugin/ddm", "plugin/fda", "qscore/device-tensors", "falcon/device-tensors",
                 "tokens/forward-backward"}
    assert names == expected
    failed = [(s["name"], s["error"]) for s in report["smoke"] if s["ok"] is not True]
    assert not failed, failed
    bench = report["benchmarks"]
    assert set(bench) == {"ssl", "fda", "qscore", "caption_search"}
    assert all(b["ok"] for b in bench.values()), {k: b.get("error") for k, b in bench.items()}
    ratios = [bench["ssl"]["replens_vs_bound"], bench["ssl"]["replens_vs_lightly"], bench["fda"]["ratio"],
              bench["fda"]["ratio_vs_lightly"], bench["fda"]["cpu_ratio_vs_fft"], bench["qscore"]["ratio"],
              bench["qscore"]["device_ratio"], bench["caption_search"]["ratio"]]
    assert all(isinstance(r, float) and math.isfinite(r) and r > 0 for r in ratios), ratios
    assert bench["caption_search"]["exact"]
    for heading in ("## Smoke tests", "## Benchmarks", "| ssl/simclr | pass |", "vs compute bound"):
        assert heading in table


def test_qscore_benchmark_json_records_its_rates_and_machine(tmp_path):
    """qscore_scale.py --json: each ratio is its two rates' quotient; the cold pass ran (where the script itself
    checks that a one-shot Q-Score run gives the streamed scores)."""
    threads = torch.get_num_threads()
    out = tmp_path / "q.json"
    sys.path.insert(0, str(SCRIPT.parent))  # the scripts import their sibling bench_env, as when run directly
    try:
        import qscore_scale

        qscore_scale.main(["--n", "3000", "--dim", "64", "--block-rows", "256", "--chunk-rows", "1024",
                           "--path", str(tmp_path / "m.npy"), "--threads", "1", "--json", str(out)])
    finally:
        sys.path.remove(str(SCRIPT.parent))
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    warm, cold = record["warm"], record["cold"]
    assert record["rows"] == 3000 and record["dim"] == 64 and record["block_rows"] == 256
    assert math.isclose(warm["ratio"], warm["qscore_rows_per_s"] / warm["plain_rows_per_s"], rel_tol=1e-9)
    assert cold is not None or not hasattr(os, "posix_fadvise")
    assert cold is None or math.isclose(cold["ratio"], cold["qscore_rows_per_s"] / cold["plain_rows_per_s"],
                                        rel_tol=1e-9)
    env = record["environment"]
    assert env["git_commit"] and env["cpu_count"] >= 1 and env["date"].count("-") == 2
    assert 0 < record["discriminative_features"] <= 64
    assert not (tmp_path / "m.npy").exists()  # the matrix is removed unless --keep
