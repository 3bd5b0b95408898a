"""Validation: why the default audit's Q-Score sits at chance on the world, measured on a finished audit.

Usage:
    python scripts/validate_qscore_regime.py --run runs/audit-XXXX [--frac 0.4] [--retrain occlude]
        [--out runs/qscore-regime] [--seed 0]

Reads an audit run folder (``replens audit``'s trained encoder, its embeddings and its world) and writes
``OUT/results.json`` plus a printed table of three parts:

1. **Label-free scores on the audit's own embeddings.** The audit's Q-Score (its eps rule, ``D`` from the
   train split; the AUROC must equal the audit's), then other scores that need no labels: the raw
   feature norm, the largest normalised feature, and the margin between the two nearest k-means
   centroids (k = the number of classes, fitted on the train split). Then Q-Score over a grid of
   eps x band: its best cell is a ceiling tuned on the test labels, not a rule, and is labelled so.
2. **A per-image quality latent.** ``--frac`` of the train and of the test images are degraded, one kind
   at a time (Gaussian noise, a contrast cut, a box blur, a random occluder over the object's middle);
   the audit's encoder embeds them, a linear probe (the audit's protocol) is fitted on the train split,
   and the table shows accuracy on clean and degraded test images, mean Q-Score of each, the AUROC of
   Q-Score for probe correctness and the AUROC of -Q-Score for "this image is degraded". Real datasets
   have such images and Q-Score is meant to flag their weak representations (paper section 3.4);
   if the world's failures came from weak evidence, this is where Q-Score would separate them.
3. ``--retrain KIND``: trains the audit's SSL recipe (same config and steps, training seed ``--seed``) on
   the degraded train split of that kind, so the encoder has seen degraded images, and repeats part 2's
   row for it. Run it with ``--seed 0``, ``1`` and ``2`` (other ``--out`` folders) for the spread.

Checked against the audit it reads: the Q-Score AUROC of part 1 equals the audit's summary (it stops
otherwise), so both use the same scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from replens.engine.train import TrainConfig, train
from replens.evaluate.probe import fit_linear_probe
from replens.models.backbone import create_backbone
from replens.models.features import load_embeddings
from replens.quality import eps_for_dim, qscore_array
from replens.quality.failure import failure_prediction
from replens.runs import atomic_write_json
from replens.world.dataset import WorldDataset

#: Degradation kinds and strengths (one image in ``--frac`` gets one; all at 32 px).
KINDS: dict[str, float] = {"noise": 0.25, "contrast": 0.8, "blur": 5, "occlude": 0.45}
#: The Q-Score grid of part 1 (a ceiling tuned on the test labels, never a rule).
GRID_EPS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
GRID_BANDS = ((50.0, 95.0), (0.0, 100.0), (0.0, 50.0), (95.0, 100.0))


def degrade(images: torch.Tensor, kind: str, strength: float, rng: torch.Generator) -> torch.Tensor:
    """Degrade (B, 3, H, W) uint8 images one way; uint8 out."""
    x = images.float() / 255.0
    if kind == "noise":  # sensor noise, sigma in [0, 1] units
        x = x + strength * torch.randn(x.shape, generator=rng)
    elif kind == "contrast":  # contrast cut towards each image's mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * (1.0 - strength)
    elif kind == "blur":  # box blur of side ``strength`` pixels
        k = int(strength)
        x = F.avg_pool2d(F.pad(x, (k // 2, k - 1 - k // 2) * 2, mode="replicate"), k, stride=1)
    elif kind == "occlude":  # a flat square of side strength * H near the centre, where the object is
        side, size = int(strength * x.shape[-1]), x.shape[-1]
        for i in range(x.shape[0]):
            cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=rng).tolist()
            ys, xs = slice(max(0, cy - side // 2), cy + side // 2), slice(max(0, cx - side // 2), cx + side // 2)
            x[i, :, ys, xs] = torch.rand(3, 1, 1, generator=rng)
    else:
        raise ValueError(f"unknown degradation {kind!r}; choose from {sorted(KINDS)}")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def world_images(world: str, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 3, H, W) uint8 images and (N,) labels of a world split."""
    ds = WorldDataset(world, split)
    images = np.stack([ds.read(i) for i in range(len(ds))])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), np.asarray(ds.labels)


