"""The recipe registry of ``replens reproduce`` and the runner that records each result.

A *recipe* reproduces one table or figure of the paper (the dissertation) as
configuration over the library's capabilities (``replens.engine.train``,
``replens.evaluate``, ``replens.ddm``, ``replens.tokens``, ...). Recipes
register with :func:`recipe`; :func:`run_recipe` runs one in its folder and
writes ``result.json`` (our rows beside the paper's numbers, the protocol, the
wall time) and ``table.md``.

Repeats: a recipe that trains runs once per seed (option ``seeds``, default
:data:`DEFAULT_SEEDS`: 3 at the small budget, 1 at the paper budget); data
order, initialisation, views and probes follow each seed, the data (the
world, limited real subsets) follow ``data_seed``. ``result.json`` keeps
every run's rows, the mean rows with their stds, and, when the recipe states
the paper's claim (:class:`~replens.apps.reproduce.verdict.Claim`), the verdict of
the stated paired test over seeds. A recipe that runs once (it trains nothing,
e.g. a pretrained checkpoint) may return per-sample arrays
(``RecipeResult.samples``, written to ``samples.npz`` in its run folder); a
claim with a ``resample`` function is then judged by a bootstrap over those
test samples. A recipe whose numbers are all NaN, that has no rows, or that
says it judged nothing (``RecipeResult.no_result``) is recorded as *no result*
with the reason.

In ``result.json`` the dissertation's numbers are under ``paper`` and the
random seeds under ``seeds``.

Two budgets:

* ``small``: CPU, the embedded world (``WorldConfig(n=3000, size=32)``),
  ``small_cnn``, a few epochs; minutes.
* ``paper``: the paper's protocol (sections 2.4.1, 3.4.1, 5.5.1, 6.5.1 and
  Table C.1) for a GPU cluster; the recipes give it as data (dicts of
  :class:`~replens.engine.train.TrainConfig` fields).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from replens.apps.reproduce.paper import load_paper_numbers
from replens.apps.reproduce.verdict import Claim, aggregate_rows, judge, sample_count
from replens.config import ConfigError, from_dict, preset_path
from replens.data import open_source
from replens.engine.probing import probe_backbone
from replens.engine.train import TrainConfig, train
from replens.registry import Registry
from replens.runs import atomic_write, atomic_write_json, atomic_write_text
from replens.world import GENERATOR_VERSION, WorldConfig, generate_world

#: TrainConfig fields of the small budget (CPU, minutes); on the embedded world :data:`SMALL_WORLD_TRAIN` goes over them.
SMALL_TRAIN: dict[str, Any] = {
    "method": "simclr",
    "backbone": "small_cnn",
    "image_size": 32,
    "epochs": 4,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 0.5,
    "online_probe": False,
    "knn_every": 0,
    "checkpoint_every": 0,
    "log_every": 10,
    "accelerator": "cpu",
}

#: TrainConfig fields the small budget takes from the world preset on the embedded world (not on ``--data``):
#: its views and optimiser (``presets/world.yaml``: crops of at least 30 %, a full hue turn and grayscale in
#: half the views take colour away as a shortcut of instance discrimination; AdamW 4e-3, channels-last).
#: Measured at the small budget (SimCLR, 75 steps, 3,000-scene world, one seed, linear top-1 on 600 test
#: images): 35.5 % with these (random init 18.0 %), 28.0 % with the crops and lr alone, 20-30 % with
#: SMALL_TRAIN's generic views and lr 2e-3. Recipes that study colour domains (tints) pass :data:`COLOUR_VIEWS`.
_WORLD_PRESET: dict[str, Any] = yaml.safe_load(preset_path("world").read_text(encoding="utf-8"))
SMALL_WORLD_TRAIN: dict[str, Any] = {k: _WORLD_PRESET[k] for k in ("lr", "warmup_epochs", "channels_last", "view_args")}
#: ``view_args`` of small-budget world runs whose domains differ by colour (the red/green tints): the world
#: preset's crops with the method's own colour jitter, since a full hue turn would erase those domains.
COLOUR_VIEWS: dict[str, Any] = {"crop_scale": SMALL_WORLD_TRAIN["view_args"]["crop_scale"]}

#: TrainConfig fields of the paper budget before a recipe's own protocol: the
#: paper's common SSL setting (ResNet-18, LARS, batch 256, 200 epochs, 10 warm-up
#: epochs; sections 2.4.1 and 5.5.1). Recipes override them with their section's values.
PAPER_TRAIN: dict[str, Any] = {
    "method": "simclr",
    "backbone": "resnet18",
    "image_size": 224,
    "epochs": 200,
    "batch_size": 256,
    "optimizer": "lars",
    "lr": 0.3,
    "weight_decay": 1e-6,
    "momentum": 0.9,
    "warmup_epochs": 10,
    "online_probe": True,
    "knn_every": 10,
    "checkpoint_every": 1000,
    "log_every": 50,
    "accelerator": "auto",
    "precision": "bf16-mixed",
    "channels_last": True,
}

#: World of the small budget (a cached, deterministic world; paper section 1.4 analogue of PACS).
SMALL_WORLD: dict[str, Any] = {"n": 3000, "size": 32}
#: World of the paper budget when no ``--data`` is given.
PAPER_WORLD: dict[str, Any] = {"n": 20000, "size": 64}

BUDGETS: tuple[str, ...] = ("small", "paper")
#: Runs (seeds) of a recipe that trains, per budget (option ``seeds`` overrides).
DEFAULT_SEEDS: dict[str, int] = {"small": 3, "paper": 1}
#: Environment variable naming the folder that holds ``cifar10/`` and ``pacs/`` (``--data cifar10`` and ``pacs``).
DATA_ROOT_ENV = "REPLENS_DATA"
KINDS: tuple[str, ...] = ("table", "figure")

#: Short names accepted by ``--data`` for the validation sets in ``../shared/data``.
DATA_ALIASES: dict[str, str] = {
    "cifar10": "wds:{root}/cifar10/{{split}}-*.tar.gz",
    "pacs": "pacs:{root}/pacs",
}

_ID = re.compile(r"^(table|fig)-([0-9]+|[a-z])\.([0-9]+)$")


@dataclass(frozen=True)
class Recipe:
    """One reproducible table or figure of the paper.

    Attributes:
        id: ``table-2.1``, ``fig-3.1``, ``table-b.1``, ... (lower case).
        title: One line.
        section: The paper section that reports it, e.g. ``"2.4.2"``.
        kind: ``"table"`` or ``"figure"``.
        needs: What it needs: data, model, budget.
        fn: ``fn(ctx) -> RecipeResult``.
        claim: The paper's claim as a direction between two of its numbers (None: see ``no_claim``).
        no_claim: Why the recipe tests no claim (``claim: none``): the table or figure shows settings,
            examples or a distribution and compares no two settings in a direction. Every recipe has
            either a ``claim`` or this reason.
    """

    id: str
    title: str
    section: str
    kind: str
    needs: str
    fn: Callable[[RecipeContext], RecipeResult]
    claim: Claim | None = None
    no_claim: str = ""

    @property
    def chapter(self) -> str:
        """``"2"``, ``"a"``, ... from the id."""
        return _ID.match(self.id).group(2)  # type: ignore[union-attr]


#: Every recipe, by id; the modules of ``replens.apps.reproduce.recipes`` register theirs (found by module scan).
RECIPES: Registry[Recipe] = Registry("recipe", scan=("replens.apps.reproduce.recipes",))


def _sort_key(r: Recipe) -> tuple[Any, ...]:
    m = _ID.match(r.id)
    assert m is not None
    kind, chapter, number = m.groups()
    chapter_key = (0, int(chapter), "") if chapter.isdigit() else (1, 0, chapter)
    return (*chapter_key, 0 if kind == "table" else 1, int(number))


def recipe(id: str, *, title: str, section: str, kind: str, needs: str,
           claim: Claim | None = None, no_claim: str = "") -> Callable[[Callable], Callable]:
    """Register the decorated ``fn(ctx) -> RecipeResult`` as the recipe ``id``.

    A recipe states the paper's ``claim`` (a direction between two of its numbers, judged over seeds)
    or, when the paper compares no two settings in a direction, says so in ``no_claim`` (``claim: none``).

    Raises:
        ValueError: A malformed or duplicate id, an unknown kind, or both ``claim`` and ``no_claim``.
    """
    if not _ID.match(id):
        raise ValueError(f"recipe id {id!r} must look like table-2.1, fig-3.4 or table-b.1 (lower case)")
    if kind not in KINDS:
        raise ValueError(f"recipe {id}: kind must be one of {KINDS}, got {kind!r}")
    if (kind == "table") != id.startswith("table-"):
        raise ValueError(f"recipe {id}: kind {kind!r} does not match the id")
    if claim is not None and no_claim:
        raise ValueError(f"recipe {id}: give a claim or a no_claim reason, not both")

    def decorate(fn: Callable) -> Callable:
        old = RECIPES.find(id, scan=False)
        if old is not None:
            raise ValueError(f"recipe {id!r} is registered twice ({old.obj.fn.__module__} and {fn.__module__})")
        entry = Recipe(id=id, title=title, section=section, kind=kind, needs=needs, fn=fn, claim=claim,
                       no_claim=no_claim)
        RECIPES.add(id, entry, help=title, kind=kind, section=section)
        return fn

    return decorate


def get_recipe(id: str) -> Recipe:
    """The recipe ``id`` (case-insensitive).

    Raises:
        KeyError: Unknown id; the message names the close matches.
    """
    key = id.strip().lower()
    found = RECIPES.find(key)
    if found is None:
        close = difflib.get_close_matches(key, RECIPES.names(), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `replens reproduce list`"
        raise KeyError(f"no recipe {id!r}{hint}")
    return found.obj


def list_recipes() -> list[Recipe]:
    """Every registered recipe, sorted by chapter (2..6, then appendices a, b, c), tables first, then number."""
    return sorted((entry.obj for entry in RECIPES.entries()), key=_sort_key)


def shared_data_root() -> Path | None:
    """The folder holding ``cifar10/`` and ``pacs/``: ``$REPLENS_DATA`` (or the older ``$REPLENS_SHARED_DATA``), else None.

    No machine's path is assumed: pass ``--data cifar10:ROOT`` / ``pacs:ROOT`` or set the variable.
    """
    env = os.environ.get(DATA_ROOT_ENV) or os.environ.get("REPLENS_SHARED_DATA")
    return Path(env) if env else None


def resolve_data(spec: str | None) -> str | None:
    """Expand ``--data`` shorthands: ``world`` (None), ``cifar10[:ROOT]``, ``pacs[:ROOT]``; other specs unchanged.

    ``ROOT`` (a folder holding ``cifar10/`` or ``pacs/``) defaults to :func:`shared_data_root`
    (``$REPLENS_DATA``); ``pacs:DIR`` where DIR is the PACS folder itself is the ordinary pacs spec.

    Raises:
        ValueError: A shorthand without ROOT while ``$REPLENS_DATA`` is unset.
    """
    if spec is None or spec.strip() in ("", "world"):
        return None
    name, _, root = spec.partition(":")
    if name in DATA_ALIASES and (not root or not re.match(r"^[A-Za-z][A-Za-z0-9_]*:", root)):
        env_root = shared_data_root()
        if not root and env_root is None:
            raise ValueError(f"--data {name}: give the data folder ({name}:ROOT, ROOT holding {name}/) "
                             f"or set ${DATA_ROOT_ENV}")
        base = root or str(env_root)
        if name == "cifar10" and root and not Path(base, "cifar10").is_dir() and Path(base).is_dir():
            base = str(Path(base).parent)  # cifar10:/x/cifar10 given the dataset folder itself
        if name == "pacs" and root and not Path(root, "pacs").is_dir():
            return spec  # already a pacs: spec (``pacs:DIR[?options]``, DIR holding the domain tars)
        return DATA_ALIASES[name].format(root=base)
    return spec


@dataclass
class RecipeContext:
    """What a recipe gets: the budget, the data, its run folder, and helpers over the engine.

    Attributes:
        budget: ``"small"`` (CPU, the embedded world, minutes) or ``"paper"`` (the paper's protocol).
        data: The user's ``--data`` spec (shorthands ``cifar10`` and ``pacs`` expanded); None: the world.
        out: The recipe's run folder (created).
        seed: Seed of data order, views, initialisation and probes (one run; see :func:`run_recipe`).
        data_seed: Seed of the data: worlds and the subsets of real data (fixed across a recipe's runs).
        device: Device of feature extraction and probes.
        progress: Show progress bars.
        world_overrides: WorldConfig fields forced on every world (tests: tiny worlds).
        train_overrides: TrainConfig fields forced on every training run (tests: a few steps).
        cache_dir: Where worlds are cached, keyed by their config.
        options: Recipe knobs (``--set KEY=VALUE``), e.g. ``methods=simclr,byol``; each recipe documents its own.
        trainings: Filled by :meth:`train`: ``{name: {"config": ..., "steps": ..., "seconds": ...}}``.
    """

    budget: str
    data: str | None
    out: Path
    seed: int = 0
    data_seed: int = 0
    device: str = "cpu"
    progress: bool = True
    world_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path = Path("runs/cache")
    options: dict[str, Any] = field(default_factory=dict)
    trainings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {self.budget!r}")
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(self.cache_dir)
        self.data = resolve_data(self.data)

    def pick(self, small: Any, paper: Any) -> Any:
        """``small`` at the small budget, else ``paper``."""
        return small if self.budget == "small" else paper

    # ------------------------------------------------------------ data
    def world_config(self, **overrides: Any) -> Any:
        """The WorldConfig of :meth:`world` (budget default, then ``overrides``, then ``world_overrides``)."""
        base = dict(self.pick(SMALL_WORLD, PAPER_WORLD))
        return WorldConfig(**{**base, "seed": self.data_seed, **overrides, **self.world_overrides})

    def world(self, **overrides: Any) -> Path:
        """A cached world (``cache_dir/world-<hash of its config>``) built by ``replens.world.generate_world``.

        Args:
            **overrides: WorldConfig fields, e.g. ``domains=("photo", "sketch")`` or ``spurious=0.9``.
        """
        wcfg = self.world_config(**overrides)
        keyed = {**asdict(wcfg), "generator_version": GENERATOR_VERSION}
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return Path(generate_world(wcfg, self.cache_dir / f"world-{key}", progress=self.progress))

    @property
    def image_size(self) -> int:
        """Image side of the run: ``train_overrides``' image_size, else the world's side (small) or 224 (paper)."""
        if "image_size" in self.train_overrides:
            return int(self.train_overrides["image_size"])
        if self.budget == "small":
            return int(self.world_config().size)
        return int(PAPER_TRAIN["image_size"])

    def source(self, split: str = "train", *, spec: str | None = None, **world_overrides: Any) -> Any:
        """An ImageSource of ``split``: of ``spec``, else of ``--data``, else of :meth:`world` (``world_overrides``).

        Sources without splits (PACS, a folder) ignore ``split``.
        """
        chosen = spec if spec is not None else self.data
        if chosen is None:
            return open_source(f"world:{self.world(**world_overrides)}", split=split, image_size=self.image_size)
        return open_source(chosen, split=split, image_size=self.image_size)

    @property
    def data_label(self) -> str:
        """The data in words for the protocol: ``world(n=3000, size=32, ..., generator 1.2.0)`` or the spec."""
        if self.data is None:
            w = self.world_config()
            return f"world(n={w.n}, size={w.size}, domains={','.join(w.domains)}, generator {GENERATOR_VERSION})"
        return self.data

    # ------------------------------------------------------------ training
    def train_config(self, **train_overrides: Any) -> Any:
        """The TrainConfig :meth:`train` would run: budget defaults (small budget on the world: with
        :data:`SMALL_WORLD_TRAIN`) < ``train_overrides`` < ``self.train_overrides``.

        Raises:
            replens.config.ConfigError: An unknown field or a value that does not convert.
        """
        known = {f.name for f in fields(TrainConfig)}
        world = SMALL_WORLD_TRAIN if self.budget == "small" and self.data is None else {}
        merged = {**self.pick(SMALL_TRAIN, PAPER_TRAIN), **world, **train_overrides, **self.train_overrides,
                  "seed": self.seed}
        if self.budget == "small" and "image_size" not in train_overrides and "image_size" not in self.train_overrides:
            merged["image_size"] = self.image_size
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields {unknown}")
        return from_dict(TrainConfig, merged)

    def train(self, name: str, *, source: Any = None, monitor: Any = None, **train_overrides: Any) -> dict[str, Any]:
        """Train with ``replens.engine.train.train`` into ``out/name`` and return its summary.

        Args:
            name: Sub-folder of the run (also the key in :attr:`trainings`).
            source: Training ImageSource (default: ``self.source("train")``).
            monitor: ``(bank, queries)`` for the engine's kNN monitor.
            **train_overrides: TrainConfig fields over the budget defaults (see :meth:`train_config`).

        Returns:
            The engine's summary, with ``"backbone"`` (the trained encoder, in eval mode).
        """
        cfg = self.train_config(**train_overrides)
        src = source if source is not None else self.source("train")
        t0 = time.perf_counter()
        summary = train(cfg, src, self.out / name, progress=self.progress, monitor=monitor)
        summary["backbone"].eval()
        self.trainings[name] = {
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("log_every", "tensorboard")},
            "steps": summary["steps"],
            "final_loss": summary["final_loss"],
            "seconds": time.perf_counter() - t0,
        }
        return summary

    def probe(self, backbone: Any, train_source: Any, test_source: Any, name: str) -> dict[str, Any]:
        """The library's fixed linear + kNN probe (``replens.engine.probing.probe_backbone``) into ``out/name``."""
        return probe_backbone(backbone.eval(), train_source, test_source, self.out / name, self.device, self.progress)


@dataclass
class RecipeResult:
    """What a recipe returns.

    Attributes:
        rows: Our numbers, one dict per table row; keys match the paper table's columns where there is one.
        figures: PNG paths relative to the run folder.
        protocol: What was run: data, model, steps, budget (the runner adds wall time and trainings).
        notes: Departures from the paper.
        no_result: Why the run has no result (e.g. ``"0 feature groups judged"``); empty: it has one.
        samples: Per-sample arrays of the test samples (numpy arrays sharing their first axis, e.g.
            ``{"qscore": (n, models), "correct": (n, models)}``), written to ``samples.npz``; a claim's
            ``resample`` bootstraps them when the recipe ran once. Empty: none.
    """

    rows: list[dict[str, Any]]
    figures: list[str] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    no_result: str = ""
    samples: dict[str, Any] = field(default_factory=dict)


def nothing_counted(**counts: int) -> str:
    """A ``no_result`` reason naming each count that is 0 (``"0 groups_judged"``), else ``""``.

    Example: ``RecipeResult(rows, no_result=nothing_counted(groups_judged=n))``.
    """
    zero = [f"0 {name}" for name, value in counts.items() if not value]
    return ", ".join(zero)


def no_result_reason(rows: list[dict[str, Any]], stated: str = "") -> str:
    """Why rows are no result: ``stated``, no rows, or every number NaN; ``""`` when they are a result."""
    if stated:
        return stated
    if not rows:
        return "no rows"
    numbers = [v for row in rows for v in row.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and all(isinstance(v, float) and math.isnan(v) for v in numbers):
        return "every number is NaN"
    return ""


def seeds_of(ctx: RecipeContext) -> list[int]:
    """The seeds a training recipe runs: ``ctx.seed`` and the next ones, option ``seeds`` of them
    (default :data:`DEFAULT_SEEDS` of the budget)."""
    n = int(ctx.options.get("seeds", DEFAULT_SEEDS[ctx.budget]))
    if n < 1:
        raise ValueError(f"option seeds must be >= 1, got {n}")
    return [ctx.seed + i for i in range(n)]


def _one_run(rec: Recipe, ctx: RecipeContext) -> tuple[RecipeResult, dict[str, Any]]:
    import torch

    torch.manual_seed(ctx.seed)
    res = rec.fn(ctx)
    if not isinstance(res, RecipeResult):
        raise TypeError(f"recipe {rec.id} returned {type(res).__name__}, not a RecipeResult")
    for fig in res.figures:
        if not (ctx.out / fig).is_file():
            raise FileNotFoundError(f"recipe {rec.id} lists the figure {fig} but {ctx.out / fig} does not exist")
    if res.samples:
        write_samples(ctx.out / SAMPLES_FILE, res.samples)
    return res, dict(ctx.trainings)


#: Per-sample arrays of a run (``RecipeResult.samples``), in its run folder.
SAMPLES_FILE = "samples.npz"


def write_samples(path: Path, samples: dict[str, Any]) -> Path:
    """Write per-sample arrays atomically as ``.npz`` (checked to share their first axis).

    Raises:
        ValueError: Arrays of different first-axis lengths.
    """
    import numpy as np

    sample_count(samples)
    arrays = {k: np.asarray(v) for k, v in samples.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def _claim_entry(claim: Claim | None, verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    """The claim in ``result.json``: its text, direction, quantity and the test that judged it."""
    if claim is None:
        return None
    bootstrap = verdict is not None and str(verdict["test"]).startswith("bootstrap")
    test = claim.describe(samples=int(verdict["n"])) if bootstrap else claim.describe()  # type: ignore[index]
    return {"text": claim.text, "direction": claim.direction, "test": test, "quantity": claim.quantity}


def run_recipe(id: str, ctx: RecipeContext) -> dict[str, Any]:
    """Run recipe ``id`` in ``ctx.out`` (once per seed when it trains); write ``result.json`` and ``table.md``.

    The first run uses ``ctx.seed`` in ``ctx.out``. When it trained anything
    (``ctx.trainings``) and :func:`seeds_of` asks for more, the next seeds run
    in ``ctx.out/seed-<s>`` with the same data (``ctx.data_seed``); figures are
    the first run's.

    Returns:
        The result: ``{id, title, section, kind, budget, status, no_result, rows, rows_std, runs, claim,
        no_claim, verdict, figures, samples, protocol, notes, paper, seeds, seconds}``, where ``samples``
        names the first run's ``samples.npz`` (None without per-sample arrays), ``paper`` holds the
        dissertation's numbers (``replens.apps.reproduce.paper.load_paper_numbers``), ``rows`` the mean over
        runs and ``rows_std`` their standard deviations.

    Raises:
        KeyError: Unknown id, or no paper numbers for it (checked before running).
    """
    # lazy: replens.apps.reproduce.report imports this module at module level (an import cycle)
    from replens.apps.reproduce.report import recipe_markdown

    rec = get_recipe(id)
    paper_numbers = load_paper_numbers(rec.id)
    t0 = time.perf_counter()
    first, trainings = _one_run(rec, ctx)
    runs: list[tuple[int, RecipeResult, dict[str, Any]]] = [(ctx.seed, first, trainings)]
    if trainings:
        for s in seeds_of(ctx)[1:]:
            sub = dataclasses.replace(ctx, seed=s, out=ctx.out / f"seed-{s}", trainings={})
            res, tr = _one_run(rec, sub)
            runs.append((s, res, tr))
    seconds = time.perf_counter() - t0
    rows, rows_std = aggregate_rows([r.rows for _, r, _ in runs])
    reasons = [no_result_reason(r.rows, r.no_result) for _, r, _ in runs]
    samples = first.samples if len(runs) == 1 else {}
    verdict = judge(rec.claim, [r.rows for _, r, _ in runs], samples).as_dict() if rec.claim else None
    no_result = ""
    if any(reasons):
        no_result = "; ".join(f"seed {s}: {why}" for (s, _, _), why in zip(runs, reasons, strict=True) if why)
    elif verdict is not None and verdict["verdict"] == "no result":
        no_result = f"the claim's numbers are missing or NaN ({verdict['reason']})"
    protocol = {"budget": ctx.budget, "data": ctx.data_label, "seeds": [s for s, _, _ in runs],
                "data_seed": ctx.data_seed, **first.protocol}
    if ctx.options:
        protocol.setdefault("options", ctx.options)
    if trainings:
        protocol.setdefault("trainings", trainings)
    result = {
        "id": rec.id,
        "title": rec.title,
        "section": rec.section,
        "kind": rec.kind,
        "budget": ctx.budget,
        "status": "no result" if no_result else "result",
        "no_result": no_result,
        "rows": rows,
        "rows_std": rows_std,
        "columns": list(dict.fromkeys(k for row in rows for k in row)),
        "runs": [{"seed": s, "rows": r.rows, "protocol": r.protocol, "no_result": r.no_result, "trainings": tr}
                 for s, r, tr in runs] if len(runs) > 1 else [],
        "claim": _claim_entry(rec.claim, verdict),
        "no_claim": rec.no_claim if rec.claim is None else "",
        "verdict": verdict,
        "figures": list(first.figures),
        "samples": SAMPLES_FILE if first.samples else None,
        "protocol": protocol,
        "notes": first.notes,
        "paper": paper_numbers,
        "seeds": [s for s, _, _ in runs],
        "seconds": seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(ctx.out / "result.json", result)
    atomic_write_text(ctx.out / "table.md", recipe_markdown(result))
    return json.loads((ctx.out / "result.json").read_text())
