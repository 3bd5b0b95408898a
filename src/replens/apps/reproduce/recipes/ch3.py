"""Chapter 3 (Q-Score): discriminative features, Q-Score, regularisation and saliency.

Every recipe here (and in ``appa.py``, ``ch4.py`` and ``appb.py``, which
import the helpers below) works on one setting so that encoders are trained
once and shared: the world of the budget with the class tied to a coloured
corner patch in 70% of the training scenes (``spurious=0.7``; the test split
keeps the patch independent of the class), or the user's ``--data``.

* Encoders come from :func:`encoder` (``replens.engine.train`` through
  ``RecipeContext.train``), cached under ``cache_dir/reproduce-models`` keyed
  by the full TrainConfig and the data, so Table 3.1, Figures 3.3-3.7 and
  the appendices reuse one SimCLR baseline.
* Q-Score fine-tuning (:func:`finetune`) follows section 3.4.1: the baseline's
  discriminative features (from its training split) fix ``D``, then the
  ``qscore_reg`` plug-in (Eq. 3.3, lambda1 = lambda2 = 1e-4) or the
  ``lasso_reg`` plug-in further trains it at a low learning rate; a
  continuation without any plug-in is the control.
* :func:`assess` embeds both splits and runs
  :func:`replens.quality.analysis.assess_quality` (``D`` from the training
  split, linear probe on the training split, correctness on the test split).

``eps`` is 4 (the paper's, for r = 2048) at the paper budget and 2 at the small
budget, whose encoders have r = 256.

Options (``--set KEY=VALUE``): ``methods`` (comma list of SSL methods of the
multi-method recipes), ``eps``, ``fractions`` and ``subsets`` (compression
curves), ``saliency_images`` (Figure 3.7), ``encoders`` (Figures 3.2 and 3.4).

``encoders`` (Figures 3.2 and 3.4 only): ``ssl`` trains the SSL baselines as
everywhere else; a comma list of supervised CIFAR-10 checkpoints
(``cifar10_resnet20``, ``cifar10_resnet56``: the files ``ROOT/weights/<name>.th``
of ``--data cifar10[:ROOT]``, or paths to such files) assesses those instead,
with nothing trained (:func:`checkpoint_encoder`). Default: with ``--data
cifar10`` the checkpoints present in ``ROOT/weights``, else ``ssl``. The
checkpoints are supervised encoders, a stand-in for the paper's SSL encoders;
a checkpoint has no seeds, so its run is one run and Figure 3.4's claim is
judged by a bootstrap over its test samples (``RecipeResult.samples``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replens.apps.reproduce.helpers import RANDOM_INIT, data_kind, option, random_init_backbone, real_limit
from replens.apps.reproduce.helpers import methods as pick_methods
from replens.apps.reproduce.registry import RecipeContext, RecipeResult, recipe
from replens.apps.reproduce.verdict import Claim, between, cell, mean_cell
from replens.data import open_source
from replens.data.compose import limit_source
from replens.ddm.diagnostics import stratified_split
from replens.evaluate.probe import evaluate_representations
from replens.explain.gradcam import group_cams
from replens.models import create_backbone, extract_features
from replens.models.features import load_embeddings
from replens.models.weights import save_checkpoint
from replens.quality import compression_curve
from replens.quality.analysis import (
    activation_bands,
    assess_quality,
    class_activation_share,
    class_feature_means,
    normalized,
)
from replens.quality.plots import (
    cam_overlay,
    plot_activation_bands,
    plot_cam_grid,
    plot_class_heatmaps,
    plot_compression,
    plot_grouped_bars,
    plot_pr,
    plot_roc,
)
from replens.quality.saliency import discriminative_cams, heat_iou, saliency_iou
from replens.runs import atomic_write_json

#: World overrides shared by every recipe of chapters 3-4 and appendices A-B.
WORLD: dict[str, Any] = {"spurious": 0.7}

#: The paper's SSL baselines (section 3.4.1) and the subset run at the small budget.
PAPER_METHODS: tuple[str, ...] = ("simclr", "swav", "moco", "byol", "dino", "simsiam", "vicreg", "barlow_twins")
SMALL_METHODS: tuple[str, ...] = ("simclr", "byol")

#: Further training of a pre-trained encoder (section 3.4.1: LARS, lr 1e-5, 50 epochs).
FINETUNE: dict[str, dict[str, Any]] = {
    "small": {"epochs": 2, "lr": 2e-4, "warmup_epochs": 0.0},
    "paper": {"epochs": 50, "lr": 1e-5, "optimizer": "lars", "warmup_epochs": 5},
}
#: Supervised reference encoders (appendix A.7; ``method="supervised"``): the budget's optimiser settings.
SUPERVISED: dict[str, dict[str, Any]] = {
    "small": {"lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 0.0, "view_args": {"crop_scale": [1.0, 1.0]}},
    "paper": {"epochs": 90, "batch_size": 256, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 5e-2,
              "warmup_epochs": 0.0},
}
#: l2 radius of the robust encoder's PGD training, pixels in [0, 1] (small, paper budget).
ROBUST_EPS: tuple[float, float] = (0.25, 3.0)
#: Regularisation weights of Eq. 3.3 (section 3.4.1) and of the lasso baseline.
LAMBDAS: tuple[float, float] = (1e-4, 1e-4)
LASSO_WEIGHT = 1e-4
#: Kept fractions of r and random subsets per size of the compression curves (Figures 3.2, A.5, A.7).
COMPRESSION: dict[str, dict[str, Any]] = {
    "small": {"fractions": (0.1, 0.25, 0.45, 0.6, 0.8), "subsets": 4},
    "paper": {"fractions": (0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9), "subsets": 4},
}

_NAMES = {"simclr": "SimCLR", "swav": "SwaV", "moco": "MoCo", "byol": "BYOL", "dino": "DINO", "simsiam": "SimSiam",
          "vicreg": "VICReg", "barlow_twins": "Barlow", "supervised": "Supervised", "robust": "Robust"}


def display(method: str) -> str:
    """The paper's name of a method (``barlow_twins`` -> ``Barlow``)."""
    return _NAMES.get(method, method)


def eps_of(ctx: RecipeContext) -> float:
    """``epsilon`` of ``L_i`` (option ``eps``): 2 at the small budget (r = 256), the paper's 4 at the paper budget."""
    return float(option(ctx, "eps", ctx.pick(2.0, 4.0)))


def methods_of(ctx: RecipeContext, paper: Sequence[str] = PAPER_METHODS) -> list[str]:
    """The SSL methods a multi-method recipe runs at this budget (option ``methods``)."""
    return pick_methods(ctx, SMALL_METHODS, paper)