@torch.no_grad()
def embed(backbone: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Backbone features of uint8 images (the backbone's own preprocessing)."""
    out = [backbone(backbone.preprocess(images[i : i + batch])).float() for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def qscores(train: np.ndarray, test: np.ndarray, eps: float,
            band: tuple[float, float] = (50.0, 95.0)) -> tuple[np.ndarray, np.ndarray]:
    """Test Q-Scores with ``D`` found on the train split (the audit's protocol), and the train ones."""
    found = qscore_array(train, eps=eps, band=band)
    return qscore_array(test, eps=eps, discriminative=found.discriminative).scores, found.scores


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC (percent) of ``scores`` for ``positive`` (higher score, more likely positive)."""
    return 100.0 * failure_prediction(np.asarray(scores, np.float64), np.asarray(positive, bool)).auroc


def label_free(train: np.ndarray, test: np.ndarray, correct: np.ndarray, eps: float, n_classes: int,
               seed: int) -> dict[str, Any]:
    """Part 1: AUROC for probe correctness of label-free scores on the audit's embeddings."""
    from sklearn.cluster import KMeans

    q, _ = qscores(train, test, eps)
    unit = test / np.linalg.norm(test, axis=1, keepdims=True)
    km = KMeans(n_classes, n_init=4, random_state=seed).fit(train / np.linalg.norm(train, axis=1, keepdims=True))
    dist = np.sort(km.transform(unit), axis=1)
    out: dict[str, Any] = {
        "qscore_rule": {"eps": eps, "band": [50.0, 95.0], "auroc": auroc(q, correct)},
        "norm": auroc(np.linalg.norm(test, axis=1), correct),
        "max_normalised_feature": auroc(unit.max(axis=1), correct),
        "kmeans_margin": auroc(dist[:, 1] - dist[:, 0], correct),
        "grid": [],
    }
    for e in GRID_EPS:
        for band in GRID_BANDS:
            gq, _ = qscores(train, test, e, band)
            out["grid"].append({"eps": e, "band": list(band), "auroc": auroc(gq, correct),
                                "zero_share": float(np.mean(gq == 0))})
    best = max(out["grid"], key=lambda c: c["auroc"])
    out["grid_best"] = {**best, "note": "tuned on the test labels: a ceiling, not a rule"}
    return out


def quality_row(backbone: torch.nn.Module, images: dict[str, torch.Tensor], labels: dict[str, np.ndarray],
                kind: str, frac: float, eps: float, seed: int) -> dict[str, Any]:
    """Part 2: degrade ``frac`` of both splits one way, embed, probe, Q-Score."""
    rng = torch.Generator().manual_seed(seed)
    feats, masks = {}, {}
    for split in ("train", "test"):
        x = images[split].clone()
        mask = torch.rand(len(x), generator=rng) < frac
        if mask.any():
            x[mask] = degrade(x[mask], kind, KINDS[kind], rng)
        feats[split], masks[split] = embed(backbone, x), mask.numpy()
    probe = fit_linear_probe(feats["train"], labels["train"])
    correct = probe.predict(feats["test"]) == labels["test"]
    q, _ = qscores(feats["train"], feats["test"], eps)
    bad = masks["test"]
    return {
        "kind": kind, "strength": KINDS[kind], "frac": frac, "n_test": int(len(q)), "n_degraded": int(bad.sum()),
        "accuracy": 100 * float(correct.mean()), "accuracy_clean": 100 * float(correct[~bad].mean()),
        "accuracy_degraded": 100 * float(correct[bad].mean()),
        "q_clean": float(q[~bad].mean()), "q_degraded": float(q[bad].mean()),
        "auroc_correct": auroc(q, correct), "auroc_degraded": auroc(-q, bad),
        # within the clean images alone: is there signal beyond "this image was degraded"?
        "auroc_correct_clean": auroc(q[~bad], correct[~bad]),
    }


def retrain(run: Path, world: str, kind: str, frac: float, seed: int, out: Path) -> Path:
    """Part 3: the audit's SSL recipe on the degraded train split; returns the backbone weights."""
    weights = out / f"train-{kind}" / "backbone.safetensors"
    if weights.is_file():
        return weights
    cfg = json.loads((run / "summary.json").read_text())["config"]
    tcfg = TrainConfig(**{**cfg["train"], "seed": seed})  # the audit's resolved recipe, this run's seed
    images, labels = world_images(world, "train")
    rng = torch.Generator().manual_seed(seed)
    mask = torch.rand(len(images), generator=rng) < frac
    images[mask] = degrade(images[mask], kind, KINDS[kind], rng)
    npz = out / f"train-{kind}.npz"
    np.savez(npz, images=images.permute(0, 2, 3, 1).numpy(), labels=labels)
    from replens.data.sources import open_source

    train(tcfg, open_source(f"npz:{npz}", image_size=tcfg.image_size),
          out / f"train-{kind}", resume=True, progress=True)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished `replens audit` run folder")
    parser.add_argument("--out", type=Path, default=Path("runs/qscore-regime"))
    parser.add_argument("--frac", type=float, default=0.4, help="share of images degraded (default 0.4)")
    parser.add_argument("--retrain", choices=sorted(KINDS), default=None,
                        help="also train the audit's recipe on the degraded train split of this kind")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the degradations, k-means and the --retrain training (default 0)")
    args = parser.parse_args(argv)
    summary_path = args.run / "summary.json"
    if not summary_path.is_file() or not (args.run / "train" / "backbone.safetensors").is_file():
        parser.error(f"{args.run} is not a finished audit run folder (needs summary.json and train/backbone.safetensors)")
    if not 0.0 < args.frac < 1.0:
        parser.error(f"--frac must lie in (0, 1), got {args.frac}")
    summary = json.loads(summary_path.read_text())
    overview, config = summary["overview"], summary["config"]
    world, name = overview["world"], overview["encoder"]
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    def load_backbone(weights: Path) -> torch.nn.Module:
        return create_backbone(name, weights=str(weights), **config["train"].get("backbone_args", {})).eval()

    tr, te = load_embeddings(args.run / "trained" / "embeddings-train"), load_embeddings(args.run / "trained" / "embeddings-test")
    ftr, fte = np.asarray(tr.features, np.float32), np.asarray(te.features, np.float32)
    probe = fit_linear_probe(ftr, np.asarray(tr.labels))
    correct = probe.predict(fte) == np.asarray(te.labels)
    eps = config["eps"] if config.get("eps") is not None else eps_for_dim(ftr.shape[1])
    part1 = label_free(ftr, fte, correct, eps, len(overview["classes"]), args.seed)
    audit_auroc = float(overview["auroc"])
    if abs(part1["qscore_rule"]["auroc"] - audit_auroc) > 0.05:
        print(f"error: Q-Score AUROC here {part1['qscore_rule']['auroc']:.2f} differs from the audit's "
              f"{audit_auroc:.2f}: not the same scores", file=sys.stderr)
        return 1
    print(f"audit {args.run}: {name}, linear top-1 {100 * correct.mean():.1f} %, eps {eps:g}")
    print("1) label-free scores, AUROC for probe correctness (chance 50):")
    print(f"   Q-Score (audit rule) {part1['qscore_rule']['auroc']:.1f} | feature norm {part1['norm']:.1f} | "
          f"largest normalised feature {part1['max_normalised_feature']:.1f} | k-means margin {part1['kmeans_margin']:.1f}")
    b = part1["grid_best"]
    print(f"   best of the eps x band grid ({len(part1['grid'])} cells, tuned on test labels): {b['auroc']:.1f} "
          f"(eps {b['eps']:g}, band {b['band'][0]:g}-{b['band'][1]:g}, Q = 0 for {100 * b['zero_share']:.0f} %)")

    images, labels = {}, {}
    for split in ("train", "test"):
        images[split], labels[split] = world_images(world, split)
    backbone = load_backbone(args.run / "train" / "backbone.safetensors")
    rows = []
    print(f"2) quality latent on {100 * args.frac:.0f} % of train and test images (the audit's encoder):")
    print("   kind       acc clean / degraded   mean Q clean / degraded   AUROC Q->correct   AUROC -Q->degraded")
    for kind in KINDS:
        row = quality_row(backbone, images, labels, kind, args.frac, eps, args.seed)
        rows.append(row)
        print(f"   {kind:9s}  {row['accuracy_clean']:5.1f} / {row['accuracy_degraded']:5.1f}          "
              f"{row['q_clean']:.4f} / {row['q_degraded']:.4f}          {row['auroc_correct']:5.1f}"
              f"              {row['auroc_degraded']:5.1f}", flush=True)
    result: dict[str, Any] = {"run": str(args.run), "world": world, "encoder": name, "eps": eps,
                              "linear_top1": 100 * float(correct.mean()), "label_free": part1, "quality": rows}
    if args.retrain:
        weights = retrain(args.run, world, args.retrain, args.frac, args.seed, args.out)
        row = quality_row(load_backbone(weights), images, labels, args.retrain, args.frac, eps, args.seed)
        result["retrained"] = row
        print(f"3) encoder retrained on the degraded train split ({args.retrain}): accuracy clean / degraded "
              f"{row['accuracy_clean']:.1f} / {row['accuracy_degraded']:.1f}, mean Q {row['q_clean']:.4f} / "
              f"{row['q_degraded']:.4f}, AUROC Q->correct {row['auroc_correct']:.1f}, -Q->degraded {row['auroc_degraded']:.1f}, "
              f"within the clean images Q->correct {row['auroc_correct_clean']:.1f}")
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(args.out / "results.json", result)
    print(f"wrote {args.out / 'results.json'} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
