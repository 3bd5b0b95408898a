"""Chapter 5 (FDA): Tables 5.1-5.5 and Figures 5.2-5.4 as recipes over ``train --fda`` and ``replens.evaluate``.

Small budget: ``small_cnn`` on the embedded world (the world stands in for
ImageNet; its tinted renderings and, when ``../shared/data`` has them,
CIFAR-10 and PACS are the transfer sets). Paper budget: section 5.5.1 and
Table C.1 (ResNet-50, LARS at 0.2, weight decay 1.5e-6, cosine decay, 1000
epochs; projector/predictor sizes and temperatures per method), FDA with
Table C.2's hyper-parameters on the left view only.

Figures 5.1 (the FDA pipeline) and 5.5 (the dual-encoder diagram) are
illustrations and have no recipe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from replens.apps.reproduce.helpers import (
    METHOD_NAMES,
    RANDOM_INIT,
    data_kind,
    labelled_splits,
    methods,
    option,
    pyplot,
    random_init_backbone,
    random_init_top1,
    save_figure,
    with_options,
)
from replens.apps.reproduce.registry import RecipeContext, RecipeResult, recipe, shared_data_root
from replens.apps.reproduce.verdict import Claim, cell, mean_cell
from replens.augment.fourier_preview import STRENGTHS, fda_preview
from replens.augment.views import ViewConfig, ViewPipeline
from replens.data.compose import SubsetSource, limit_source
from replens.ddm.diagnostics import stratified_split
from replens.evaluate import few_shot_accuracy, transfer_evaluation
from replens.evaluate.retrieval import nearest_neighbours, neighbour_precision, plot_retrieval_grid
from replens.models import extract_features, load_embeddings

FOUR_METHODS = ("simclr", "byol", "moco", "simsiam")
MOCO_V2 = "MoCo v2"

#: Table C.1 (and section 5.5.1): ResNet-50, LARS lr 0.2, weight decay 1.5e-6, cosine decay, 1000 epochs, per-method
#: heads and temperatures. The paper gives no batch size: 4096 (SimCLR's and BYOL's ImageNet setting).
PAPER_CH5: dict[str, dict[str, Any]] = {
    m: {"method": m, "backbone": "resnet50", "image_size": 224, "epochs": 1000, "batch_size": 4096,
        "optimizer": "lars", "lr": 0.2, "weight_decay": 1.5e-6, "warmup_epochs": 10, "method_args": args}
    for m, args in {
        "simclr": {"hidden_dim": 4096, "output_dim": 256, "temperature": 0.1},
        "byol": {"hidden_dim": 4096, "output_dim": 256},
        "moco": {"output_dim": 256, "temperature": 0.1},
        "simsiam": {"output_dim": 2048, "prediction_hidden_dim": 512},
    }.items()
}

#: Smaller worlds and fewer epochs for the recipes with many trainings (ablations, diversity sweeps).
SMALL_ABLATION: dict[str, Any] = {"epochs": 3}
SMALL_ABLATION_WORLD: dict[str, Any] = {"n": 1500}


def method_label(method: str) -> str:
    """The paper's chapter-5 name of a method (MoCo v2)."""
    return MOCO_V2 if method == "moco" else METHOD_NAMES[method]