# --------------------------------------------------------------------------- encoders
@dataclass
class Encoder:
    """A trained encoder and where its cached files live.

    Attributes:
        name: Training name (``simclr``, ``simclr-qscore``, ...).
        backbone: The encoder (eval mode).
        folder: Its cache folder (weights, embeddings, feature sets).
        weights: The backbone weights file.
        config: Its TrainConfig fields (a checkpoint's: method, backbone, checkpoint).
        sources: ``{"train": ..., "test": ...}`` ImageSources it is assessed on (None: the shared setting's
            splits); a checkpoint's limited subsets of ``--data``.
    """

    name: str
    backbone: Any
    folder: Path
    weights: Path
    config: dict[str, Any]
    sources: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        return str(self.config.get("method", self.name))


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def data_key(ctx: RecipeContext, world: dict[str, Any] | None = None) -> str:
    """What the encoders are trained on: the ``--data`` spec or the cached world folder."""
    return ctx.data if ctx.data is not None else str(ctx.world(**(WORLD if world is None else world)))


def train_source(ctx: RecipeContext, split: str = "train") -> Any:
    """A split of the shared setting (``--data`` or the world with :data:`WORLD`)."""
    return ctx.source(split, **WORLD)


def _cached_training(ctx: RecipeContext, name: str, payload: dict[str, Any]) -> tuple[Path, dict[str, Any] | None]:
    folder = ctx.cache_dir / "reproduce-models" / f"{name}-{_key(payload)}"
    info_path = folder / "training.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    return folder, info


def _forget_derived(folder: Path) -> None:
    """Delete embeddings and feature sets of a cache folder whose encoder is about to be (re)trained."""
    import shutil

    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith("embeddings-"):
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith("feature_sets-"):
                path.unlink(missing_ok=True)


def encoder(ctx: RecipeContext, name: str, **train_overrides: Any) -> Encoder:
    """An SSL encoder trained by ``ctx.train`` on the shared setting, cached by its config and data.

    Args:
        ctx: The recipe context.
        name: Training name, e.g. ``"simclr"`` or ``"simclr-qscore"``.
        **train_overrides: TrainConfig fields over the budget defaults (``method`` at least).
    """
    cfg = dataclasses.asdict(ctx.train_config(**train_overrides))
    payload = {k: v for k, v in cfg.items() if k not in ("log_every", "tensorboard", "checkpoint_every")}
    payload["data"] = data_key(ctx)
    folder, info = _cached_training(ctx, name, payload)
    weights = folder / name / "backbone.safetensors"
    if info is None or not weights.is_file():
        _forget_derived(folder)
        sub = dataclasses.replace(ctx, out=folder, trainings={})
        sub.train(name, source=train_source(ctx), **train_overrides)
        info = sub.trainings[name]
        atomic_write_json(folder / "training.json", info)
    ctx.trainings[name] = {**info, "cache": str(folder)}
    backbone = create_backbone(cfg["backbone"], weights=weights, **cfg["backbone_args"]).eval()
    return Encoder(name, backbone, folder, weights, cfg)


def random_encoder(ctx: RecipeContext, method: str = "simclr") -> Encoder:
    """The untrained encoder of ``method``'s architecture (initialised with ``ctx.seed``): the random-init
    control of accuracy tables, cached like :func:`encoder` so :func:`assess` treats it like the others."""
    cfg = dataclasses.asdict(ctx.train_config(method=method))
    payload = {"random_init": True, "backbone": cfg["backbone"], "backbone_args": cfg["backbone_args"],
               "image_size": cfg["image_size"], "seed": ctx.seed, "data": data_key(ctx)}
    folder = ctx.cache_dir / "reproduce-models" / f"random-init-{_key(payload)}"
    weights = folder / "random-init" / "backbone.safetensors"
    if not weights.is_file():
        _forget_derived(folder)
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(weights, random_init_backbone(ctx, method=method), {"random_init": True, "seed": ctx.seed})
    backbone = create_backbone(cfg["backbone"], weights=weights, **cfg["backbone_args"]).eval()
    return Encoder("random-init", backbone, folder, weights, cfg)


def baseline(ctx: RecipeContext, method: str = "simclr") -> Encoder:
    """The pre-trained SSL encoder of ``method`` at this budget."""
    return encoder(ctx, method, method=method)


def baseline_encoders(ctx: RecipeContext, methods: Sequence[str]) -> list[tuple[str, Encoder]]:
    """``(paper name, baseline encoder)`` of each method (e.g. ``("SimCLR", baseline(ctx, "simclr"))``)."""
    return [(display(m), baseline(ctx, m)) for m in methods]


def supervised(ctx: RecipeContext, robust: bool = False) -> Encoder:
    """A supervised (or l2-robust) reference encoder of the budget's backbone (appendix A.7).

    Trained by ``ctx.train`` with the ``supervised`` method (``replens.ssl.supervised``: a linear head,
    cross-entropy, l2 PGD adversarial training of radius :data:`ROBUST_EPS` when ``robust``) on the
    shared setting's training split; cached like :func:`encoder`. At the small budget the view is
    flips only, at the paper budget the standard random resized crop and flip.
    """
    eps = ctx.pick(*ROBUST_EPS) if robust else 0.0
    return encoder(ctx, "robust" if robust else "supervised", **SUPERVISED[ctx.budget],
                   method="supervised", method_args={"adversarial_eps": eps})


#: Supervised CIFAR-10 checkpoints of the shared data (``ROOT/weights/<name>.th`` of ``--data cifar10[:ROOT]``),
#: names of option ``encoders``.
CHECKPOINTS: tuple[str, ...] = ("cifar10_resnet20", "cifar10_resnet56")
#: Value of option ``encoders`` that trains the SSL baselines.
SSL_ENCODERS = "ssl"
#: Suffixes of a checkpoint given as a path in option ``encoders``.
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".th", ".pt", ".pth", ".safetensors")


def checkpoint_dir(ctx: RecipeContext) -> Path | None:
    """``ROOT/weights`` of ``--data cifar10[:ROOT]`` (where the shared checkpoints lie); None for other data."""
    if ctx.data is None or data_kind(ctx) != "cifar10":
        return None
    match = re.match(r"^wds:(.+)/cifar10/", ctx.data)
    return Path(match.group(1)) / "weights" if match else None


def encoder_choice(ctx: RecipeContext) -> list[str]:
    """Option ``encoders``: ``["ssl"]`` (train the SSL baselines) or checkpoint names / paths.

    Default: with ``--data cifar10`` the :data:`CHECKPOINTS` present in :func:`checkpoint_dir`, else ``ssl``.
    """
    folder = checkpoint_dir(ctx)
    present = [n for n in CHECKPOINTS if folder is not None and (folder / f"{n}.th").is_file()]
    chosen = option(ctx, "encoders", present or [SSL_ENCODERS])
    if SSL_ENCODERS in chosen and len(chosen) > 1:
        raise ValueError(f"option encoders: 'ssl' cannot be mixed with checkpoints, got {','.join(chosen)}")
    return list(chosen)


