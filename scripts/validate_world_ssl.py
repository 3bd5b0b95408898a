"""Validation: is the embedded world learnable at the CPU budget, and does the default audit meet its targets?

Usage:
    python scripts/validate_world_ssl.py [--variants 1.2.0,2.0] [--methods supervised,simclr]
        [--encoders small_cnn] [--epochs 20] [--n 6000] [--size 32] [--jobs 2] [--out runs/validate-world]
        [--seeds 0,1,2] [--set KEY=VALUE ...] [--audit]

Two parts, one JSON (``OUT/results.json``) and one printed table each:

1. **World variant x encoder x budget x method** (issue "a world learnable in minutes"): every cell runs
   exactly what a user runs, ``replens train --data world:DIR`` (the world preset) with ``--method``
   ``simclr``, ``vicreg`` (the audit's) or ``supervised`` (the ceiling), and reads the linear-probe top-1 of the trained encoder
   and of a randomly initialised encoder of the same architecture (the control), overall and per
   domain, from the run's ``metrics.json``. A variant is a set of generator constants
   (:data:`VARIANTS`): ``2.0`` is the current generator, ``1.2.0`` restores the previous one's object
   sizes, object counts and domain renderings (with 2.0's shape set: the arrow stays), so the table
   shows what the change bought. ``--seeds`` repeats every cell with other training seeds (data order,
   initialisation, views) and the table shows mean +- std over them, with the random-init control of each
   seed. Cells run ``--jobs`` at a time, one torch thread each, and a rerun skips the cells already in the
   JSON.
2. ``--audit``: runs the default ``replens audit`` (a fresh run folder), times it end to end and checks
   the audit targets (SSL linear top-1 >= 60 % with random init <= 25 %; Q-Score AUROC >= 65 and AUPRC
   >= base rate + 10; FALCON >= 5 interpretable groups, ground-truth precision@1 >= 80 %; tiny-CLIP
   zero-shot shape accuracy >= 90 % on object crops and >= 60 % on whole images; failures the planted
   cue explains name it in >= 70 % of cases; at most 10 minutes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from replens.runs import atomic_write_json

#: Generator constants of each world variant (module, name) -> value; "2.0" is the generator as shipped.
VARIANTS: dict[str, dict[str, Any]] = {
    "2.0": {},
    "1.2.0": {
        "SIZE_RADIUS": [0.15, 0.20, 0.26],
        "OBJECT_COUNT_PROBS": [1 / 3, 1 / 3, 1 / 3],
        "MAIN_SIZES": [0, 1, 2],
        "PHOTO_SHADOW": 1.0,
        "PAINT_CONTOUR": 1.0,
    },
}


def apply_variant(knobs: dict[str, Any]) -> None:
    """Set the generator constants of a variant in every module that reads them (this process only)."""
    import replens.world.render as render
    import replens.world.scene as scene
    import replens.world.vocab as vocab

    for name, value in knobs.items():
        value = tuple(value) if isinstance(value, list) else value
        found = False
        for module in (vocab, scene, render):
            if hasattr(module, name):
                setattr(module, name, value)
                found = True
        if not found:
            raise KeyError(f"unknown generator constant {name!r}")


def _world_dir(args: argparse.Namespace, variant: str) -> Path:
    return args.out / "worlds" / f"{variant}-n{args.n}-s{args.size}"


def make_world(variant: str, n: int, size: int, folder: str) -> Path:
    """Generate (or find) a variant's world in this process (a child: the variant's constants stay here)."""
    apply_variant(VARIANTS[variant])
    from replens.world import WorldConfig, generate_world

    return generate_world(WorldConfig(n=n, size=size), folder, progress=False)


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One training run in this process (called in a child: ``--cell JSON``)."""
    import torch

    torch.set_num_threads(1)
    from replens.cli import main as replens_main

    world = make_world(cell["variant"], cell["n"], cell["size"], cell["world"])
    out = Path(cell["out"])
    argv = ["train", "--data", f"world:{world}", "--out", str(out), "--quiet", "--method", cell["method"],
            "--backbone", cell["encoder"], "--epochs", str(cell["epochs"]), "--seed", str(cell.get("seed", 0))]
    if (out / "checkpoint.pt").exists():
        argv.append("--resume")
    for item in cell["overrides"]:
        argv += ["--set", item]
    start = time.perf_counter()
    code = replens_main(argv)
    if code != 0:
        raise SystemExit(f"replens {' '.join(argv)} failed with exit code {code}")
    seconds = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    result = {**cell, "seconds": round(seconds, 1)}
    for encoder in ("trained", "random_init"):
        linear = metrics[encoder]["linear"]
        result[encoder] = {"linear": linear["top1"], "knn": metrics[encoder]["knn"]["top1"],
                           "per_domain": linear["per_domain"]}
    return result


