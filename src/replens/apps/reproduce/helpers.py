"""Pieces shared by the recipes: data of several domains, method lists, probes, plots, paper protocols.

Everything here is configuration over the library's capabilities: training
goes through :meth:`RecipeContext.train` (the engine), evaluation through
``replens.evaluate`` and ``replens.ddm.diagnostics``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replens import plotting
from replens.apps.reproduce.registry import RecipeContext
from replens.data.compose import SubsetSource, limit_source
from replens.ddm import default_prefix_dim
from replens.ddm.diagnostics import evaluate_encoder, stratified_split
from replens.models import create_backbone
from replens.ssl import METHODS


class _DisplayNames(Mapping[str, str]):
    """Registered method -> the name the paper's tables print: the ``display_name`` of its registry entry.

    A read-only view of ``replens.ssl.METHODS`` (read when used), so a new method needs no entry here.
    """

    def __getitem__(self, method: str) -> str:
        entry = METHODS.find(method)
        if entry is None:
            raise KeyError(method)
        return entry.display_name

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS.names())

    def __len__(self) -> int:
        return len(METHODS)


#: Display names of the SSL methods, as the paper's tables print them (from the method registry).
METHOD_NAMES: Mapping[str, str] = _DisplayNames()

#: Row label of the untrained-encoder control in accuracy tables.
RANDOM_INIT = "Random init (control)"
#: Images of a real data set's training split at the small budget (option ``limit``); its test split gets half.
#: Keeps a recipe on CIFAR-10 or PACS under 15 minutes of the 2-core CPU.
SMALL_REAL_LIMIT = 4000

#: World stand-ins of PACS's domains (PACS names on the right).
PACS_DOMAINS: dict[str, str] = {"photo": "photo", "sketch": "sketch", "cartoon": "cartoon", "painting": "art_painting"}


def option(ctx: RecipeContext, key: str, default: Any) -> Any:
    """A recipe option from ``ctx.options`` (``--set KEY=VALUE``), else ``default``; lists from comma text."""
    value = ctx.options.get(key, default)
    if isinstance(default, list | tuple) and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return value


def methods(ctx: RecipeContext, small: Sequence[str], paper: Sequence[str]) -> list[str]:
    """The SSL methods a recipe trains: ``small`` or ``paper`` by budget, or the ``methods`` option."""
    chosen = option(ctx, "methods", list(ctx.pick(small, paper)))
    unknown = [m for m in chosen if m not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"option methods: unknown method(s) {unknown}; choose from {sorted(METHOD_NAMES)}")
    return list(chosen)


def data_kind(ctx: RecipeContext) -> str:
    """``world``, ``pacs``, ``cifar10`` or ``other`` for the context's data."""
    if ctx.data is None:
        return "world"
    if ctx.data.startswith("pacs:"):
        return "pacs"
    if "cifar10" in ctx.data.lower() or "cifar-10" in ctx.data.lower():
        return "cifar10"
    return "other"


def with_options(spec: str, **options: Any) -> str:
    """``spec`` with ``key=value`` options added (``?`` or ``&``)."""
    extra = "&".join(f"{k}={v}" for k, v in options.items() if v is not None)
    if not extra:
        return spec
    return spec + ("&" if "?" in spec else "?") + extra


@dataclass
class DomainData:
    """Training and probe data of a multi-domain experiment (chapter 2's setting).

    Attributes:
        train: Training images of the training domains (also the probe-training rows).
        test: Probe-test images of the training domains (None: a stratified split of ``train``).
        unseen: Images of domains the encoder never sees (None: no unseen columns).
        unseen_test: Probe-test images of the unseen domains (None: a split).
        label: The data in words.
    """

    train: Any
    test: Any
    unseen: Any
    unseen_test: Any
    label: str