def checkpoint_path(ctx: RecipeContext, entry: str) -> Path:
    """The file of a checkpoint named in option ``encoders`` (a :data:`CHECKPOINTS` name or a path).

    Raises:
        ValueError: An unknown name, or a name without ``--data cifar10``.
        FileNotFoundError: The file is missing (its path named).
    """
    if entry.endswith(CHECKPOINT_SUFFIXES):
        path = Path(entry)
    elif entry not in CHECKPOINTS:
        raise ValueError(f"option encoders: unknown encoder {entry!r}; give {SSL_ENCODERS!r}, one of "
                         f"{', '.join(CHECKPOINTS)} or a checkpoint file ({'/'.join(CHECKPOINT_SUFFIXES)})")
    elif (folder := checkpoint_dir(ctx)) is None:
        raise ValueError(f"option encoders={entry} needs --data cifar10[:ROOT] (checkpoints in ROOT/weights), "
                         f"got --data {ctx.data}")
    else:
        path = folder / f"{entry}.th"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (option encoders={entry})")
    return path


def checkpoint_splits(ctx: RecipeContext, image_size: int) -> dict[str, Any]:
    """``--data``'s train and test splits for a checkpoint, limited at the small budget like the other real-data
    recipes (:func:`~replens.apps.reproduce.helpers.real_limit` training images, half as many test images)."""
    if ctx.data is None:
        raise ValueError("option encoders with checkpoints needs --data (e.g. --data cifar10), not the world")
    train = open_source(ctx.data, split="train", image_size=image_size)
    test = open_source(ctx.data, split="test", image_size=image_size)
    cap = real_limit(ctx)
    if cap:
        train, test = limit_source(train, cap, seed=ctx.data_seed), limit_source(test, cap // 2, seed=ctx.data_seed + 1)
    return {"train": train, "test": test}


def checkpoint_encoder(ctx: RecipeContext, entry: str) -> tuple[str, Encoder]:
    """A supervised CIFAR ResNet checkpoint as an :class:`Encoder` (nothing trained): ``(label, encoder)``.

    The architecture follows the file name (``resnet20`` -> ``cifar_resnet20``); embeddings and feature sets
    are cached in ``cache_dir/reproduce-models/<stem>-<key>``, keyed by the file's bytes, the data, the
    limit and ``data_seed``.

    Raises:
        ValueError: A file name without ``resnet<depth>``; see also :func:`checkpoint_path`.
    """
    path = checkpoint_path(ctx, entry)
    depth = re.search(r"resnet(\d+)", path.name.lower())
    if depth is None:
        raise ValueError(f"checkpoint {path}: name the CIFAR ResNet depth in the file name (e.g. resnet20)")
    arch = f"cifar_resnet{depth.group(1)}"
    backbone = create_backbone(arch, weights=path).eval()
    size = int(getattr(backbone, "input_size", 32) or 32)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    payload = {"checkpoint": digest, "backbone": arch, "data": ctx.data, "limit": real_limit(ctx),
               "data_seed": ctx.data_seed, "image_size": size}
    stem = path.name.split(".")[0]
    folder = ctx.cache_dir / "reproduce-models" / f"{stem}-{_key(payload)}"
    config = {"method": "supervised", "backbone": arch, "checkpoint": str(path), "sha256": digest}
    enc = Encoder(stem, backbone, folder, path, config, sources=checkpoint_splits(ctx, size))
    return f"ResNet-{depth.group(1)} (supervised)", enc


def qscore_encoders(ctx: RecipeContext, small: Sequence[str], paper: Sequence[str]
                    ) -> tuple[list[tuple[str, Encoder]], dict[str, Any]]:
    """The encoders of Figures 3.2 and 3.4 (option ``encoders``) and their protocol entries.

    ``ssl``: the SSL baselines of ``small`` / ``paper`` methods (option ``methods``); checkpoints:
    :func:`checkpoint_encoder` of each, labelled ``ResNet-20 (supervised)``, ...
    """
    chosen = encoder_choice(ctx)
    if chosen == [SSL_ENCODERS]:
        methods = pick_methods(ctx, small, paper)
        return baseline_encoders(ctx, methods), {"methods": methods}
    encoders = [checkpoint_encoder(ctx, entry) for entry in chosen]
    first = encoders[0][1].sources
    return encoders, {
        "encoders": [label for label, _ in encoders],
        "checkpoints": [enc.config["checkpoint"] for _, enc in encoders],
        "encoder_kind": "supervised CIFAR-10 checkpoints (cross-entropy, labels), a stand-in for the paper's "
                        "SSL encoders; nothing trained",
        "train_images": len(first["train"]), "test_images": len(first["test"]),  # type: ignore[index]
    }


def feature_sets_file(ctx: RecipeContext, enc: Encoder) -> Path:
    """``feature_sets.json`` of an encoder's training split (``D`` for Q-Score fine-tuning)."""
    path = enc.folder / f"feature_sets-eps{eps_of(ctx):g}.json"
    if not path.is_file():
        atomic_write_json(path, assess(ctx, enc).train.feature_sets())
    return path


def finetune(ctx: RecipeContext, base: Encoder, kind: str, lambdas: tuple[float, float] = LAMBDAS) -> Encoder:
    """Further-train a baseline: ``"qscore"`` (Eq. 3.3), ``"lasso"`` or ``"continued"`` (no regulariser).

    Section 3.4.1: the baseline's discriminative features fix ``D``; the
    learning rate is low (budget values in :data:`FINETUNE`).
    """
    overrides: dict[str, Any] = {"method": base.method, "init_from": str(base.weights), **FINETUNE[ctx.budget]}
    name = f"{base.name}-{kind}"
    if kind == "qscore":
        overrides["plugins"] = ["qscore_reg"]
        overrides["plugin_args"] = {"qscore_reg": {"lambda1": lambdas[0], "lambda2": lambdas[1], "eps": eps_of(ctx),
                                                   "features": str(feature_sets_file(ctx, base))}}
        if tuple(lambdas) != LAMBDAS:
            name = f"{name}-{lambdas[0]:g}-{lambdas[1]:g}"
    elif kind == "lasso":
        overrides["plugins"] = ["lasso_reg"]
        overrides["plugin_args"] = {"lasso_reg": {"weight": LASSO_WEIGHT}}
    elif kind != "continued":
        raise ValueError(f"fine-tuning kind must be qscore, lasso or continued, got {kind!r}")
    return encoder(ctx, name, **overrides)


# --------------------------------------------------------------------------- assessments
_ASSESSED: dict[tuple[str, ...], Any] = {}


def embeddings(ctx: RecipeContext, enc: Encoder, split: str, *, spec: str | None = None, tag: str = "") -> Path:
    """The encoder's representations of a split, written once into its cache folder (resumable).

    The split comes from ``enc.sources`` when the encoder has its own (a checkpoint) and no ``spec`` is given.
    """
    own = enc.sources is not None and spec is None
    source = enc.sources[split] if own else ctx.source(split, spec=spec, **WORLD)  # type: ignore[index]
    folder = enc.folder / f"embeddings-{tag}{split}"
    return extract_features(enc.backbone, source, folder, normalize=False, device=ctx.device,
                            progress=ctx.progress, batch_size=256)


def assess(ctx: RecipeContext, enc: Encoder, *, spec: str | None = None, tag: str = "") -> Any:
    """Q-Score and probe outcome of an encoder on the shared setting (or on ``spec``'s splits).

    Memoised per process (keyed by the weights file, its modification time, the data and ``eps``).
    """
    key = (str(enc.weights), str(enc.weights.stat().st_mtime_ns), str(enc.folder), tag, str(spec),
           str(eps_of(ctx)))
    if key not in _ASSESSED:
        train_dir = embeddings(ctx, enc, "train", spec=spec, tag=tag)
        test_dir = embeddings(ctx, enc, "test", spec=spec, tag=tag)
        _ASSESSED[key] = assess_quality(train_dir, test_dir, eps=eps_of(ctx), seed=ctx.seed, device=ctx.device,
                                        spill_dir=enc.folder)
    return _ASSESSED[key]


#: Share of the training split held out as the validation split of hyper-parameter selections.
VALIDATION_FRACTION = 0.2


def validation_top1(ctx: RecipeContext, enc: Encoder, fraction: float = VALIDATION_FRACTION) -> float:
    """Linear-probe top-1 % on a validation split carved from the training split (never the test split).

    ``fraction`` of the training rows, stratified by class and drawn with ``ctx.data_seed`` (the same rows
    for every candidate and run), are held out; the probe of the fixed protocol is fitted on the rest.
    Selections (Figure A.8's lambdas) use this number; the reported numbers stay on the test split.
    """
    emb = load_embeddings(embeddings(ctx, enc, "train"))
    labels = np.asarray(emb.labels)
    fit, val = stratified_split(labels, np.zeros_like(labels), fraction, ctx.data_seed)
    features = np.asarray(emb.features, dtype=np.float32)
    report = evaluate_representations(features[fit], labels[fit], features[val], labels[val], device=ctx.device)
    return float(report["linear"]["top1"])  # type: ignore[index]


def test_images(ctx: RecipeContext, qa: Any, rows: Sequence[int], spec: str | None = None) -> Any:
    """uint8 (B, 3, H, W) test images of assessment rows (and the source they come from)."""
    import torch

    source = ctx.source("test", spec=spec, **WORLD)
    positions = qa.test_chunks.index[np.asarray(rows, dtype=np.int64)]
    return torch.stack([source[int(i)]["image"] for i in positions]), source, positions


def seeded_pick(ctx: RecipeContext, candidates: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` of ``candidates`` chosen with the context's seed (sorted)."""
    candidates = np.asarray(candidates)
    if len(candidates) <= k:
        return np.sort(candidates)
    return np.sort(np.random.default_rng(ctx.seed).choice(candidates, size=k, replace=False))


def class_names(ctx: RecipeContext) -> list[str]:
    """Class names of the shared setting."""
    return list(train_source(ctx).classes)


def core_iou(source: Any, cam: np.ndarray, position: int) -> float:
    """Heat IoU of a heatmap with the image's core mask (NaN for data without masks, e.g. CIFAR-10)."""
    return heat_iou(cam, source.core_mask(int(position))) if hasattr(source, "core_mask") else float("nan")


def _pct(x: float) -> float:
    return round(float(x), 2)


# --------------------------------------------------------------------------- Figure 3.1
@recipe("fig-3.1", title="Percentage of highly activating samples A_j, its tails and the discriminative band",
        section="3.3.1", kind="figure",
        needs="world (default) or --data; one SimCLR training; ~1 min CPU",
        no_claim="a distribution of A_j with examples of its parts; it compares no two settings")
def fig_3_1(ctx: RecipeContext) -> RecipeResult:
    """Figure 3.1: ``A_j`` in ascending order, its lower tail, discriminative band (50-95th) and upper tail.

    Rows: per part, its features, mean ``A_j`` and how class-specific its
    features are (the largest share of one class's samples a feature
    activates: the paper's bars show > 80%). Figures: the curve with an example
    feature of each part and its per-class bars, and Grad-CAM heatmaps of each
    example on its top activating images.
    """
    import torch

    enc = baseline(ctx, "simclr")
    qa = assess(ctx, enc)
    bands = activation_bands(qa.train.percentages)
    rows_fit = qa.fit_rows
    train_x = qa.train_chunks.rows(rows_fit)
    labels = qa.train_chunks.labels[rows_fit]
    share = class_activation_share(train_x, labels, eps_of(ctx), num_classes=len(class_names(ctx)))
    top_share = share.max(axis=1)
    rows = []
    examples: dict[int, np.ndarray] = {}
    for part, feats in bands.items():
        active = feats[qa.train.percentages[feats] > 0]
        rows.append({
            "part": part,
            "features": int(len(feats)),
            "mean_A_pct": _pct(qa.train.percentages[feats].mean()) if len(feats) else float("nan"),
            "median_top_class_share_pct": _pct(np.median(top_share[active])) if len(active) else float("nan"),
            "features_over_80pct_of_a_class": int((top_share[feats] > 80).sum()),
        })
        if len(active):
            examples[int(active[np.argmax(top_share[active])])] = share[int(active[np.argmax(top_share[active])])]
    names = class_names(ctx)
    figures = [str(plot_activation_bands(qa.train.percentages, bands, ctx.out / "activation.png",
                                         class_share=examples, class_names=names,
                                         title=f"SimCLR ({enc.config['backbone']}), eps={eps_of(ctx):g}").name)]
    grid = []
    source = train_source(ctx)
    h = normalized(train_x)
    for feature in examples:
        top = rows_fit[np.argsort(-h[:, feature], kind="stable")[:4]]
        positions = qa.train_chunks.index[top]
        images = torch.stack([source[int(i)]["image"] for i in positions])
        cams = group_cams(enc.backbone, images, [feature])
        part = next(p for p, f in bands.items() if feature in set(f.tolist()))
        grid.append({"label": f"feature {feature}\n{part}",
                     "panels": [(names[int(source.labels[int(i)])], cam_overlay(img.numpy(), cam))
                                for i, img, cam in zip(positions, images, cams, strict=True)]})
    if grid:
        figures.append(str(plot_cam_grid(grid, ctx.out / "heatmaps.png",
                                         title="Grad-CAM of example features on their top activating images").name))
    return RecipeResult(
        rows=rows, figures=figures,
        protocol={"model": enc.name, "backbone": enc.config["backbone"], "eps": eps_of(ctx), "band": [50, 95],
                  "train_samples": int(len(rows_fit)), "examples": list(examples)},
        notes="A_j from the training split; class shares from the probe's training rows.",
    )


# --------------------------------------------------------------------------- Figure 3.2 (and A.5, A.7)
def compression_settings(ctx: RecipeContext) -> dict[str, Any]:
    """Kept fractions and random subsets per size of the compression curves (options ``fractions``, ``subsets``)."""
    return {"fractions": [float(f) for f in option(ctx, "fractions", list(COMPRESSION[ctx.budget]["fractions"]))],
            "subsets": int(option(ctx, "subsets", COMPRESSION[ctx.budget]["subsets"]))}


def compression_rows(ctx: RecipeContext, encoders: Sequence[tuple[str, Encoder]], stem: str
                     ) -> tuple[list[dict], list[str], dict[str, np.ndarray]]:
    """Probe accuracy of discriminative / random / PCA / tail subsets of matched sizes, per ``(label, encoder)``
    (SSL baselines, :func:`baseline_encoders`, or checkpoints); one figure ``<stem>-<encoder name>.png`` each.

    Also returns the first encoder's per-sample correctness (:func:`first_subsets_vs_random` reads it):
    ``{"discriminative": (M, sizes) bool, "random": (M, sizes) float}`` (random: the share of the random
    subsets of that size that classify the sample correctly).
    """
    settings = compression_settings(ctx)
    rows, figures, samples = [], [], {}
    for label, enc in encoders:
        qa = assess(ctx, enc)
        fit = qa.fit_rows
        curve = compression_curve(qa.train_chunks.rows(fit), qa.train_chunks.labels[fit], qa.test_features(),
                                  qa.test_chunks.labels, qa.train.percentages, fractions=settings["fractions"],
                                  seeds=settings["subsets"], device=ctx.device, per_sample=not samples)
        if not samples and curve["points"]:
            samples = {"discriminative": np.stack([p.pop("discriminative_correct") for p in curve["points"]], 1),
                       "random": np.stack([p.pop("random_correct").mean(axis=1) for p in curve["points"]], 1)}
        for p in curve["points"]:
            rows.append({"model": label, "kept_pct": _pct(100 * p["size"] / curve["dim"]),
                         "size": p["size"], "discriminative": _pct(p["discriminative"]),
                         "random_mean": _pct(p["random_mean"]), "random_std": _pct(p["random_std"]),
                         "pca": _pct(p["pca"]), "lower_tail": _pct(p["lower_tail"]),
                         "upper_tail": _pct(p["upper_tail"]), "all_features": _pct(curve["full"])})
        figures.append(plot_compression(curve, ctx.out / f"{stem}-{enc.name}.png").name)
    return rows, figures, samples


def first_subsets_vs_random(samples: dict[str, np.ndarray]) -> tuple[float, float]:
    """Figure 3.2's claim on per-sample arrays (:func:`compression_rows`): ``(random, discriminative)``, the
    first encoder's top-1 % averaged over subset sizes (the random subsets' accuracy also over their draws)."""
    return 100.0 * float(samples["random"].mean()), 100.0 * float(samples["discriminative"].mean())


def _first_model(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"model": <the first row's model>}``: the encoder a multi-encoder claim is judged on."""
    return {"model": rows[0]["model"]}


@recipe("fig-3.2", title="Linear probing subsets of discriminative features vs random subsets", section="3.3.1",
        kind="figure",
        needs="world (default) or --data; SSL training per method (~1 min CPU each); with --data cifar10 the "
              "shared supervised ResNet-20/56 checkpoints instead (option encoders; ssl to train)",
        claim=Claim("Discriminative-feature subsets give a higher linear top-1 than random subsets of the same size "
                    "(Figure 3.2; the first encoder: SimCLR, or ResNet-20 with the CIFAR-10 checkpoints; mean over "
                    "sizes)",
                    pairs=lambda rows: (mean_cell(rows, "random_mean", **_first_model(rows)),
                                        mean_cell(rows, "discriminative", **_first_model(rows))),
                    quantity="linear top-1 % of a feature subset", resample=first_subsets_vs_random))
def fig_3_2(ctx: RecipeContext) -> RecipeResult:
    """Figure 3.2: top-1 of linear probes on discriminative subsets of shrinking size vs random subsets (4 seeds).

    Option ``encoders`` (module docstring): SSL baselines (default on the world) or supervised CIFAR-10
    checkpoints (default with ``--data cifar10``). Checkpoint runs store the first encoder's per-sample
    correctness (``samples.npz``), so the claim is judged by a bootstrap over test samples.
    """
    encoders, chosen = qscore_encoders(ctx, ["simclr"], list(PAPER_METHODS[:6]))
    rows, figures, samples = compression_rows(ctx, encoders, "compression")
    notes = "Bands shrink from (0, 100) towards the middle in the proportions of (50, 95)."
    if "encoders" in chosen:  # checkpoints: no seeds, so the claim is bootstrapped over these test samples
        notes += (" " + CHECKPOINT_NOTE + " Verdict: bootstrap over the test samples (samples.npz; the random "
                  "subsets are fixed per size, so their own spread is not in the test).")
    else:
        samples = {}
    return RecipeResult(rows=rows, figures=figures,
                        protocol={**chosen, "eps": eps_of(ctx), **compression_settings(ctx),
                                  "probe": "L-BFGS logistic regression on L2-normalised features"},
                        notes=notes, samples=samples)


# --------------------------------------------------------------------------- Figure 3.3
#: The claim of Figures 3.3 and A.3: the discriminative features' activation on mis-classified samples,
#: baseline (control) vs its Q-Score fine-tune.
DISC_ACTIVATION = "mean activation of the shown discriminative features, mis-classified samples"
DISC_ACTIVATION_PAIRS = between("disc_activation_misclassified", {"model": "baseline"}, {"model": "Q-Score"})


def heatmap_panels(ctx: RecipeContext, encoders: dict[str, Encoder], *, spec: str | None = None,
                   tag: str = "", n_classes: int = 8, n_features: int = 32) -> tuple[dict, list[dict], Any]:
    """Class-averaged discriminative features of correct vs mis-classified samples for each encoder.

    The test samples are split in two halves (seeded by ``ctx.data_seed``): on the *selection* half,
    the features (columns) are the first encoder's discriminative features most active on its
    correctly classified samples and the classes (rows) those with the most mis-classified samples;
    the panels and rows compare the encoders on the other, *comparison* half only, so no feature is
    picked on the samples it is compared on.
    """
    assessed = {label: assess(ctx, enc, spec=spec, tag=tag) for label, enc in encoders.items()}
    first = next(iter(assessed.values()))
    labels = first.test_chunks.labels
    order = np.random.default_rng(ctx.data_seed).permutation(len(labels))
    select = np.zeros(len(labels), dtype=bool)
    select[order[: len(labels) // 2]] = True
    compare = ~select
    sel_correct = first.correct & select
    mis_counts = np.bincount(labels[~first.correct & select], minlength=int(labels.max()) + 1)
    classes = [int(c) for c in np.argsort(-mis_counts, kind="stable")[:n_classes] if (labels[compare] == c).any()]
    disc = first.discriminative
    h0 = normalized(first.test_features())
    strength = h0[sel_correct][:, disc].mean(axis=0) if sel_correct.any() else h0[select][:, disc].mean(axis=0)
    feats = disc[np.argsort(-strength, kind="stable")[:n_features]]
    panels, rows = {}, []
    for label, qa in assessed.items():
        x = qa.test_features()[compare]
        correct = qa.correct[compare]
        scores = qa.test.scores[compare]
        panels[label] = class_feature_means(x, qa.test_chunks.labels[compare], correct, feats, classes)
        hd = normalized(x)[:, feats]
        rows.append({
            "model": label,
            "disc_activation_correct": round(float(hd[correct].mean()), 4) if correct.any() else float("nan"),
            "disc_activation_misclassified": round(float(hd[~correct].mean()), 4)
            if (~correct).any() else float("nan"),
            "qscore_correct": round(float(scores[correct].mean()), 4) if correct.any() else float("nan"),
            "qscore_misclassified": round(float(scores[~correct].mean()), 4) if (~correct).any() else float("nan"),
            "auroc": _pct(100 * qa.report.auroc), "auprc": _pct(100 * qa.report.auprc),
            "top1": _pct(100 * correct.mean()), "compared_samples": int(compare.sum()),
        })
    return panels, rows, (feats, classes)


@recipe("fig-3.3", title="Discriminative features of correct vs mis-classified representations, before and after "
        "Q-Score regularisation", section="3.3.2", kind="figure",
        needs="world (default) or --data; SimCLR training + Q-Score fine-tuning; ~2 min CPU",
        claim=Claim("Q-Score regularisation raises the discriminative features' activation on mis-classified "
                    "representations (Figure 3.3)",
                    pairs=DISC_ACTIVATION_PAIRS, quantity=DISC_ACTIVATION))
def fig_3_3(ctx: RecipeContext) -> RecipeResult:
    """Figure 3.3: class-averaged discriminative features, correct (left) and mis-classified (right)."""
    base = baseline(ctx, "simclr")
    reg = finetune(ctx, base, "qscore")
    panels, rows, (feats, classes) = heatmap_panels(ctx, {"baseline": base, "Q-Score": reg})
    names = class_names(ctx)
    fig = plot_class_heatmaps(panels, ctx.out / "heatmaps.png", feature_ids=feats,
                              class_names=[names[c] for c in classes])
    return RecipeResult(rows=rows, figures=[fig.name],
                        protocol={"model": "simclr", "eps": eps_of(ctx), "features_shown": [int(f) for f in feats],
                                  "classes_shown": [names[c] for c in classes],
                                  "finetune": FINETUNE[ctx.budget], "lambdas": list(LAMBDAS)},
                        notes="Columns: the baseline's discriminative features most active on its correct samples "
                              "of one half of the test split; every number compares the other half "
                              "(activations of L2-normalised test representations).")


# --------------------------------------------------------------------------- Figure 3.4
#: Notes of a run on the supervised checkpoints (option ``encoders``).
CHECKPOINT_NOTE = ("The encoders are supervised CIFAR-10 ResNets (published checkpoints, trained with labels), a "
                   "stand-in for the paper's SSL encoders; nothing is trained, so the run is one run.")


def auroc_percent(correct: np.ndarray, scores: np.ndarray) -> float:
    """AUROC (%) of ``scores`` ranking correct above wrong samples (ties count half; NaN with one outcome only).

    The Mann-Whitney form of ``sklearn.metrics.roc_auc_score(correct, scores)``, cheap enough for bootstraps.
    """
    from scipy.stats import rankdata

    correct = np.asarray(correct, dtype=bool)
    n_pos = int(correct.sum())
    n_neg = int(correct.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float(100.0 * (ranks[correct].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def first_auroc_vs_chance(samples: dict[str, np.ndarray]) -> tuple[float, float]:
    """Figure 3.4's claim on per-sample arrays: ``(50, AUROC % of the first encoder's Q-Scores vs correctness)``.

    ``samples``: ``{"qscore": (n, encoders), "correct": (n, encoders)}`` (the recipe's ``samples.npz``).
    """
    return 50.0, auroc_percent(samples["correct"][:, 0], samples["qscore"][:, 0])


@recipe("fig-3.4", title="PR and ROC curves of Q-Score predicting correct vs mis-classified representations",
        section="3.4", kind="figure",
        needs="world (default) or --data; SSL training per method (~1 min CPU each); with --data cifar10 the "
              "shared supervised ResNet-20/56 checkpoints instead (option encoders; ssl to train)",
        claim=Claim("Q-Score predicts whether the first encoder's representation (SimCLR, or ResNet-20 with the "
                    "CIFAR-10 checkpoints) is classified correctly better than chance (AUROC above 50, Figure 3.4)",
                    pairs=lambda rows: (50.0, cell(rows, "auroc", **_first_model(rows))), quantity="AUROC %",
                    resample=first_auroc_vs_chance))
def fig_3_4(ctx: RecipeContext) -> RecipeResult:
    """Figure 3.4: AUROC / AUPRC of the Q-Score as a zero-shot predictor of linear-probe correctness.

    Option ``encoders`` (module docstring): SSL baselines (default on the world) or supervised CIFAR-10
    checkpoints (default with ``--data cifar10``). Checkpoint runs store each test sample's Q-Score and
    correctness per encoder (``samples.npz``), so the claim is judged by a bootstrap over test samples.
    """
    encoders, chosen = qscore_encoders(ctx, SMALL_METHODS, PAPER_METHODS[:6])
    reports, rows, scores, correct = {}, [], [], []
    for label, enc in encoders:
        qa = assess(ctx, enc)
        reports[label] = qa.report
        s = qa.summary()
        rows.append({"model": label, "auroc": _pct(s["auroc"]), "auprc": _pct(s["auprc"]),
                     "auprc_chance": _pct(s["auprc_chance"]), "top1": _pct(s["top1"]),
                     "without_discriminative": s["without_discriminative"], "test_samples": s["test_samples"]})
        scores.append(np.asarray(qa.test.scores, dtype=np.float64))
        correct.append(np.asarray(qa.correct, dtype=bool))
    figures = [plot_roc(reports, ctx.out / "roc.png").name, plot_pr(reports, ctx.out / "pr.png").name]
    notes = "AUPRC counts correct samples as positives (its chance level is the accuracy)."
    samples: dict[str, Any] = {}
    if "encoders" in chosen:  # checkpoints: no seeds, so the claim is bootstrapped over these test samples
        samples = {"qscore": np.stack(scores, axis=1), "correct": np.stack(correct, axis=1)}
        notes += " " + CHECKPOINT_NOTE + " Verdict: bootstrap over the test samples (samples.npz)."
    return RecipeResult(rows=rows, figures=figures,
                        protocol={**chosen, "eps": eps_of(ctx), "D": "from the training split",
                                  "judged": "test split, probe fitted on the training split"},
                        notes=notes, samples=samples)


# --------------------------------------------------------------------------- Table 3.1
def regularisation_rows(ctx: RecipeContext, methods: Sequence[str]) -> list[dict[str, Any]]:
    """Linear-probe top-1 of each baseline, its continuation, lasso and Q-Score fine-tunes (Tables 3.1, A.1), and a
    random-init control row (the first method's architecture untrained, in the ``baseline`` column)."""
    rows = []
    for method in methods:
        base = baseline(ctx, method)
        top1 = {"baseline": assess(ctx, base).summary()["top1"]}
        for kind in ("continued", "lasso", "qscore"):
            top1[kind] = assess(ctx, finetune(ctx, base, kind)).summary()["top1"]
        rows.append({"model": display(method), "baseline": _pct(top1["baseline"]), "lasso": _pct(top1["lasso"]),
                     "qscore": _pct(top1["qscore"]), "continued": _pct(top1["continued"]),
                     "qscore_gain": _pct(top1["qscore"] - top1["baseline"])})
    control = assess(ctx, random_encoder(ctx, methods[0])).summary()["top1"]
    rows.append({"model": RANDOM_INIT, "baseline": _pct(control), "lasso": "", "qscore": "", "continued": "",
                 "qscore_gain": ""})
    return rows


@recipe("table-3.1", title="Linear evaluation before and after Q-Score regularisation, with a lasso baseline",
        section="3.4.2", kind="table",
        needs="world (default) or --data; per method: SSL training + 3 fine-tunes; ~3 min CPU per method",
        claim=Claim("Q-Score regularisation raises SimCLR's linear top-1 (Table 3.1)",
                    pairs=lambda rows: (cell(rows, "baseline", model="SimCLR"), cell(rows, "qscore", model="SimCLR")),
                    quantity="linear top-1 %"))
def table_3_1(ctx: RecipeContext) -> RecipeResult:
    """Table 3.1: top-1 of baseline, lasso and Q-Score regularised fine-tunes (plus a plain continuation)."""
    chosen = methods_of(ctx)
    return RecipeResult(rows=regularisation_rows(ctx, chosen),
                        protocol={"methods": chosen, "finetune": FINETUNE[ctx.budget], "lambdas": list(LAMBDAS),
                                  "lasso_weight": LASSO_WEIGHT, "eps": eps_of(ctx),
                                  "probe": "L-BFGS logistic regression (replens.evaluate)"},
                        notes="'continued' further-trains the baseline without a regulariser for the same steps "
                              "(a control the paper does not tabulate); the paper's data are ImageNet-100/1K.")


# --------------------------------------------------------------------------- Figure 3.5
def cam_row(ctx: RecipeContext, enc: Encoder, qa: Any, images: Any, positions: np.ndarray, source: Any) -> tuple:
    """Discriminative-feature Grad-CAMs (the sample's own ``L_i & D``) and their heat IoU with core masks."""
    cams, counts = discriminative_cams(enc.backbone, images, qa.discriminative, eps=eps_of(ctx), device=ctx.device)
    ious = [core_iou(source, c, p) if n else float("nan") for c, n, p in zip(cams, counts, positions, strict=True)]
    return cams, counts, np.asarray(ious, dtype=float)


@recipe("fig-3.5", title="Grad-CAM of discriminative features in mis-classified samples, before and after "
        "Q-Score regularisation", section="3.4.2", kind="figure",
        needs="world (default) or --data; SimCLR training + Q-Score fine-tuning; ~2 min CPU",
        no_claim="qualitative heatmaps of a few samples; its numbers are tested where the paper states them: "
                 "top-1 in Table 3.1, overlap with the main object after regularisation in Figure 3.7")
def fig_3_5(ctx: RecipeContext) -> RecipeResult:
    """Figure 3.5: heatmaps and predictions of baseline-misclassified samples before and after regularisation."""
    base = baseline(ctx, "simclr")
    reg = finetune(ctx, base, "qscore")
    qa0, qa1 = assess(ctx, base), assess(ctx, reg)
    mis = np.flatnonzero(~qa0.correct)
    fixed = mis[qa1.correct[mis]]
    chosen = np.r_[fixed[:4], np.setdiff1d(mis, fixed)[: 6 - min(4, len(fixed))]].astype(np.int64)[:6]
    names = class_names(ctx)
    rows, grid = [], []
    if len(chosen):
        images, source, positions = test_images(ctx, qa0, chosen)
        cams0, n0, iou0 = cam_row(ctx, base, qa0, images, positions, source)
        cams1, n1, iou1 = cam_row(ctx, reg, qa1, images, positions, source)
        for k, r in enumerate(chosen):
            rows.append({"sample": qa0.test_chunks.names[r], "label": names[int(qa0.test_chunks.labels[r])],
                         "prediction_before": names[int(qa0.predictions[r])],
                         "confidence_before": round(float(qa0.confidence[r]), 4),
                         "prediction_after": names[int(qa1.predictions[r])],
                         "confidence_after": round(float(qa1.confidence[r]), 4),
                         "correct_after": bool(qa1.correct[r]),
                         "disc_features_before": int(n0[k]), "disc_features_after": int(n1[k]),
                         "iou_core_before": round(float(iou0[k]), 4), "iou_core_after": round(float(iou1[k]), 4)})
            img = images[k].numpy().transpose(1, 2, 0)
            grid.append({"label": f"{names[int(qa0.test_chunks.labels[r])]}",
                         "panels": [("image", img),
                                    (f"baseline: {names[int(qa0.predictions[r])]} {qa0.confidence[r]:.2f}",
                                     cam_overlay(img, cams0[k])),
                                    (f"Q-Score: {names[int(qa1.predictions[r])]} {qa1.confidence[r]:.2f}",
                                     cam_overlay(img, cams1[k]))]})
    figures = [plot_cam_grid(grid, ctx.out / "misclassified.png").name] if grid else []
    protocol = {"model": "simclr", "eps": eps_of(ctx), "baseline_misclassified": int(len(mis)),
                "fixed_by_qscore": int(len(fixed)),
                "mean_confidence_change_on_misclassified": round(float((qa1.confidence[mis] - qa0.confidence[mis])
                                                                       .mean()), 4) if len(mis) else float("nan")}
    return RecipeResult(rows=rows, figures=figures, protocol=protocol,
                        notes="Samples the baseline mis-classifies, those the fine-tune fixes first.")


# --------------------------------------------------------------------------- Figure 3.6
@recipe("fig-3.6", title="Grad-CAM of discriminative features vs core and spurious masks", section="3.5",
        kind="figure", needs="world (default; core/spurious masks) or Salient ImageNet; SimCLR training; ~1 min CPU",
        claim=Claim("Discriminative-feature heatmaps overlap the core mask more than the spurious mask "
                    "(Figure 3.6), each beyond what the mask's size and place alone give (the IoU with another "
                    "shown sample's mask)",
                    pairs=lambda rows: (mean_cell(rows, "iou_spurious") - mean_cell(rows, "iou_spurious_other"),
                                        mean_cell(rows, "iou_core") - mean_cell(rows, "iou_core_other")),
                    quantity="heat IoU % above the IoU with another sample's mask"))
def fig_3_6(ctx: RecipeContext) -> RecipeResult:
    """Figure 3.6: heatmaps of correct and mis-classified samples beside their core and spurious masks.

    The core mask (the main object) covers far more of an image than the spurious one (the corner patch),
    so a heatmap overlaps it more even by chance. The control of each IoU is the same heatmap against the
    masks of the next shown sample (``*_other``: another object's place and size, another corner); the
    claim compares the two masks' IoU above that control.
    """
    enc = baseline(ctx, "simclr")
    qa = assess(ctx, enc)
    source = ctx.source("test", **WORLD)
    if not hasattr(source, "core_mask"):
        raise ValueError(f"fig-3.6 needs images with core and spurious masks (the world); {ctx.data} has none")
    with_disc = qa.test.n_discriminative > 0
    chosen = np.r_[np.flatnonzero(qa.correct & with_disc)[:3], np.flatnonzero(~qa.correct & with_disc)[:3]]
    names = class_names(ctx)
    rows, grid = [], []
    if len(chosen):
        images, source, positions = test_images(ctx, qa, chosen)
        cams, _, _ = cam_row(ctx, enc, qa, images, positions, source)
        for k, r in enumerate(chosen):
            core, sp = source.core_mask(int(positions[k])), source.spurious_mask(int(positions[k]))
            other = int(positions[(k + 1) % len(chosen)])
            outcome = "correct" if qa.correct[r] else "misclassified"
            rows.append({"sample": qa.test_chunks.names[r], "outcome": outcome,
                         "label": names[int(qa.test_chunks.labels[r])],
                         "iou_core": round(100 * heat_iou(cams[k], core), 2),
                         "iou_spurious": round(100 * heat_iou(cams[k], sp), 2),
                         "iou_core_other": round(100 * heat_iou(cams[k], source.core_mask(other)), 2),
                         "iou_spurious_other": round(100 * heat_iou(cams[k], source.spurious_mask(other)), 2)})
            img = images[k].numpy().transpose(1, 2, 0)
            grid.append({"label": f"{outcome}\n{names[int(qa.test_chunks.labels[r])]}",
                         "panels": [("image", img), ("discriminative", cam_overlay(img, cams[k])),
                                    ("core mask", (np.repeat(core[:, :, None], 3, 2) * 255).astype(np.uint8)),
                                    ("spurious mask", (np.repeat(sp[:, :, None], 3, 2) * 255).astype(np.uint8))]})
    figures = [plot_cam_grid(grid, ctx.out / "masks.png").name] if grid else []
    return RecipeResult(rows=rows, figures=figures,
                        protocol={"model": "simclr", "eps": eps_of(ctx), "iou": "heat IoU, threshold 0.5 (%)",
                                  "masks": "world: core = main object, spurious = the class-tied corner patch",
                                  "control": "*_other: the heatmap against the next shown sample's masks"})


# --------------------------------------------------------------------------- Figure 3.7
@recipe("fig-3.7", title="mIoU of discriminative-feature heatmaps with core and spurious masks, before and after "
        "Q-Score regularisation", section="3.5", kind="figure",
        needs="world (default; masks); per method SSL training + Q-Score fine-tuning; ~3 min CPU per method",
        claim=Claim("Q-Score regularisation raises SimCLR's mIoU with the core mask (Figure 3.7; mean of "
                    "correct and mis-classified samples)",
                    pairs=lambda rows: (mean_cell(rows, "miou_core", model="SimCLR", variant="baseline"),
                                        mean_cell(rows, "miou_core", model="SimCLR", variant="Q-Score")),
                    quantity="mIoU % with the core mask"))
def fig_3_7(ctx: RecipeContext) -> RecipeResult:
    """Figure 3.7: mIoU^core and mIoU^sp for correct and mis-classified samples of each model and its fine-tune."""
    chosen_methods = methods_of(ctx)
    n_images = int(option(ctx, "saliency_images", ctx.pick(200, 2000)))
    rows = []
    series: dict[str, list[float]] = {}
    groups = []
    for method in chosen_methods:
        base = baseline(ctx, method)
        for variant, enc in (("baseline", base), ("Q-Score", finetune(ctx, base, "qscore"))):
            qa = assess(ctx, enc)
            chosen = seeded_pick(ctx, np.arange(len(qa.correct)), n_images)
            source = ctx.source("test", **WORLD)
            result = saliency_iou(enc.backbone, source, qa.discriminative, qa.test_chunks.index[chosen],
                                  eps=eps_of(ctx), device=ctx.device, progress=ctx.progress)
            summary = result.summary(qa.correct[chosen])
            groups.append(f"{display(method)} {variant}")
            for outcome in ("correct", "misclassified"):
                s = summary[outcome]
                rows.append({"model": display(method), "variant": variant, "outcome": outcome,
                             "miou_core": _pct(s["miou_core"]), "miou_spurious": _pct(s["miou_spurious"]),
                             "images": s["images"]})
                series.setdefault(f"core, {outcome}", []).append(s["miou_core"])
                series.setdefault(f"spurious, {outcome}", []).append(s["miou_spurious"])
    fig = plot_grouped_bars(groups, series, ctx.out / "miou.png", ylabel="mIoU (%)",
                            title="discriminative-feature heatmaps vs masks")
    return RecipeResult(rows=rows, figures=[fig.name],
                        protocol={"methods": chosen_methods, "images_per_model": n_images, "eps": eps_of(ctx),
                                  "iou": "heat IoU, threshold 0.5",
                                  "masks": "world core (main object) / spurious (class-tied patch) in place of "
                                           "Salient ImageNet"})
