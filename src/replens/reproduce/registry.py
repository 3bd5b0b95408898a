"""The recipe registry of ``replens reproduce`` and the runner that records each result.

A *recipe* reproduces one table or figure of the seed dissertation as
configuration over the library's capabilities (``replens.engine.train``,
``replens.evaluate``, ``replens.ddm``, ``replens.tokens``, ...). Recipes
register with :func:`recipe`; :func:`run_recipe` runs one in its folder and
writes ``result.json`` (our rows beside the seed's numbers, the protocol, the
wall time) and ``table.md``.

Two budgets:

* ``small``: CPU, the embedded world (``WorldConfig(n=3000, size=32)``),
  ``small_cnn``, a few epochs; minutes.
* ``paper``: the seed's protocol (sections 2.4.1, 3.4.1, 5.5.1, 6.5.1 and
  Table C.1) for a GPU cluster; the recipes give it as data (dicts of
  :class:`~replens.engine.train.TrainConfig` fields).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: TrainConfig fields of the small budget (CPU, the embedded world, minutes).
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

#: TrainConfig fields of the paper budget before a recipe's own protocol: the
#: seed's common SSL setting (ResNet-18, LARS, batch 256, 200 epochs, 10 warm-up
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

#: World of the small budget (a cached, deterministic world; seed section 1.4 analogue of PACS).
SMALL_WORLD: dict[str, Any] = {"n": 3000, "size": 32}
#: World of the paper budget when no ``--data`` is given.
PAPER_WORLD: dict[str, Any] = {"n": 20000, "size": 64}

BUDGETS: tuple[str, ...] = ("small", "paper")
KINDS: tuple[str, ...] = ("table", "figure")

#: Short names accepted by ``--data`` for the validation sets in ``../shared/data``.
DATA_ALIASES: dict[str, str] = {
    "cifar10": "wds:{root}/cifar10/{{split}}-*.tar.gz",
    "pacs": "pacs:{root}/pacs",
}

_ID = re.compile(r"^(table|fig)-([0-9]+|[a-z])\.([0-9]+)$")


@dataclass(frozen=True)
class Recipe:
    """One reproducible table or figure of the seed.

    Attributes:
        id: ``table-2.1``, ``fig-3.1``, ``table-b.1``, ... (lower case).
        title: One line.
        section: The seed section that reports it, e.g. ``"2.4.2"``.
        kind: ``"table"`` or ``"figure"``.
        needs: What it needs: data, model, budget.
        fn: ``fn(ctx) -> RecipeResult``.
    """

    id: str
    title: str
    section: str
    kind: str
    needs: str
    fn: Callable[[RecipeContext], RecipeResult]

    @property
    def chapter(self) -> str:
        """``"2"``, ``"a"``, ... from the id."""
        return _ID.match(self.id).group(2)  # type: ignore[union-attr]


_REGISTRY: dict[str, Recipe] = {}


def _sort_key(r: Recipe) -> tuple[Any, ...]:
    m = _ID.match(r.id)
    assert m is not None
    kind, chapter, number = m.groups()
    chapter_key = (0, int(chapter), "") if chapter.isdigit() else (1, 0, chapter)
    return (*chapter_key, 0 if kind == "table" else 1, int(number))


def recipe(id: str, *, title: str, section: str, kind: str, needs: str) -> Callable[[Callable], Callable]:
    """Register the decorated ``fn(ctx) -> RecipeResult`` as the recipe ``id``.

    Raises:
        ValueError: A malformed or duplicate id, or an unknown kind.
    """
    if not _ID.match(id):
        raise ValueError(f"recipe id {id!r} must look like table-2.1, fig-3.4 or table-b.1 (lower case)")
    if kind not in KINDS:
        raise ValueError(f"recipe {id}: kind must be one of {KINDS}, got {kind!r}")
    if (kind == "table") != id.startswith("table-"):
        raise ValueError(f"recipe {id}: kind {kind!r} does not match the id")

    def decorate(fn: Callable) -> Callable:
        if id in _REGISTRY:
            raise ValueError(f"recipe {id!r} is registered twice ({_REGISTRY[id].fn.__module__} and {fn.__module__})")
        _REGISTRY[id] = Recipe(id=id, title=title, section=section, kind=kind, needs=needs, fn=fn)
        return fn

    return decorate


def _load_all() -> None:
    import replens.reproduce.recipes  # noqa: F401  (registers every recipe module)


def get_recipe(id: str) -> Recipe:
    """The recipe ``id`` (case-insensitive).

    Raises:
        KeyError: Unknown id; the message names the close matches.
    """
    _load_all()
    key = id.strip().lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `replens reproduce list`"
        raise KeyError(f"no recipe {id!r}{hint}")
    return _REGISTRY[key]


def list_recipes() -> list[Recipe]:
    """Every registered recipe, sorted by chapter (2..6, then appendices a, b, c), tables first, then number."""
    _load_all()
    return sorted(_REGISTRY.values(), key=_sort_key)


def shared_data_root() -> Path:
    """``$REPLENS_SHARED_DATA``, else the first of ``../shared/data`` and ``/work/shared/data`` that exists."""
    env = os.environ.get("REPLENS_SHARED_DATA")
    if env:
        return Path(env)
    for cand in (Path.cwd().parent / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data"


def resolve_data(spec: str | None) -> str | None:
    """Expand ``--data`` shorthands: ``world`` (None), ``cifar10[:ROOT]``, ``pacs[:ROOT]``; other specs unchanged.

    ``ROOT`` (a folder holding ``cifar10/`` or ``pacs/``, like ``../shared/data``) defaults to
    :func:`shared_data_root`; ``pacs:DIR`` where DIR is the PACS folder itself is the ordinary pacs spec.
    """
    if spec is None or spec.strip() in ("", "world"):
        return None
    name, _, root = spec.partition(":")
    if name in DATA_ALIASES and (not root or not re.match(r"^[A-Za-z][A-Za-z0-9_]*:", root)):
        base = root or str(shared_data_root())
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
        budget: ``"small"`` (CPU, the embedded world, minutes) or ``"paper"`` (the seed's protocol).
        data: The user's ``--data`` spec (shorthands ``cifar10`` and ``pacs`` expanded); None: the world.
        out: The recipe's run folder (created).
        seed: Seed of worlds, data order, views, initialisation and probes.
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
        from replens.world import WorldConfig

        base = dict(self.pick(SMALL_WORLD, PAPER_WORLD))
        return WorldConfig(**{**base, "seed": self.seed, **overrides, **self.world_overrides})

    def world(self, **overrides: Any) -> Path:
        """A cached world (``cache_dir/world-<hash of its config>``) built by ``replens.world.generate_world``.

        Args:
            **overrides: WorldConfig fields, e.g. ``domains=("photo", "sketch")`` or ``spurious=0.9``.
        """
        from replens.world import GENERATOR_VERSION, generate_world

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
        from replens.data import open_source

        chosen = spec if spec is not None else self.data
        if chosen is None:
            return open_source(f"world:{self.world(**world_overrides)}", split=split, image_size=self.image_size)
        return open_source(chosen, split=split, image_size=self.image_size)

    @property
    def data_label(self) -> str:
        """The data in words for the protocol: ``world(n=3000, size=32, ..., generator 1.2.0)`` or the spec."""
        if self.data is None:
            from replens.world import GENERATOR_VERSION

            w = self.world_config()
            return f"world(n={w.n}, size={w.size}, domains={','.join(w.domains)}, generator {GENERATOR_VERSION})"
        return self.data

    # ------------------------------------------------------------ training
    def train_config(self, **train_overrides: Any) -> Any:
        """The TrainConfig :meth:`train` would run: budget defaults < ``train_overrides`` < ``self.train_overrides``.

        Raises:
            replens.config.ConfigError: An unknown field or a value that does not convert.
        """
        from replens.config import ConfigError, from_dict
        from replens.engine.train import TrainConfig

        known = {f.name for f in fields(TrainConfig)}
        merged = {**self.pick(SMALL_TRAIN, PAPER_TRAIN), **train_overrides, **self.train_overrides, "seed": self.seed}
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
        from replens.engine.train import train

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
        """The library's fixed linear + kNN probe (``replens.engine.evaluation.probe_backbone``) into ``out/name``."""
        from replens.engine.evaluation import probe_backbone

        return probe_backbone(backbone.eval(), train_source, test_source, self.out / name, self.device, self.progress)


