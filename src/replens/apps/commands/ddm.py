"""``replens ddm eval``: chapter 2's evaluation of encoders trained with and without DDM.

For each ``--weights [LABEL=]PATH`` it extracts the full representations,
fits linear probes per training domain and per unseen domain (Tables 2.1-2.4),
measures how much domain and class information the prefix h^d and the
invariant part h^p carry, and draws Figure 2.3 (class-averaged top features
per domain, ``LABEL/heatmap.png``) and Figure 2.4 (t-SNE of h^d and h^p,
``LABEL/tsne.png``). ``table.md`` holds the table; ``--compare NAME=BASE,DDM``
rows give the paper's ``baseline / with DDM`` cells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replens.apps.commands import add_common_options, open_run_from_args, positive_int
from replens.data import open_source
from replens.ddm.diagnostics import evaluate_encoder, format_domain_table
from replens.ddm.plugin import default_prefix_dim
from replens.models import create_backbone
from replens.runs import atomic_write_text, safe_name


def _weights(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, item in enumerate(items):
        label, eq, path = item.partition("=")
        if not eq:
            label, path = (Path(item).parent.name or f"model{k}"), item
        label = safe_name(label, fallback=f"model{k}")  # a sub-folder name: never '..' or a path
        if label in out:
            raise ValueError(f"--weights label {label!r} is given twice; write LABEL=PATH")
        out[label] = path
    return out


def _compare(items: list[str], labels: dict[str, str]) -> list[tuple[str, str, str]]:
    rows = []
    for item in items:
        name, eq, pair = item.partition("=")
        base, comma, ddm = pair.partition(",")
        if not eq or not comma:
            raise ValueError(f"--compare wants NAME=BASELINE_LABEL,DDM_LABEL, got {item!r}")
        for label in (base, ddm):
            if label not in labels:
                raise ValueError(f"--compare {item!r}: no --weights labelled {label!r} (labels: {list(labels)})")
        rows.append((name, base, ddm))
    return rows


def _model_name(path: str, given: str | None) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    if given:
        return given
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            name = (handle.metadata() or {}).get("backbone")
        if name:
            return name
    raise ValueError(f"give --model: {path} does not say which backbone it holds")


def cmd_ddm_eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    torch.manual_seed(args.seed)
    weights = _weights(args.weights)
    compare = _compare(args.compare, weights)
    open_ = lambda spec: open_source(spec, image_size=args.image_size) if spec else None  # noqa: E731
    train_source = open_(args.train_data)
    test_source, unseen, unseen_test = open_(args.test_data), open_(args.unseen_data), open_(args.unseen_test_data)
    backbones = {label: create_backbone(_model_name(path, args.model), weights=path).eval()
                 for label, path in weights.items()}
    run = open_run_from_args(args, "ddm eval")
    results: dict[str, dict] = {}
    for label, path in weights.items():
        backbone = backbones[label]
        k = args.prefix_dim or default_prefix_dim(backbone.feature_dim)
        results[label] = evaluate_encoder(
            backbone, train_source, run / label, prefix_dim=k, test_source=test_source, unseen_source=unseen,
            unseen_test_source=unseen_test, protocol=args.protocol, test_fraction=args.test_fraction,
            weight_decay=args.weight_decay, probe_iters=args.probe_iters, seed=args.seed, device=args.device, batch_size=args.batch_size,
            plots=not args.no_plots, max_plot_points=args.max_plot_points, title=label, progress=not args.quiet)
        results[label].update(weights=path, prefix_dim=k)
    first = next(iter(results.values()))
    table = format_domain_table({label: r["per_domain"] for label, r in results.items()}, first["train_domains"],
                                first["unseen_domains"], compare=compare,
                                title=f"Top-1 linear probe ({args.protocol} protocol)"
                                + (" (Baseline / with DDM)" if compare else ""))
    parts = ["", "| Model | domain from h^d | domain from h^p | domain from h | class from h^d | class from h^p | "
             "class from h | domain variance h^d | domain variance h^p |", "|---|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        p = r["parts"]
        parts.append(f"| {label} | " + " | ".join(f"{p[part][key]:.2f}" for key in ("domain", "class")
                                                   for part in ("prefix", "invariant", "full"))
                     + f" | {p['prefix']['domain_variance']:.3f} | {p['invariant']['domain_variance']:.3f} |")
    text = table + "\n".join(parts) + "\n"
    atomic_write_text(run / "table.md", text)
    run.write_metrics({"models": results, "table": table,
                       "average": {label: r["average"] for label, r in results.items()},
                       "protocol": args.protocol, "finite": bool(np.isfinite([r["average"] for r in results.values()]).all())})
    print(text, end="")
    print(f"run folder: {run.path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``replens ddm eval``."""
    p = sub.add_parser("ddm", help="Domain-Disentanglement Module (paper chapter 2): evaluation",
                       description="Evaluate encoders trained with replens train [--ddm | --ddm-domains M].")
    ddm_sub = p.add_subparsers(dest="ddm_command", required=True, metavar="SUBCOMMAND")
    e = ddm_sub.add_parser("eval", help="per-domain linear probes (Tables 2.1-2.4), Figures 2.3 and 2.4",
                           description=__doc__)
    e.add_argument("--weights", action="append", required=True, metavar="[LABEL=]PATH",
                   help="encoder weights (backbone.safetensors of a run); repeatable")
    e.add_argument("--model", default=None, help="backbone name (default: read from the safetensors metadata)")
    e.add_argument("--train-data", required=True, help="data spec of the training domains")
    e.add_argument("--test-data", default=None,
                   help="probe-test data of the training domains (default: a stratified split of --train-data)")
    e.add_argument("--unseen-data", default=None, help="data spec of unseen domains")
    e.add_argument("--unseen-test-data", default=None, help="probe-test data of the unseen domains (default: a split)")
    e.add_argument("--compare", action="append", default=[], metavar="NAME=BASE,DDM",
                   help="table row NAME with 'BASE / DDM' cells from two --weights labels; repeatable")
    e.add_argument("--prefix-dim", type=positive_int, default=None, help="domain prefix size k (default: r / 16)")
    e.add_argument("--protocol", choices=("per_domain", "joint"), default="per_domain",
                   help="a probe per domain (default) or one probe on all training domains")
    e.add_argument("--test-fraction", type=float, default=0.3, help="probe-test share of a split (default 0.3)")
    e.add_argument("--weight-decay", type=float, default=1e-4, help="linear probe L2 penalty")
    e.add_argument("--probe-iters", type=positive_int, default=200, help="L-BFGS iterations per linear probe (default 200)")
    e.add_argument("--image-size", type=positive_int, default=None, help="resize + center-crop images to this side")
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--no-plots", action="store_true", help="skip Figures 2.3 and 2.4")
    e.add_argument("--max-plot-points", type=positive_int, default=2000, help="t-SNE sample cap")
    add_common_options(e)
    e.set_defaults(handler=cmd_ddm_eval)