def _child(cell: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--cell", json.dumps(cell)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"cell {cell['key']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mean_std(values: list[float]) -> str:
    """``mean`` for one value, ``mean+-std`` (sample std) for several."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.1f}+-{std:.1f}"


def table(results: dict[str, Any]) -> str:
    """The world table: one row per (variant, encoder, budget, method) with mean +- std over its seeds, and one
    random-init row per (variant, encoder) over the same seeds."""
    cells = list(results.get("cells", {}).values())
    domains = sorted({d for c in cells for d in c["trained"]["per_domain"]})
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["variant"], c["encoder"], c["epochs"], c["method"]), []).append(c)
    lines = [f"{'variant':<8} {'encoder':<10} {'epochs':>6} {'method':<11} {'seeds':>5} {'linear':>10} {'kNN':>10}  "
             + " ".join(f"{d:>10}" for d in domains) + "  minutes"]
    controls: dict[tuple[str, str], dict[Any, dict[str, Any]]] = {}

    def row(label: tuple[str, str, str, str], runs: list[dict[str, Any]], minutes: str) -> str:
        head = f"{label[0]:<8} {label[1]:<10} {label[2]:>6} {label[3]:<11} {len(runs):>5} "
        return (head + f"{_mean_std([r['linear'] for r in runs]):>10} {_mean_std([r['knn'] for r in runs]):>10}  "
                + " ".join(f"{_mean_std([r['per_domain'].get(d, float('nan')) for r in runs]):>10}" for d in domains)
                + minutes)

    for key in sorted(groups):
        runs = groups[key]
        minutes = sum(c["seconds"] for c in runs) / len(runs) / 60
        lines.append(row((key[0], key[1], str(key[2]), key[3]), [c["trained"] for c in runs], f"  {minutes:7.1f}"))
        for c in runs:
            controls.setdefault((c["variant"], c["encoder"]), {})[c.get("seed", 0)] = c["random_init"]
    for (variant, encoder), by_seed in sorted(controls.items()):
        lines.append(row((variant, encoder, "-", "random init"), list(by_seed.values()), ""))
    return "\n".join(lines)


def audit_targets(summary: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """The audit's targets as rows: what was measured, its control, the target and whether it holds."""
    o, q, f = summary["overview"], summary.get("qscore", {}), summary.get("falcon", {})
    vl = f.get("vl_accuracy") or {}
    cue = (summary.get("failure_causes") or {})
    rows = [
        ("SSL linear top-1 %", o.get("linear_top1"), f"random init {o.get('random_linear_top1'):.1f}",
         (o.get("linear_top1") or 0) >= 60 and (o.get("random_linear_top1") or 100) <= 25, ">= 60, random <= 25"),
        ("Q-Score AUROC", q.get("auroc"), "chance 50", (q.get("auroc") or 0) >= 65, ">= 65"),
        ("Q-Score AUPRC", q.get("auprc"), f"base rate {q.get('correct_rate', float('nan')):.1f}",
         (q.get("auprc") or 0) >= (q.get("correct_rate") or 100) + 10, ">= base rate + 10"),
        ("FALCON interpretable groups", f.get("interpretable_groups"), "", (f.get("interpretable_groups") or 0) >= 5,
         ">= 5"),
        ("FALCON ground-truth precision@1 %", f.get("ground_truth_precision_at_1"), "",
         (f.get("ground_truth_precision_at_1") or 0) >= 80, ">= 80"),
        ("tiny CLIP shape, object crops %", vl.get("shape_crops"), "chance 10", (vl.get("shape_crops") or 0) >= 90,
         ">= 90"),
        ("tiny CLIP shape, whole images %", vl.get("shape_images"), "chance 10", (vl.get("shape_images") or 0) >= 60,
         ">= 60"),
        ("failures naming the planted cue %", cue.get("named_share"), f"{cue.get('cue_failures')} cue failures",
         (cue.get("named_share") or 0) >= 70, ">= 70"),
        ("wall time, minutes", seconds / 60, "", seconds <= 600, "<= 10"),
    ]
    return [{"metric": m, "value": v, "control": c, "target": t, "holds": bool(h)} for m, v, c, h, t in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="2.0", help=f"comma-separated, from {sorted(VARIANTS)}")
    ap.add_argument("--methods", default="supervised,simclr,vicreg", help="comma-separated training methods")
    ap.add_argument("--encoders", default="small_cnn", help="comma-separated backbones")
    ap.add_argument("--epochs", default="20", help="comma-separated budgets in epochs")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds (mean +- std over them)")
    ap.add_argument("--n", type=int, default=6000, help="scenes in the world (train + test)")
    ap.add_argument("--size", type=int, default=32, help="image side of the world")
    ap.add_argument("--jobs", type=int, default=2, help="cells trained at once (one thread each)")
    ap.add_argument("--out", type=Path, default=Path("runs/validate-world"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training overrides for every cell")
    ap.add_argument("--audit", action="store_true", help="also run the default audit and check its targets")
    ap.add_argument("--no-table", action="store_true", help="skip the world table (with --audit)")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    ap.add_argument("--make-world", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    if args.make_world:
        make_world(args.make_world, args.n, args.size, str(_world_dir(args, args.make_world)))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("cells", {})
    if not args.no_table:
        cells = []
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                raise SystemExit(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
            for encoder in args.encoders.split(","):
                for epochs in map(int, args.epochs.split(",")):
                    for method in args.methods.split(","):
                        for seed in map(int, args.seeds.split(",")):
                            # seed 0 keeps the key of runs made before --seeds existed
                            key = f"{variant}/{encoder}/{epochs}/{method}/n{args.n}/s{args.size}" + (
                                f"/seed{seed}" if seed else "")
                            if key in results["cells"]:
                                continue
                            cells.append({"key": key, "variant": variant, "encoder": encoder, "epochs": epochs,
                                          "method": method, "seed": seed, "n": args.n, "size": args.size,
                                          "world": str(_world_dir(args, variant)),
                                          "out": str(args.out / key.replace("/", "-")), "overrides": args.overrides})
        # one world per variant first (cells of a variant share it), each in a child that holds its constants
        for variant in {c["variant"] for c in cells}:
            subprocess.run([sys.executable, __file__, "--make-world", variant, "--n", str(args.n), "--size",
                            str(args.size), "--out", str(args.out)], check=True)
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for result in pool.map(_child, cells):
                results["cells"][result["key"]] = result
                atomic_write_json(results_path, results)
                print(f"done {result['key']}: linear {result['trained']['linear']:.1f} "
                      f"(random init {result['random_init']['linear']:.1f}) in {result['seconds'] / 60:.1f} min",
                      flush=True)
        print(table(results))
    if args.audit:
        out = args.out / f"audit-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        replens = Path(sys.executable).with_name("replens")
        subprocess.run([str(replens), "audit", "--out", str(out), "--quiet"], check=True)
        seconds = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
        rows = audit_targets(summary, seconds)
        results["audit"] = {"folder": str(out), "seconds": seconds, "headline": summary["overview"]["headline"],
                            "targets": rows}
        atomic_write_json(results_path, results)
        print(summary["overview"]["headline"])
        for r in rows:
            value = r["value"]
            text = "n/a" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)
            print(f"{'holds ' if r['holds'] else 'MISSES'} {r['metric']:<36} {text:>7}  target {r['target']:<20} "
                  f"{r['control']}")
    print(f"results: {results_path}")


if __name__ == "__main__":
    main()
