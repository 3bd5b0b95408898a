"""``REPRODUCTION.md``: every recipe with the paper's numbers beside ours.

:func:`write_report` reads the latest ``result.json`` of each recipe under a
run root (``runs/reproduce`` by default), one per data set (the embedded
world, CIFAR-10, PACS, other specs), and renders one Markdown file: per recipe
the paper's table (or the paper's description of a figure), then our rows
(mean +- std over seeds), the paper's claim with our verdict, what stands in
for the paper's data, the protocol and the wall time. The top table has one
line per recipe (the paper's claim, ours, the verdict, the data) and a summary
line counts holds / reversed / not significant / no result. Recipes without a
result are listed as *not run*, unless ``run_missing`` runs them at the small
budget first.

Result files written before the dissertation's numbers moved to ``paper``
(they were under ``seed``) are read as well.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from replens.apps.reproduce.disclosures import NO_RECIPE, disclosure
from replens.apps.reproduce.paper import load_paper_numbers
from replens.apps.reproduce.registry import RecipeContext, list_recipes, no_result_reason, run_recipe
from replens.apps.reproduce.verdict import NO_RESULT, VERDICTS, format_mean_std
from replens.runs import atomic_write_bytes, atomic_write_text, default_run_dir

#: Verdict of a result whose recipe states no directional claim (a figure that shows what the paper shows).
NO_CLAIM = "no claim tested"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None,
                   stds: list[dict[str, Any]] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (columns: given, else the union of keys in first-seen order).

    ``stds`` (one dict per row, as ``result.json``'s ``rows_std``) turns averaged cells into ``mean ± std``.
    """
    if not rows:
        return "(no rows)\n"
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, row in enumerate(rows):
        std = stds[i] if stds and i < len(stds) else {}
        cells = [format_mean_std(row[c], std[c]) if c in std and c in row else _cell(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paper_numbers(result: dict[str, Any]) -> dict[str, Any]:
    """The dissertation's entry of a result (``paper``; ``seed`` in result files of earlier versions)."""
    paper = result.get("paper")
    if isinstance(paper, dict):
        return paper
    old = result.get("seed")
    return old if isinstance(old, dict) else {}


def status_of(result: dict[str, Any]) -> tuple[str, str]:
    """``(status, reason)``: ``("result", "")`` or ``("no result", why)``.

    Results of earlier versions carry no status: they count as no result when
    they have no rows or every number is NaN.
    """
    if result.get("status"):
        return str(result["status"]), str(result.get("no_result") or "")
    why = no_result_reason(result.get("rows") or [])
    return ("no result", why) if why else ("result", "")


def verdict_of(result: dict[str, Any]) -> str:
    """The verdict of a result: ``no result`` when it has none, the claim's verdict, else ``no claim tested``."""
    status, _ = status_of(result)
    if status == "no result":
        return NO_RESULT
    verdict = result.get("verdict")
    return str(verdict["verdict"]) if verdict else NO_CLAIM


def claim_text(rec: Any) -> str:
    """A recipe's claim for the top table: the claim's text, ``none: <why>``, or ``-``."""
    if rec.claim is not None:
        return str(rec.claim.text)
    return f"none: {rec.no_claim}" if getattr(rec, "no_claim", "") else "-"


def ours_of(result: dict[str, Any]) -> str:
    """The claim's numbers in one cell: ``control -> treatment (diff +d ± s, n runs)``, or ``-``."""
    v = result.get("verdict")
    if not v or v.get("n", 0) == 0:
        return "-"
    std = v.get("difference_std")
    spread = "" if std is None or (isinstance(std, float) and math.isnan(std)) else f" ± {std:.2f}"
    return (f"{v['control_mean']:.2f} → {v['treatment_mean']:.2f} "
            f"(diff {v['difference_mean']:+.2f}{spread}, n={v['n']})")


def paper_markdown(paper: dict[str, Any]) -> str:
    """The paper's entry: its table, or its description of a figure, and its notes."""
    parts = []
    if "rows" in paper:
        parts.append(markdown_table(paper["rows"], list(paper.get("columns") or [])))
    if paper.get("description"):
        parts.append(str(paper["description"]).strip() + "\n")
    if paper.get("notes"):
        parts.append(f"*{str(paper['notes']).strip()}*\n")
    return "\n".join(parts)


def _short(value: Any) -> bool:
    """A protocol value short enough for the one-line summary (scalars, short flat lists and dicts)."""
    flat = (str, int, float, bool, type(None))
    if isinstance(value, flat):
        return len(str(value)) <= 200
    if isinstance(value, list | tuple):
        return len(value) <= 8 and all(isinstance(v, flat) for v in value)
    if isinstance(value, dict):
        return len(value) <= 6 and all(isinstance(v, flat) for v in value.values())
    return False


def _protocol_line(result: dict[str, Any]) -> str:
    proto = dict(result.get("protocol") or {})
    trainings = proto.pop("trainings", {}) or {}
    bits = [f"{k}: {_cell(v)}" for k, v in proto.items() if _short(v)]
    if any(not _short(v) for v in proto.values()):
        bits.append("per-run details in result.json")
    if trainings:
        configs = [t["config"] for t in trainings.values()]
        steps = sum(int(t.get("steps", 0)) for t in trainings.values())

        def distinct(key: str) -> str:
            return "/".join(dict.fromkeys(str(c.get(key)) for c in configs if c.get(key) is not None)) or "-"

        def views(config: dict[str, Any]) -> str:  # the view overrides, or the method's own views
            args = config.get("view_args") or {}
            return " ".join(f"{k}={v}" for k, v in sorted(args.items())) or "the method's own"

        limit = distinct("max_steps")
        if "method" in configs[0]:  # engine TrainConfigs
            detail = (f"method {distinct('method')}, encoder {distinct('backbone')}, batch {distinct('batch_size')}, "
                      f"{distinct('optimizer')} lr {distinct('lr')}, {distinct('epochs')} epochs"
                      + ("" if limit == "-" else f", at most {limit} steps")
                      + f"; views: {' / '.join(dict.fromkeys(views(c) for c in configs))}")
        else:  # other trainers (e.g. replens.tokens' TokenTrainConfig)
            detail = (f"encoder {distinct('encoder')}, preset {distinct('preset')}, batch {distinct('batch_size')}, "
                      f"lr {distinct('lr')}")
        bits.append(f"{len(trainings)} training run(s), {steps} steps in all ({detail})")
    bits.append(f"wall time {result.get('seconds', float('nan')):.0f} s")
    return "; ".join(bits)


def recipe_markdown(
    result: dict[str, Any], figure_base: Path | None = None, figure_copies: Path | None = None
) -> str:
    """One recipe's result as Markdown: ours (rows, figures, protocol, notes) beside the paper's numbers.

    Args:
        result: A ``result.json`` as written by ``run_recipe``.
        figure_base: Make figure links relative to this folder (default: the run folder itself).
        figure_copies: Copy each figure into ``figure_copies/<id>-<data kind>/`` and link the copy,
            so the Markdown keeps its images when the run folders are not shipped with it.
    """
    paper = paper_numbers(result)
    seeds = result.get("seeds") or []
    over = f", mean ± std over {len(seeds)} seeds" if len(seeds) > 1 and result.get("rows_std") else ""
    lines = [
        f"## {result['id']}: {result['title']} (paper section {result['section']})",
        "",
        f"**Paper** (section {paper.get('section', result['section'])}): {paper.get('title', '')}",
        "",
        paper_markdown(paper),
        f"**Ours** ({result.get('budget')} budget{over})",
        "",
        markdown_table(result.get("rows") or [], result.get("columns"), result.get("rows_std")),
    ]
    status, why = status_of(result)
    if status == "no result":
        lines += [f"**No result**: {why}.", ""]
    claim = result.get("claim")
    if claim:
        v = result.get("verdict") or {}
        lines += [f"**Claim** ({claim['test']}): {claim['text']}. **Verdict: {verdict_of(result)}** "
                  f"({v.get('reason', '')}).", ""]
    elif result.get("no_claim"):
        lines += [f"**Claim: none** ({result['no_claim']}).", ""]
    disclosed = disclosure(result["id"], data_kind((result.get("protocol") or {}).get("data")))
    if disclosed:
        lines += [f"Disclosed: {disclosed}", ""]
    run_dir = Path(result.get("_run_dir", "."))
    for fig in result.get("figures") or []:
        path = run_dir / fig if figure_base is not None else Path(fig)
        if figure_copies is not None and path.is_file():
            kind = data_kind((result.get("protocol") or {}).get("data"))
            copy = figure_copies / f"{result['id']}-{kind}" / str(fig).replace("/", "-")
            atomic_write_bytes(copy, path.read_bytes())
            path = copy
        rel = os.path.relpath(path, figure_base) if figure_base is not None else str(path)
        lines += [f"![{result['id']} {Path(fig).stem}]({rel})", ""]
    lines += [f"Protocol: {_protocol_line(result)}.", ""]
    if result.get("notes"):
        lines += [f"Notes: {result['notes']}", ""]
    return "\n".join(lines)


def data_kind(data: str | None) -> str:
    """``world``, ``cifar10``, ``pacs`` or ``other`` for a protocol's data label."""
    text = (data or "world").lower()
    if text.startswith("world"):
        return "world"
    if "cifar" in text:
        return "cifar10"
    if text.startswith("pacs") or "/pacs" in text:
        return "pacs"
    return "other"


def latest_results(run_root: str | Path, budget: str | None = "small") -> dict[str, dict[str, dict[str, Any]]]:
    """``{recipe id: {data kind: result}}``: the latest ``result.json`` per recipe and data set under ``run_root``.

    Args:
        run_root: Folder of recipe run folders (searched recursively).
        budget: Keep only results of this budget (None: any).

    Raises:
        ValueError: A ``result.json`` that is not valid JSON (named).
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(Path(run_root).rglob("result.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(result, dict) or "id" not in result:
            continue
        if budget is not None and result.get("budget") != budget:
            continue
        result["_run_dir"] = str(path.parent)
        result["paper"] = paper_numbers(result)
        kind = data_kind((result.get("protocol") or {}).get("data"))
        stamp = (result.get("finished_at") or "", path.stat().st_mtime)
        prev = out.setdefault(result["id"], {}).get(kind)
        if prev is None or stamp >= prev["_stamp"]:
            out[result["id"]][kind] = {**result, "_stamp": stamp}
    return out


#: Data kinds in the order the report shows them (the first one a recipe has is its headline).
KINDS = ["world", "cifar10", "pacs", "other"]


def write_report(
    run_root: str | Path = "runs/reproduce",
    out: str | Path = "REPRODUCTION.md",
    *,
    run_missing: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``out`` from the latest small-budget results under ``run_root``.

    Args:
        run_root: Folder of recipe run folders.
        out: The Markdown file to write (atomically).
        run_missing: Run recipes with no result first (small budget, the embedded world) into
            ``run_root/<id>-<time>``.
        seed: Seed of recipes run here.
        device: Device of recipes run here.
        progress: Progress bars.

    Returns:
        ``{"recipes": n, "with_result": [...], "not_run": [...], "ran": [...], "failed": {...}, "path": out}``.
    """
    run_root, out = Path(run_root), Path(out)
    recipes = list_recipes()
    found = latest_results(run_root)
    ran, failed = [], {}
    if run_missing:
        ran, failed = _run_missing([r for r in recipes if "world" not in found.get(r.id, {})], run_root, seed=seed,
                                   device=device, progress=progress)
        found = latest_results(run_root)
    done = [r for r in recipes if r.id in found]
    missing = [r for r in recipes if r.id not in found]
    headline = {rec.id: _headline(found[rec.id], KINDS) for rec in done}
    counts = {v: sum(1 for k, _ in headline.values() if verdict_of(k) == v) for v in (*VERDICTS, NO_CLAIM)}
    lines = _intro(run_root, len(recipes), len(done), len(missing), counts,
                   _seeds_line([result for result, _ in headline.values()]))
    lines += [_top_table_line(rec, found.get(rec.id, {}), headline.get(rec.id)) for rec in recipes]
    lines += ["", no_recipe_markdown(), ""]
    for rec in recipes:
        have = found.get(rec.id, {})
        lines += _recipe_sections(rec, have, out) if have else _not_run_section(rec, failed.get(rec.id))
    atomic_write_text(out, "\n".join(lines).rstrip() + "\n")
    return {
        "recipes": len(recipes),
        "verdicts": counts,
        "with_result": [r.id for r in done],
        "not_run": [r.id for r in missing],
        "ran": ran,
        "failed": failed,
        "path": str(out),
    }


def _seeds_line(results: list[dict[str, Any]]) -> list[str]:
    """How many seeds the headline runs used (a report of 1-seed runs says so)."""
    per_recipe = [len(r["seeds"]) for r in results if r.get("seeds")]
    if not per_recipe:
        return []
    groups = ", ".join(f"{n} seed{'s' if n != 1 else ''} in {per_recipe.count(n)}"
                       for n in sorted(set(per_recipe), reverse=True))
    return ["", f"Runs behind the headline results of {len(per_recipe)} recipes: {groups} "
            "(`--set seeds=N`; mean ± std cells and paired verdicts need 2 or more; with 1 a claim can only be "
            "'not significant', unless the recipe stored per-sample arrays and its claim is judged by a bootstrap "
            "over test samples)."]


def _run_missing(recipes: list[Any], run_root: Path, *, seed: int, device: str,
                 progress: bool) -> tuple[list[str], dict[str, str]]:
    """Run ``recipes`` at the small budget on the embedded world, each into ``run_root/<id>-<time>``.

    Returns ``(ids run, {id: "ErrorType: message"} of those that failed)``.
    """
    ran, failed = [], {}
    for rec in tqdm(recipes, desc="reproduce", disable=not progress):
        folder = default_run_dir(rec.id, run_root)
        try:
            run_recipe(rec.id, RecipeContext(budget="small", data=None, out=folder, seed=seed, device=device,
                                             progress=progress))
            ran.append(rec.id)
        except Exception as exc:  # noqa: BLE001  (one failing recipe must not lose the others' report)
            failed[rec.id] = f"{type(exc).__name__}: {exc}"
    return ran, failed


def _intro(run_root: Path, n_recipes: int, n_done: int, n_missing: int, counts: dict[str, int],
           seeds: list[str]) -> list[str]:
    """The report's title, what it shows, the verdict counts, the ``seeds`` lines and the top table's header."""
    return [
        "# Reproduction of the paper",
        "",
        "Generated by `replens reproduce report` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{run_root}`. "
        "Every table and figure of the paper with an experimental result has a recipe "
        "(`replens reproduce list`); each section shows the paper's numbers, typed in once from the "
        "dissertation, and ours at the small budget (CPU, minutes) on the embedded world and, where run, "
        "on CIFAR-10 and PACS. Small-budget numbers come from tiny encoders trained for minutes: "
        "compare trends and orderings, not absolute values. The times are each recipe's own wall time; "
        "recipes reuse encoders that earlier recipes trained and cached (e.g. the chapter 3 SimCLR baseline).",
        "",
        f"{n_recipes} recipes: {n_done} run, {n_missing} not run. Verdicts on the paper's claims "
        f"(headline data set of each recipe): {counts['holds']} hold, {counts['reversed']} reversed, "
        f"{counts['not significant']} not significant, {counts[NO_RESULT]} no result, "
        f"{counts[NO_CLAIM]} with claim: none (the paper compares no two settings there; each says why).",
        *seeds,
        "",
        "| id | title | section | paper's claim | ours (mean ± std) | verdict | data | world | CIFAR-10 | PACS | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def _top_table_line(rec: Any, have: dict[str, dict[str, Any]], headline: tuple[dict[str, Any], str] | None) -> str:
    """A recipe's line of the top table: its claim, our numbers, the verdict, the data and each data set's time."""
    cells = [f"{have[k]['seconds']:.0f} s" if k in have else "not run" for k in KINDS]
    if headline is not None:
        head, kind = headline
        claim = (head.get("claim") or {}).get("text") or claim_text(rec)
        verdict = verdict_of(head)
        if verdict == NO_RESULT:
            verdict += f" ({status_of(head)[1] or 'no claim numbers'})"
        mid = [claim, ours_of(head), verdict, kind]
    else:
        mid = [claim_text(rec), "-", "not run", "-"]
    return (f"| [{rec.id}](#{rec.id.replace('.', '')}) | {rec.title} | {rec.section} | "
            + " | ".join(_cell(m) for m in mid) + " | " + " | ".join(cells) + " |")


def _not_run_section(rec: Any, failure: str | None) -> list[str]:
    """The section of a recipe without a result: the paper's numbers and how to run it (and why it failed)."""
    lines = [f"## {rec.id}: {rec.title} (paper section {rec.section})", ""]
    try:
        paper_entry = load_paper_numbers(rec.id)
        lines += [f"**Paper**: {paper_entry.get('title', '')}", "", paper_markdown(paper_entry)]
    except KeyError:
        lines += ["(no paper numbers typed in)", ""]
    why = f" (failed: {failure})" if failure is not None else ""
    return lines + [f"**Ours**: not run{why}. Needs: {rec.needs}. Run `replens reproduce {rec.id}`.", ""]


def _recipe_sections(rec: Any, have: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """A recipe's sections, one per data set with a result; after the first only our part, under a sub-heading.

    Figures are copied beside ``out`` (``<out stem>-figures/``) and linked relative to it.
    """
    sections = []
    for i, kind in enumerate(k for k in KINDS if k in have):
        text = recipe_markdown(have[kind], figure_base=out.resolve().parent,
                               figure_copies=out.resolve().parent / f"{out.stem.lower()}-figures")
        if i:  # later data sets: only our part, under a sub-heading
            text = text.split("**Ours**", 1)[1]
            text = f"### {rec.id} on {kind}\n\n**Ours**" + text
        sections.append(text)
    return sections


def _headline(have: dict[str, dict[str, Any]], order: list[str]) -> tuple[dict[str, Any], str]:
    """The result a recipe's top-table line reports: the first data set in ``order`` that has one."""
    kind = next(k for k in order if k in have)
    return have[kind], kind


def no_recipe_markdown() -> str:
    """The paper's tables and figures without a recipe, and why (``replens.apps.reproduce.disclosures.NO_RECIPE``)."""
    lines = ["Tables and figures of the paper without a recipe:", ""]
    lines += [f"- {item}: {why}" for item, why in NO_RECIPE.items()]
    return "\n".join(lines)