def multi_domain_data(ctx: RecipeContext, train_domains: Sequence[str], unseen_domains: Sequence[str] = (),
                      **world_overrides: Any) -> DomainData:
    """World or PACS data with ``train_domains`` seen in training and ``unseen_domains`` held out.

    On the world, two cached worlds are generated (the unseen one with another
    seed, half the size). With ``--data pacs`` the world names map to PACS's
    (painting -> art_painting) and probe-test rows are stratified splits.

    Raises:
        ValueError: Other ``--data`` (the recipe needs named domains).
    """
    kind = data_kind(ctx)
    if kind == "world":
        train_w = ctx.world(domains=tuple(train_domains), **world_overrides)
        src = lambda w, split: ctx.source(split, spec=f"world:{w}")  # noqa: E731
        unseen = unseen_test = None
        if unseen_domains:
            n = max(int(ctx.world_config(**world_overrides).n) // 2, 50)
            unseen_w = ctx.world(domains=tuple(unseen_domains), n=n, seed=ctx.data_seed + 1, **world_overrides)
            unseen, unseen_test = src(unseen_w, "train"), src(unseen_w, "test")
        return DomainData(src(train_w, "train"), src(train_w, "test"), unseen, unseen_test,
                          f"world train domains {','.join(train_domains)}; unseen {','.join(unseen_domains) or '-'}")
    if kind == "pacs":
        base = ctx.data.split("?", 1)[0]
        names = [PACS_DOMAINS.get(d, d) for d in train_domains]
        unseen_names = [PACS_DOMAINS.get(d, d) for d in unseen_domains]
        train = ctx.source(spec=with_options(base, domains=",".join(names)))
        unseen = ctx.source(spec=with_options(base, domains=",".join(unseen_names))) if unseen_names else None
        cap = real_limit(ctx)
        if cap:
            train = limit_source(train, cap, seed=ctx.data_seed)
            unseen = limit_source(unseen, cap // 2, seed=ctx.data_seed + 1) if unseen is not None else None
        return DomainData(train, None, unseen, None,
                          f"PACS train domains {','.join(names)}; unseen {','.join(unseen_names) or '-'}")
    raise ValueError(f"this recipe needs named domains: the embedded world (default) or --data pacs, got {ctx.data!r}")


def labelled_splits(ctx: RecipeContext, *, train_limit: int | None = None, test_limit: int | None = None,
                    **world_overrides: Any) -> tuple[Any, Any]:
    """(train, test) sources of ``--data`` (the world's splits by default).

    CIFAR-10-like specs with ``{split}`` use their train/test files; sources
    without splits (PACS) are split 70/30 per class and domain. At the small
    budget ``train_limit``/``test_limit`` take random subsets (seeded by
    ``ctx.data_seed``, so every run of a recipe sees the same images), and real
    data is further capped by :func:`real_limit`.
    """
    if ctx.data is None:
        train, test = ctx.source("train", **world_overrides), ctx.source("test", **world_overrides)
    elif data_kind(ctx) == "pacs":
        whole = ctx.source()
        tr, te = stratified_split(np.asarray(whole.labels), np.asarray(whole.domains), 0.3, ctx.data_seed)
        train, test = SubsetSource(whole, tr), SubsetSource(whole, te)
    else:
        train, test = ctx.source("train"), ctx.source("test")
    if ctx.budget == "small":
        cap = real_limit(ctx)
        if cap:
            train_limit = min(train_limit or cap, cap)
            test_limit = min(test_limit or cap // 2, cap // 2)
        if train_limit:
            train = limit_source(train, train_limit, seed=ctx.data_seed)
        if test_limit:
            test = limit_source(test, test_limit, seed=ctx.data_seed + 1)
    return train, test


def real_limit(ctx: RecipeContext) -> int | None:
    """Most training images of real data (``--data``) at the small budget: option ``limit``
    (default :data:`SMALL_REAL_LIMIT`; 0 = no limit); None on the world or at the paper budget."""
    if ctx.data is None or ctx.budget != "small":
        return None
    return int(option(ctx, "limit", SMALL_REAL_LIMIT)) or None


def random_init_backbone(ctx: RecipeContext, **train_overrides: Any) -> Any:
    """The untrained encoder of the budget (the architecture ``ctx.train`` would train with
    ``train_overrides``), initialised with ``ctx.seed``: the random-init control of accuracy tables."""
    import torch

    cfg = ctx.train_config(**train_overrides)
    torch.manual_seed(ctx.seed)
    return create_backbone(cfg.backbone, **cfg.backbone_args).eval()


def random_init_top1(ctx: RecipeContext, train: Any, test: Any, **train_overrides: Any) -> float:
    """Linear-probe top-1 % of the untrained encoder of the budget (seeded by ``ctx.seed``): the control row."""
    backbone = random_init_backbone(ctx, **train_overrides)
    return float(ctx.probe(backbone, train, test, "random-init/probe")["linear"]["top1"])


def prefix_dim_of(backbone: Any) -> int:
    """k of the DDM prefix for this encoder (``replens.ddm.default_prefix_dim``)."""
    return int(default_prefix_dim(int(backbone.feature_dim)))


def evaluate_domains(ctx: RecipeContext, backbone: Any, data: DomainData, name: str, *, prefix_dim: int | None = None,
                     protocol: str = "per_domain", plots: bool = False, title: str = "") -> dict[str, Any]:
    """Chapter 2's per-domain linear probes of one encoder (``replens.ddm.diagnostics.evaluate_encoder``)."""
    return evaluate_encoder(
        backbone, data.train, ctx.out / name, prefix_dim=prefix_dim or prefix_dim_of(backbone),
        test_source=data.test, unseen_source=data.unseen, unseen_test_source=data.unseen_test, protocol=protocol,
        seed=ctx.seed, device=ctx.device, plots=plots, title=title, progress=ctx.progress,
    )


def pair_cell(base: float, other: float) -> str:
    """``"97.54 / 98.28"``: the paper's ``Baseline / with DDM`` cell."""
    return f"{base:.2f} / {other:.2f}"


def parse_pair(cell: str) -> tuple[float, float]:
    """Inverse of :func:`pair_cell` (also reads the paper's cells)."""
    a, _, b = str(cell).partition("/")
    return float(a), float(b)


def column_name(domain: str, unseen: bool) -> str:
    """A table column: the domain, with `` (unseen)`` for held-out domains."""
    return f"{domain} (unseen)" if unseen else domain


def save_figure(fig: Any, path: Path) -> str:
    """Write a matplotlib figure atomically as PNG and close it; returns the path's name."""
    return plotting.save_figure(fig, path, tight=False, dpi=110).name


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def last_metric(run_dir: Path, key: str) -> float | None:
    """The last value of ``key`` in a training run's ``metrics.jsonl`` (None when never logged)."""
    import json

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    value = None
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if key in record:
                value = float(record[key])
    return value


def slug(text: str) -> str:
    """A folder-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-").lower()