def train_config(ctx: RecipeContext, method: str, *, fda: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """TrainConfig fields of a chapter-5 run; ``fda`` (plug-in arguments) adds the FDA plug-in."""
    cfg: dict[str, Any] = dict(ctx.pick({"method": method}, PAPER_CH5.get(method, {**PAPER_CH5["simclr"],
                                                                                    "method": method})))
    if method not in PAPER_CH5 and ctx.budget == "paper":
        cfg["method_args"] = {}
    if fda is not None:
        cfg["plugins"] = ["fda"]
        cfg["plugin_args"] = {"fda": dict(fda)}
    return {**cfg, **extra}


def _splits(ctx: RecipeContext, **world: Any) -> tuple[Any, Any]:
    return labelled_splits(ctx, train_limit=3000, test_limit=1000, **world)


def _linear(ctx: RecipeContext, summary: dict[str, Any], train: Any, test: Any, name: str) -> float:
    return float(ctx.probe(summary["backbone"], train, test, f"{name}/probe")["linear"]["top1"])


@recipe("table-5.1", title="Pre-training with FDA: linear probe top-1 of SSL baselines with and without FDA",
        section="5.5.2", kind="table",
        needs="world (default), --data cifar10 or pacs; 2 SSL trainings per method and seed; ~3 min CPU (small)",
        claim=Claim("FDA raises SimCLR's linear top-1 (Table 5.1)",
                    pairs=lambda rows: (rows[0]["SimCLR"], rows[1]["SimCLR"]), quantity="linear top-1 %"))
def table_5_1(ctx: RecipeContext) -> RecipeResult:
    """Table 5.1: each method with standard augmentations and with FDA on the left view, plus a random-init row.

    One run per seed (``run_recipe`` repeats it; cells are mean +- std over seeds in the report).
    """
    train, test = _splits(ctx)
    chosen = methods(ctx, ["simclr", "moco"], FOUR_METHODS)
    raw: dict[str, dict[str, float]] = {}
    for method in chosen:
        for tag, fda in (("baseline", None), ("fda", {})):
            name = f"{method}-{tag}"
            summary = ctx.train(name, source=train, **train_config(ctx, method, fda=fda))
            raw.setdefault(method, {})[tag] = _linear(ctx, summary, train, test, name)
    control = random_init_top1(ctx, train, test)
    rows = [{"setting": label, **{method_label(m): raw[m][tag] for m in chosen}}
            for tag, label in (("baseline", "Baseline"), ("fda", "+ FDA (Ours)"))]
    rows.append({"setting": RANDOM_INIT, **{method_label(m): control for m in chosen}})
    return RecipeResult(rows=rows, protocol={"probe": "linear probe (replens.evaluate fixed protocol)"},
                        notes="cells: linear probe top-1 %; the random-init row probes the untrained encoder "
                              "(the same architecture and seed) as a control")


def _transfer_targets(ctx: RecipeContext) -> dict[str, tuple[Any, Any]]:
    """Transfer sets: the tinted world, and CIFAR-10 / PACS under ``$REPLENS_DATA`` when set (option ``transfer``)."""
    root = shared_data_root()
    default = ["world-tinted"] + [n for n in ("cifar10", "pacs")
                                  if root is not None and (root / n).is_dir() and n != data_kind(ctx)]
    wanted = option(ctx, "transfer", default)
    if root is None and any(n in ("cifar10", "pacs") for n in wanted):
        raise ValueError("option transfer: cifar10 and pacs need $REPLENS_DATA (the folder holding them)")
    out: dict[str, tuple[Any, Any]] = {}
    for name in wanted:
        if name == "world-tinted":
            w = ctx.world(domains=("tint_red", "tint_green"), seed=ctx.data_seed + 2)
            out[name] = (ctx.source("train", spec=f"world:{w}"), ctx.source("test", spec=f"world:{w}"))
        elif name == "cifar10":
            spec = f"wds:{root}/cifar10/{{split}}-*.tar.gz"
            tr, te = ctx.source("train", spec=spec), ctx.source("test", spec=spec)
            out[name] = (limit_source(tr, 2000, seed=ctx.data_seed), limit_source(te, 1000, seed=ctx.data_seed + 1))
        elif name == "pacs":
            whole = ctx.source(spec=with_options(f"pacs:{root}/pacs", domains="art_painting,cartoon"))
            tr_idx, te_idx = stratified_split(np.asarray(whole.labels), np.asarray(whole.domains), 0.3,
                                              ctx.data_seed)
            out[name] = (SubsetSource(whole, tr_idx), SubsetSource(whole, te_idx))
        else:
            raise ValueError(f"option transfer: unknown set {name!r}; choose world-tinted, cifar10, pacs")
    return out


@recipe("table-5.2", title="Transfer and few-shot (5-, 10-shot) linear evaluation of FDA pre-trained encoders",
        section="5.5.3", kind="table",
        needs="world (default) or --data cifar10; transfer to the tinted world (+ CIFAR-10/PACS from ../shared/data "
              "when present); 2 SSL trainings per method; ~3 min CPU (small)",
        claim=Claim("FDA raises SimCLR's average few-shot and transfer linear top-1 (Table 5.2)",
                    pairs=lambda rows: (cell(rows, "average", model="SimCLR"), cell(rows, "average", model="+ FDA")),
                    quantity="mean top-1 % over the few-shot and transfer columns"))
def table_5_2(ctx: RecipeContext) -> RecipeResult:
    """Table 5.2: k-shot probes on the pre-training data and full linear probes on transfer sets."""
    train, test = _splits(ctx)
    targets = _transfer_targets(ctx)
    episodes = int(option(ctx, "episodes", ctx.pick(3, 5)))
    src_name = "world" if ctx.data is None else data_kind(ctx)
    rows, raw = [], {}

    def evaluate(backbone: Any, name: str, label: str) -> None:
        embs = [load_embeddings(extract_features(backbone, src, ctx.out / name / f"embeddings-{split}",
                                                 device=ctx.device, progress=ctx.progress, overwrite=True),
                                mmap=False) for split, src in (("train", train), ("test", test))]
        shots = few_shot_accuracy(embs[0].features, embs[0].labels, embs[1].features, embs[1].labels,
                                  shots=(5, 10), episodes=episodes, seed=ctx.seed, device=ctx.device)
        transfer = transfer_evaluation(backbone, targets, ctx.out / name / "transfer", device=ctx.device,
                                       progress=ctx.progress)
        row: dict[str, Any] = {"model": label, f"{src_name} (5-shot)": shots["5-shot"]["mean"],
                               f"{src_name} (10-shot)": shots["10-shot"]["mean"]}
        row.update({t: r["linear"] for t, r in transfer.items()})
        row["average"] = float(np.mean([v for k, v in row.items() if k != "model"]))
        rows.append(row)
        raw[name] = {"few_shot": shots, "transfer": transfer}

    chosen = methods(ctx, ["simclr"], FOUR_METHODS)
    for method in chosen:
        for tag, fda in (("baseline", None), ("fda", {})):
            name = f"{method}-{tag}"
            backbone = ctx.train(name, source=train, **train_config(ctx, method, fda=fda))["backbone"]
            evaluate(backbone, name, METHOD_NAMES[method] if tag == "baseline" else "+ FDA")
    evaluate(random_init_backbone(ctx, **train_config(ctx, chosen[0])), "random-init", RANDOM_INIT)
    return RecipeResult(rows=rows, protocol={"results": raw, "episodes": episodes, "transfer_sets": list(targets),
                                             "probe": "fixed linear probe; k-shot: k training samples per class, "
                                                      "mean over episodes (replens.evaluate.fewshot)"},
                        notes="few-shot on the pre-training data stands in for ImageNet 5/10-shot; the transfer sets "
                              "for iNaturalist, DomainNet painting, Food101 and Places365")


@recipe("fig-5.4", title="Image retrieval: top-4 neighbours of MoCo v2 vs MoCo v2 + FDA on transfer sets",
        section="5.5.4", kind="figure",
        needs="world (default) or --data cifar10; 2 MoCo trainings; transfer sets as table-5.2; ~2 min CPU (small)",
        claim=Claim("FDA improves MoCo v2's retrieval: more of the top-4 neighbours share the query's class "
                    "(Figure 5.4; precision@4 over all queries, mean over transfer sets)",
                    pairs=lambda rows: (mean_cell(rows, "precision@4 (all queries)", model=MOCO_V2),
                                        mean_cell(rows, "precision@4 (all queries)", model=MOCO_V2 + " + FDA")),
                    quantity="precision@4 %"))
def fig_5_4(ctx: RecipeContext) -> RecipeResult:
    """Figure 5.4: 5 test queries per transfer set, their 4 nearest training images by cosine similarity."""
    train, _ = _splits(ctx)
    targets = _transfer_targets(ctx)
    method = methods(ctx, ["moco"], ["moco"])[0]
    n_queries, k = int(option(ctx, "queries", 5)), 4
    encoders = {}
    for tag, fda in (("baseline", None), ("fda", {})):
        label = method_label(method) + (" + FDA" if fda is not None else "")
        encoders[label] = ctx.train(f"{method}-{tag}", source=train, **train_config(ctx, method, fda=fda))["backbone"]
    rows, figures = [], []
    for tname, (bank_src, query_src) in targets.items():
        q_idx = np.linspace(0, len(query_src) - 1, num=min(n_queries, len(query_src))).round().astype(int)
        panels = {}
        for e, (label, backbone) in enumerate(encoders.items()):
            feats = [load_embeddings(extract_features(backbone, src, ctx.out / f"retrieval/{tname}/{e}-{split}",
                                                      device=ctx.device, progress=ctx.progress, overwrite=True),
                                     mmap=False) for split, src in (("bank", bank_src), ("queries", query_src))]
            bank, queries = feats
            idx, _ = nearest_neighbours(queries.features, bank.features, k=k)
            rows.append({"model": label, "dataset": tname,
                         "precision@4 (all queries)": neighbour_precision(bank.labels[idx], queries.labels),
                         "precision@4 (shown queries)": neighbour_precision(bank.labels[idx[q_idx]],
                                                                            queries.labels[q_idx])})
            images = np.stack([[bank_src[int(bank.index[j])]["image"].numpy() for j in row] for row in idx[q_idx]])
            panels[label] = (images, bank.labels[idx[q_idx]])
        query_images = np.stack([query_src[int(i)]["image"].numpy() for i in q_idx])
        out = plot_retrieval_grid(query_images, panels, ctx.out / f"retrieval-{tname}.png",
                                  query_labels=np.asarray(query_src.labels)[q_idx],
                                  title=f"{tname}: top-{k} neighbours (green: same class)")
        figures.append(f"retrieval-{tname}.png")
        assert out["k"] == k
    return RecipeResult(rows=rows, figures=figures, protocol={"k": k, "queries_shown": int(n_queries),
                                                              "similarity": "cosine", "transfer_sets": list(targets)},
                        notes="precision@4: share of retrieved neighbours of the query's class, a number for what the "
                              "paper judges by eye")


#: Figure 5.2's hand-crafted augmentations, in the order they are added, as ViewConfig fields (on / off).
AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "random crop": {"crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3)},
    "horizontal flip": {"hflip_prob": 0.5},
    "colour jitter": {"jitter_prob": 0.8},
    "grayscale": {"gray_prob": 0.2},
    "gaussian blur": {"blur_prob": 0.5},
    "solarize": {"solarize_prob": 0.2},
}
NO_AUGMENTATION: dict[str, Any] = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "hflip_prob": 0.0,
                                   "jitter_prob": 0.0, "gray_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0}


def view_args(enabled: list[str], size: int) -> dict[str, Any]:
    """``TrainConfig.view_args`` with exactly the ``enabled`` augmentations on (blur sigma scaled to ``size``)."""
    args: dict[str, Any] = dict(NO_AUGMENTATION)
    for name in enabled:
        args.update(AUGMENTATIONS[name])
    # Table C.2's sigma 0.1-2.0 px at 224 px scales to nothing at 32 px (recipe_view drops blur below 96 px);
    # below 96 px use 0.1-1.0 px per 32 px of side so the blur is visible
    args["blur_sigma"] = (0.1 * size / 224, 2.0 * size / 224) if size >= 96 else (0.1 * size / 32, 1.0 * size / 32)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


@recipe("fig-5.2", title="Augmentation diversity: adding and removing each image augmentation",
        section="5.3", kind="figure",
        needs="world (default), --data cifar10 or pacs; 13 SSL trainings per method (--set augmentations=a,b for "
              "fewer); ~4 min CPU (small)",
        claim=Claim("All augmentations together beat every setting with one augmentation removed (Figure 5.2; "
                    "SimCLR, the best removal as control)",
                    pairs=lambda rows: (max(r["top-1"] for r in rows if r["method"] == "SimCLR"
                                            and r["panel"] == "removing"),
                                        [r["top-1"] for r in rows if r["method"] == "SimCLR"
                                         and r["panel"] == "adding"][-1]),
                    quantity="linear top-1 %"))
def fig_5_2(ctx: RecipeContext) -> RecipeResult:
    """Figure 5.2: linear probe top-1 as augmentations are added one by one, and with each one removed."""
    import torch

    train, test = _splits(ctx, **ctx.pick(SMALL_ABLATION_WORLD, {}))
    size = ctx.image_size
    names = option(ctx, "augmentations", list(AUGMENTATIONS))
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"option augmentations: unknown {unknown}; choose from {list(AUGMENTATIONS)}")
    setups = [("adding", "none", [])] + [("adding", "+ " + n, names[: i + 1]) for i, n in enumerate(names)]
    setups += [("removing", "- " + n, [m for m in names if m != n]) for n in names]
    rows, raw = [], {}
    chosen = methods(ctx, ["simclr"], ["simclr", "byol", "moco"])
    for method in chosen:
        for panel, label, enabled in setups:
            name = f"{method}-{panel}-{len(enabled)}-{label.strip('+- ').replace(' ', '_') or 'none'}"
            summary = ctx.train(name, source=train, **train_config(ctx, method, view_args=view_args(enabled, size),
                                                                    **ctx.pick(SMALL_ABLATION, {})))
            acc = _linear(ctx, summary, train, test, name)
            rows.append({"method": method_label(method), "panel": panel, "augmentations": label, "top-1": acc})
            raw.setdefault(method, {})[f"{panel}:{label}"] = acc
    plt = pyplot()
    fig = plt.figure(figsize=(12, 7))
    grid = fig.add_gridspec(2, len(names) + 1, height_ratios=[1, 1.6])
    image = next(iter(torch.utils.data.DataLoader(test, batch_size=1)))["image"]
    base = dict(size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for i, aug in enumerate(["original", *names]):
        cfg = ViewConfig(**base, **{k: v for k, v in NO_AUGMENTATION.items()})
        if aug != "original":
            on = {k: (1.0 if k.endswith("_prob") else v) for k, v in AUGMENTATIONS[aug].items()}
            cfg = ViewConfig(**{**base, **NO_AUGMENTATION, **on, "blur_sigma": (1.0 * size / 32, 1.0 * size / 32)})
        view = ViewPipeline(cfg)(image, torch.Generator().manual_seed(ctx.seed))
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(view[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(aug, fontsize=7)
        ax.axis("off")
    left, right = fig.add_subplot(grid[1, : (len(names) + 1) // 2]), fig.add_subplot(grid[1, (len(names) + 1) // 2:])
    for method in chosen:
        mine = [r for r in rows if r["method"] == method_label(method)]
        add = [r for r in mine if r["panel"] == "adding"]
        left.plot(range(len(add)), [r["top-1"] for r in add], marker="o", label=method_label(method))
        rem = [r for r in mine if r["panel"] == "removing"]
        full = add[-1]["top-1"]
        right.plot(range(len(rem) + 1), [full] + [r["top-1"] for r in rem], marker="s", label=method_label(method))
    left.set_xticks(range(len(setups) - len(names)), [s[1] for s in setups[: len(names) + 1]], rotation=35,
                    fontsize=7, ha="right")
    right.set_xticks(range(len(names) + 1), ["all"] + [s[1] for s in setups[len(names) + 1:]], rotation=35,
                     fontsize=7, ha="right")
    for ax, title in ((left, "adding augmentations"), (right, "removing one augmentation")):
        ax.set_ylabel("linear probe top-1 (%)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    control = random_init_top1(ctx, train, test, **train_config(ctx, chosen[0], **ctx.pick(SMALL_ABLATION, {})))
    rows.append({"method": RANDOM_INIT, "panel": "", "augmentations": "", "top-1": control})
    return RecipeResult(rows=rows, figures=[save_figure(fig, ctx.out / "fig-5.2.png")],
                        protocol={"results": raw, "view_args": {label: view_args(en, size) for _, label, en in setups}},
                        notes="augmentations switched through TrainConfig.view_args on every view (the method's own "
                              "per-view asymmetries are overridden); below 96 px the blur sigma is 0.1-1.0 px per 32 "
                              "px of image side")


#: Table 5.3's view kinds (replens.augment.VIEW_KINDS) and the paper's labels.
TABLE_5_3_VIEWS: dict[str, str] = {"raw": "x", "image-aug": "A_im(x)", "fda": "F^-1(A_freq(f))",
                                   "fda+image-aug": "A_im(F^-1(A_freq(f)))"}


def _random_init_row(ctx: RecipeContext, train: Any, test: Any, columns: list[str]) -> dict[str, Any]:
    """The random-init control row of a view table: the untrained SimCLR encoder's linear top-1 in the first
    column, the other columns empty."""
    acc = random_init_top1(ctx, train, test, **train_config(ctx, "simclr"))
    return {"right view": RANDOM_INIT, **{c: (acc if i == 0 else "") for i, c in enumerate(columns)}}


def _view_pair_run(ctx: RecipeContext, train: Any, test: Any, name: str, method: str, **cfg: Any) -> float:
    summary = ctx.train(name, source=train, **train_config(ctx, method, **cfg, **ctx.pick(SMALL_ABLATION, {})))
    return _linear(ctx, summary, train, test, name)


@recipe("table-5.3", title="Disentangling FDA and image augmentations: SimCLR with every pair of view kinds",
        section="5.6", kind="table", needs="world (default), --data cifar10 or pacs; 10 SimCLR trainings; ~3 min CPU (small)",
        claim=Claim("FDA + image augmentations on one view and image augmentations on the other beat image "
                    "augmentations on both views (Table 5.3)",
                    pairs=lambda rows: (cell(rows, TABLE_5_3_VIEWS["image-aug"], **{"right view": "A_im(x)"}),
                                        cell(rows, TABLE_5_3_VIEWS["fda+image-aug"], **{"right view": "A_im(x)"})),
                    quantity="linear top-1 %"))
def table_5_3(ctx: RecipeContext) -> RecipeResult:
    """Table 5.3: the upper triangle of (left view, right view) kinds, single-encoder SimCLR."""
    train, test = _splits(ctx, **ctx.pick(SMALL_ABLATION_WORLD, {}))
    kinds = option(ctx, "views", list(TABLE_5_3_VIEWS))
    unknown = [k for k in kinds if k not in TABLE_5_3_VIEWS]
    if unknown:
        raise ValueError(f"option views: unknown view kinds {unknown}; choose from {list(TABLE_5_3_VIEWS)}")
    rows, raw = [], {}
    for j, right in enumerate(kinds):
        row: dict[str, Any] = {"right view": TABLE_5_3_VIEWS[right]}
        for i, left in enumerate(kinds):
            if i < j:
                row[TABLE_5_3_VIEWS[left]] = ""
                continue
            acc = _view_pair_run(ctx, train, test, f"{left}__{right}", "simclr",
                                 fda={"left_view": left, "right_view": right})
            row[TABLE_5_3_VIEWS[left]] = acc
            raw[f"{left} | {right}"] = acc
        rows.append(row)
    rows.append(_random_init_row(ctx, train, test, [TABLE_5_3_VIEWS[k] for k in kinds]))
    return RecipeResult(rows=rows, protocol={"results": raw, "method": "simclr + fda plug-in (left_view, right_view)"},
                        notes="columns: left view, rows: right view (upper triangle: swapping views is the same "
                              "objective); cells: linear probe top-1 %; the random-init row probes the untrained "
                              "encoder (first column only)")


@recipe("table-5.4", title="Sequence of augmentations: FDA before vs after the image augmentations",
        section="5.6", kind="table", needs="world (default), --data cifar10 or pacs; 2 SimCLR trainings; ~1 min CPU (small)",
        no_claim="the paper reports comparable numbers for the two orders (no direction to test); both are in "
                 "the row and their difference is not judged")
def table_5_4(ctx: RecipeContext) -> RecipeResult:
    """Table 5.4: left view FDA then image augmentations (Figure 5.1) vs image augmentations then FDA."""
    train, test = _splits(ctx, **ctx.pick(SMALL_ABLATION_WORLD, {}))
    row: dict[str, Any] = {"right view": "A_im(x)"}
    raw = {}
    for left, label in (("fda+image-aug", "A_im(F^-1(A_freq(f)))"), ("image-aug+fda", "F^-1(A_freq(F(A_im(x))))")):
        row[label] = raw[left] = _view_pair_run(ctx, train, test, left, "simclr",
                                                fda={"left_view": left, "right_view": "image-aug"})
    control = _random_init_row(ctx, train, test, [k for k in row if k != "right view"])
    return RecipeResult(rows=[row, control], protocol={"results": raw},
                        notes="cells: linear probe top-1 % (SimCLR); the random-init row probes the untrained encoder")


#: Table 5.5: right views of the dual encoder (frequency encoder) and left views (image encoder).
TABLE_5_5_RIGHT: dict[str, str] = {"raw": "x", "freq": "f", "freq-aug": "A_freq(f)", "image-aug+freq": "F(A_im(x))"}
TABLE_5_5_LEFT: dict[str, str] = {"raw": "x", "image-aug": "A_im(x)"}


@recipe("table-5.5", title="Disentangling the format transform: dual encoder (image vs frequency views)",
        section="5.6.1", kind="table", needs="world (default), --data cifar10 or pacs; 8 trainings; ~3 min CPU (small)",
        claim=Claim("Contrasting the unaugmented image with its frequency view (dual encoder, x / f) beats two raw "
                    "image views (single encoder, x / x) (Table 5.5: 1.5 -> 17.5)",
                    pairs=lambda rows: (cell(rows, "x", **{"right view": "x"}), cell(rows, "x", **{"right view": "f"})),
                    quantity="linear top-1 %"))
def table_5_5(ctx: RecipeContext) -> RecipeResult:
    """Table 5.5: the first row is single-encoder SimCLR with image views; the others the dual encoder."""
    train, test = _splits(ctx, **ctx.pick(SMALL_ABLATION_WORLD, {}))
    rows, raw = [], {}
    for right, right_label in TABLE_5_5_RIGHT.items():
        row: dict[str, Any] = {"right view": right_label}
        for left, left_label in TABLE_5_5_LEFT.items():
            name = f"{left}__{right}"
            if right == "raw":  # single encoder, both views images
                acc = _view_pair_run(ctx, train, test, name, "simclr", fda={"left_view": left, "right_view": right})
            else:
                acc = _view_pair_run(ctx, train, test, name, "dual_encoder",
                                     method_args={"left_view": left, "right_view": right})
            row[left_label] = raw[name] = acc
        rows.append(row)
    rows.append(_random_init_row(ctx, train, test, list(TABLE_5_5_LEFT.values())))
    return RecipeResult(rows=rows, protocol={"results": raw, "single_encoder_row": "x (SimCLR + fda plug-in views)",
                                             "dual_encoder": "replens.ssl.dual_encoder (image encoder probed)"},
                        notes="columns: left (image-encoder) view; rows: right view; cells: linear probe top-1 % of "
                              "the image encoder; the random-init row probes the untrained image encoder")


@recipe("fig-5.3", title="Fourier Domain Augmentations: each operation at several strengths",
        section="5.4", kind="figure", needs="world (default) or any data spec; no training; seconds",
        no_claim="an illustration of each FDA operation at several strengths; no training, nothing compared")
def fig_5_3(ctx: RecipeContext) -> RecipeResult:
    """Figure 5.3 (:func:`replens.augment.fourier_preview.fda_preview`); rows: the mean absolute pixel change at
    Table C.2's strengths."""
    spec = ctx.data if ctx.data is not None else f"world:{ctx.world()}?split=test"
    if data_kind(ctx) == "cifar10":
        spec = spec.replace("{split}", "test")
    png = ctx.out / "preview" / "fig-5.3.png"
    preview = fda_preview(spec, images=int(option(ctx, "images", 3)), size=ctx.image_size, seed=ctx.seed,
                          progress=ctx.progress)
    preview.save(png)
    changes = preview.mean_abs_change
    rows = []
    for op, levels in STRENGTHS.items():  # in the order of the grid's columns
        for label, _ in levels:
            key = label.rstrip("*")
            rows.append({"operation": op, "strength": key + (" (Table C.2)" if label.endswith("*") else ""),
                         "mean |change|": changes[op][key]})
    for op, value in changes.items():
        if not isinstance(value, dict):
            rows.append({"operation": op, "strength": "Table C.2", "mean |change|": value})
    return RecipeResult(rows=rows, figures=[str(png.relative_to(ctx.out))],
                        notes="mean absolute pixel change (images in [0, 1]) of each operation applied with "
                              "probability 1; the grid marks Table C.2's strength with *")
