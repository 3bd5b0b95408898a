"""``replens reproduce``: every table and figure of the paper from one command, beside the paper's numbers.

* ``replens reproduce list``: every table and figure with a recipe, with what it needs.
* ``replens reproduce run ID [--data SPEC] [--budget small|paper]`` (or simply
  ``replens reproduce ID``): run one recipe into ``runs/reproduce/<id>-<time>``
  (``--out``), writing ``result.json`` (our rows, the paper's numbers, the protocol)
  and ``table.md``.
* ``replens reproduce report [--run-root runs/reproduce] [--out REPRODUCTION.md] [--run-missing]``:
  one Markdown file with every recipe, the paper's numbers and ours.

``--data`` takes any data spec, or the shorthands ``cifar10`` and ``pacs`` for
the validation sets in ``../shared/data`` (``cifar10:ROOT``, ``pacs:ROOT`` name
another folder). ``--budget small`` runs on CPU in minutes; ``--budget paper``
is the paper's protocol and wants a GPU cluster.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replens.apps.commands import add_common_options
from replens.apps.reproduce import RecipeContext, get_recipe, list_recipes, run_recipe
from replens.apps.reproduce.paper import load_paper_numbers
from replens.apps.reproduce.registry import resolve_data
from replens.apps.reproduce.report import recipe_markdown, write_report
from replens.apps.reproduce.verdict import NO_RESULT
from replens.config import ConfigError
from replens.runs import default_run_dir, open_run

ACTIONS = ("list", "run", "report")


def cmd_reproduce(args: argparse.Namespace) -> int:
    action, target = args.action, args.target
    if action not in ACTIONS:  # ``replens reproduce ID``
        if target is not None:
            raise ConfigError(f"unexpected argument {target!r}; write `replens reproduce run {action}`")
        action, target = "run", action
    if action == "list":
        return _list()
    if action == "report":
        return _report(args)
    if target is None:
        raise ConfigError("name the recipe: `replens reproduce run ID` (see `replens reproduce list`)")
    return _run(args, target)


def _list() -> int:
    recipes = list_recipes()
    width = max((len(r.id) for r in recipes), default=0)
    for r in recipes:
        print(f"{r.id:<{width}}  {r.title} (section {r.section})")
        print(f"{'':<{width}}  needs: {r.needs}")
    print(f"{len(recipes)} recipes; run one with `replens reproduce ID [--data SPEC] [--budget small|paper]`")
    return 0


def _options(items: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set wants KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def _run(args: argparse.Namespace, target: str) -> int:
    rec = get_recipe(target)
    load_paper_numbers(rec.id)  # fail before running when the paper's numbers are missing
    resolve_data(args.data)  # a --data spec that names no folder fails before a run folder exists
    out = args.out if args.out is not None else default_run_dir(rec.id, args.run_root)
    # the run-folder contract: a rerun with the same recipe, data, budget, seed and options may reuse the
    # folder; a folder of other inputs is refused (named) unless --overwrite clears it first
    run = open_run(out, {"command": "reproduce", "recipe": rec.id, "data": args.data, "budget": args.budget,
                         "seed": args.seed, "device": args.device, "options": _options(args.options)},
                   overwrite=args.overwrite, command="reproduce")
    ctx = RecipeContext(budget=args.budget, data=args.data, out=run.path, seed=args.seed, device=args.device,
                        progress=not args.quiet, options=_options(args.options))
    result = run_recipe(rec.id, ctx)
    run.write_metrics({"id": rec.id, "rows": result["rows"], "seconds": result["seconds"]})
    print(recipe_markdown(result), end="")
    print(f"run folder: {run.path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else Path("REPRODUCTION.md")
    info = write_report(args.run_root, out, run_missing=args.run_missing, seed=args.seed, device=args.device,
                        progress=not args.quiet)
    empty = info["verdicts"].get(NO_RESULT, 0)
    print(f"{out}: {len(info['with_result'])} of {info['recipes']} recipes run, {empty} of them with no result"
          + (f", ran {len(info['ran'])}" if args.run_missing else "")
          + (f", {len(info['failed'])} failed: {', '.join(info['failed'])}" if info["failed"] else ""))
    return 1 if info["failed"] else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``replens reproduce list | run ID | report`` (and ``replens reproduce ID``)."""
    p = sub.add_parser("reproduce", help="reproduce the paper's tables and figures beside its numbers",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", metavar="list|run|report|ID", help="what to do, or a recipe id to run")
    p.add_argument("target", nargs="?", default=None, metavar="ID", help="recipe id (with run)")
    p.add_argument("--data", default=None,
                   help="data spec, or cifar10 / pacs for ../shared/data (default: the embedded world)")
    p.add_argument("--budget", choices=("small", "paper"), default="small",
                   help="small: CPU, minutes (default); paper: the paper's protocol (GPU cluster)")
    p.add_argument("--device", default="cpu", help="device of feature extraction and probes")
    p.add_argument("--run-root", type=Path, default=Path("runs/reproduce"),
                   help="folder of recipe runs (default runs/reproduce)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe option, e.g. --set methods=simclr,byol (repeatable; see each recipe's needs)")
    p.add_argument("--run-missing", action="store_true", help="report: run recipes that have no result first")
    add_common_options(p, "run folder (run: default runs/reproduce/<id>-<time>; report: the Markdown file, "
                          "default REPRODUCTION.md)")
    p.set_defaults(handler=cmd_reproduce)
