"""Sub-commands contributed by capability packages, discovered by ``replens.cli``.

Each module in this package defines ``add_parser(sub)``: it adds one
sub-parser to ``sub`` (an ``argparse`` sub-parsers action) and sets
``handler=<function(args) -> int>`` with ``set_defaults``. Use the helpers
below so every command has ``--seed``, ``--out`` and ``--quiet`` and writes its
run folder the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replens.runs import RunDir, default_run_dir


def add_common_options(
    p: argparse.ArgumentParser, out_help: str = "run folder (default: runs/<command>-<time>)"
) -> None:
    """``--seed``, ``--out`` and ``--quiet``."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", type=Path, default=None, help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """``--config FILE.yaml`` and repeatable ``--set key=value``."""
    p.add_argument("--config", type=Path, default=None, help="YAML file with config values")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def run_dir_from_args(args: argparse.Namespace, command: str) -> RunDir:
    """The run folder of ``--out``, or ``runs/<command>-<time>``."""
    return RunDir(args.out if args.out is not None else default_run_dir(command))


def args_as_config(args: argparse.Namespace) -> dict[str, object]:
    """The parsed arguments as a plain dict for ``config.yaml`` (handler dropped)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "handler"}
