"""Sub-commands contributed by capability packages, discovered by ``replens.cli``.

Each module in this package defines ``add_parser(sub)``: it adds one
sub-parser to ``sub`` (an ``argparse`` sub-parsers action) and sets
``handler=<function(args) -> int>`` with ``set_defaults``. Use the helpers
below so every command has ``--seed``, ``--out`` and ``--quiet`` and writes its
run folder the same way: :func:`open_run_from_args` applies the run-folder
contract of :func:`replens.runs.open_run` (lock, fingerprint, ``--overwrite``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from replens.runs import RunDir, default_run_dir, open_run


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--batch-size``, ``--steps``, ...)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (``--workers``, ``--saliency``, ...)."""
    return _int_at_least(text, 0, "a non-negative integer")


def _int_at_least(text: str, low: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def add_common_options(
    p: argparse.ArgumentParser, out_help: str = "run folder (default: runs/<command>-<time>)"
) -> None:
    """``--seed``, ``--out``, ``--overwrite`` and ``--quiet``."""
    # default None so that a command whose config holds a seed (--config, --set seed=S) can tell an
    # explicit --seed from the default; replens.cli.main sets it to 0 when neither was given
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, else 0)")
    p.add_argument("--out", type=Path, default=None, help=out_help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds when it was made from other inputs (default: refuse)")
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


def open_run_from_args(
    args: argparse.Namespace, command: str, config: dict[str, object] | None = None, *, folder_name: str | None = None
) -> RunDir:
    """Claim the run folder of ``--out`` (default ``runs/<folder_name>-<time>``) under the run-folder contract.

    Args:
        args: Parsed arguments with ``out`` and ``overwrite``.
        command: The command's name (``"ddm eval"``), recorded in ``config.yaml``.
        config: The resolved config (default: :func:`args_as_config`).
        folder_name: Stem of the default folder (default: ``command`` with dashes).

    Raises:
        replens.runs.RunFolderError: The folder holds another run, is locked or unusable.
    """
    out = args.out if args.out is not None else default_run_dir(folder_name or command.replace(" ", "-"))
    given = config if config is not None else args_as_config(args)
    resolved = {"command": command, **{k: v for k, v in given.items() if k != "command"}}
    return open_run(out, resolved, overwrite=bool(getattr(args, "overwrite", False)), command=command)


def args_as_config(args: argparse.Namespace) -> dict[str, object]:
    """The parsed arguments as a plain dict for ``config.yaml`` (handler dropped)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "handler"}


def parse_command_options(
    add_parser: Callable[[Any], None], command: str, options: Sequence[str], given: dict[str, Any]
) -> argparse.Namespace:
    """One command's options parsed onto ``given`` values (argparse names), as on the command line.

    For apps whose users pass extra options of a command (the audit's ``qscore_args``): ``given``
    sets values first, then ``options`` override them; required options need not be given.

    Args:
        add_parser: The command module's ``add_parser``.
        command: The (first) sub-command name it adds, e.g. ``"qscore"``.
        options: Option strings, e.g. ``["--band", "40,95"]``.
        given: Values by argparse name.

    Raises:
        KeyError: ``given`` names no option of the command.
    """
    parser = argparse.ArgumentParser(prog=f"replens {command}", add_help=False)
    add_parser(_OneCommand(command, parser))
    for action in parser._actions:  # the given values stand in for required options
        action.required = False
    namespace = parser.parse_args([])
    for key, value in given.items():
        if not hasattr(namespace, key):
            raise KeyError(f"replens {command} has no option {key!r}")
        setattr(namespace, key, value)
    parsed = parser.parse_args(list(options), namespace=namespace)
    if getattr(parsed, "seed", 0) is None:  # as replens.cli.main does for a --seed not given
        parsed.seed = 0
    return parsed


class _OneCommand:
    """Stands in for the sub-parsers action: ``add_parser`` fills one stand-alone parser for ``command``."""

    def __init__(self, command: str, parser: argparse.ArgumentParser) -> None:
        self.command, self.parser = command, parser

    def add_parser(self, name: str, **_: Any) -> argparse.ArgumentParser:
        return self.parser if name == self.command else argparse.ArgumentParser(add_help=False)