@dataclass
class RecipeResult:
    """What a recipe returns.

    Attributes:
        rows: Our numbers, one dict per table row; keys match the seed table's columns where there is one.
        figures: PNG paths relative to the run folder.
        protocol: What was run: data, model, steps, budget (the runner adds wall time and trainings).
        notes: Departures from the seed.
    """

    rows: list[dict[str, Any]]
    figures: list[str] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


def run_recipe(id: str, ctx: RecipeContext) -> dict[str, Any]:
    """Run recipe ``id`` in ``ctx.out``; write ``result.json`` and ``table.md`` atomically.

    Returns:
        The result: ``{id, title, section, kind, budget, rows, figures, protocol, notes, seed, seconds}``,
        where ``seed`` holds the seed's numbers (``replens.reproduce.seed.load_seed_numbers``).

    Raises:
        KeyError: Unknown id, or no seed numbers for it (checked before running).
    """
    import torch

    from replens.reproduce.report import recipe_markdown
    from replens.reproduce.seed import load_seed_numbers
    from replens.runs import atomic_write_json, atomic_write_text

    rec = get_recipe(id)
    seed_numbers = load_seed_numbers(rec.id)
    torch.manual_seed(ctx.seed)
    t0 = time.perf_counter()
    res = rec.fn(ctx)
    seconds = time.perf_counter() - t0
    if not isinstance(res, RecipeResult):
        raise TypeError(f"recipe {rec.id} returned {type(res).__name__}, not a RecipeResult")
    for fig in res.figures:
        if not (ctx.out / fig).is_file():
            raise FileNotFoundError(f"recipe {rec.id} lists the figure {fig} but {ctx.out / fig} does not exist")
    protocol = {"budget": ctx.budget, "data": ctx.data_label, "seed": ctx.seed, **res.protocol}
    if ctx.options:
        protocol.setdefault("options", ctx.options)
    if ctx.trainings:
        protocol.setdefault("trainings", ctx.trainings)
    result = {
        "id": rec.id,
        "title": rec.title,
        "section": rec.section,
        "kind": rec.kind,
        "budget": ctx.budget,
        "rows": res.rows,
        "columns": list(dict.fromkeys(k for row in res.rows for k in row)),
        "figures": list(res.figures),
        "protocol": protocol,
        "notes": res.notes,
        "seed": seed_numbers,
        "seconds": seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(ctx.out / "result.json", result)
    atomic_write_text(ctx.out / "table.md", recipe_markdown(result))
    return json.loads((ctx.out / "result.json").read_text())
