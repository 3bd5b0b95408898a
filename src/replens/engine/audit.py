"""``replens audit``: train, diagnose and explain an encoder in one command, with an HTML report.

With no arguments it runs the embedded default end to end:

1. a world (cached by config, :func:`replens.world.cached_world`);
2. SSL training with the DDM (seed ch. 2) and FDA (ch. 5) plug-ins in the one
   training loop (:func:`replens.engine.train.train`);
3. linear probe and kNN per domain, beside a random-init encoder of the same
   architecture (:func:`replens.engine.evaluation.probe_backbone`);
4. Q-Score (ch. 3): ``replens qscore`` on the embeddings (discriminative
   features from the train split, per-sample scores on the test split, failure
   prediction, compression curve, RankMe / alpha-ReQ);
5. FALCON (ch. 4): ``replens explain`` with the embedded tiny CLIP and the
   world's caption bank (explained feature groups and the concepts behind
   each mis-classification);
6. the report: ``index.html`` (offline), every figure as PNG, ``summary.json``
   (:func:`replens.report.write_report`) and ``summary.md``.

With ``model`` and ``data`` set (``replens audit --model M --data D``) steps 1-2
are skipped and the given encoder is diagnosed and explained.

Each step writes into its own sub-folder and is skipped when a rerun into the
same ``--out`` finds its outputs, so an interrupted audit resumes (training
itself resumes from its last checkpoint). Steps 4-5 run the ``qscore`` and
``explain`` commands in-process, so the audit and the single commands share
one implementation.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.engine.evaluation import probe_backbone
from replens.engine.train import TrainConfig, train
from replens.runs import RunDir, atomic_write_json, atomic_write_text


def _default_train() -> TrainConfig:
    # The world preset (presets/world.yaml) with the two chapter plug-ins switched on, 10 epochs.
    from replens.config import load_config, preset_path

    preset = load_config(TrainConfig, preset_path("world"), [])
    return replace(preset, epochs=10, plugins=["ddm", "fda"], knn_every=0, checkpoint_every=100)


@dataclass
class AuditConfig:
    """Configuration of ``replens audit`` (the defaults finish in minutes on 2 CPU cores).

    Attributes:
        model: Diagnose this backbone (``replens list``) instead of training one.
        weights: Weights file of ``model``.
        pretrained: Use the library's cached pretrained weights of ``model``.
        data: Probe-training data spec for ``model`` (a world spec: its train split).
        test_data: Evaluation data spec (default for ``world:`` / ``tv:`` specs: their test split).
        image_size: Image side for ``model`` (default: the training config's).
        world_n: Scenes in the default world (train + test).
        world_size: Scene side in pixels.
        domains: Render domains.
        world_dir: Use this world instead of building one.
        cache_dir: Cache of worlds, the tiny CLIP and caption banks.
        train: The SSL training configuration (default: SimCLR + DDM + FDA on ``small_cnn``).
        eps: Q-Score threshold ``mean + eps * std`` (2 suits representations of 64-512 features).
        qscore: Run the Q-Score step.
        falcon: Run the FALCON step.
        vl: VL model for FALCON (None: the embedded tiny CLIP, trained for ``vl_steps``).
        vl_steps: Training steps of the embedded tiny CLIP when it is not cached.
        parallel_vl: Train that tiny CLIP in a second process while the encoder trains
            (CPU only; each process then uses one thread).
        captions: Caption bank folder (None: the world grammar bank).
        qscore_args: Extra arguments of the ``replens qscore`` step (e.g. ``["--band", "40,95"]``).
        explain_args: Extra arguments of the ``replens explain`` step (e.g. ``["--alpha-std", "4"]``).
        failures_shown: Likely failures shown in the report.
        groups_shown: Explained feature groups shown in the report.
        device: Device for embedding, probing and explaining.
        seed: Seed of everything.
    """

    model: str | None = None
    weights: str | None = None
    pretrained: bool = False
    data: str | None = None
    test_data: str | None = None
    image_size: int | None = None
    world_n: int = 6000
    world_size: int = 32
    domains: list[str] = field(default_factory=lambda: ["photo", "cartoon", "sketch", "painting"])
    world_dir: str | None = None
    cache_dir: str = "runs/cache"
    train: TrainConfig = field(default_factory=_default_train)
    eps: float = 2.0
    qscore: bool = True
    falcon: bool = True
    vl: str | None = None
    vl_steps: int = 400
    parallel_vl: bool = True
    captions: str | None = None
    qscore_args: list[str] = field(default_factory=list)
    explain_args: list[str] = field(default_factory=list)
    failures_shown: int = 12
    groups_shown: int = 12
    device: str = "cpu"
    seed: int = 0


# ----------------------------------------------------------------------------- steps
def _specs(config: AuditConfig, progress: bool) -> tuple[str, str, str | None]:
    """``(train_spec, test_spec, world_dir)`` of the audited data."""
    if config.model is not None:
        if not config.data:
            raise ValueError("audit --model needs --data (the probe-training data spec)")
        test = config.test_data
        if test is None:
            if not config.data.startswith(("world:", "tv:")):
                raise ValueError(f"audit --data {config.data!r} has no test split: give --test-data")
            sep = "&" if "?" in config.data else "?"
            return f"{config.data}{sep}split=train", f"{config.data}{sep}split=test", None
        return config.data, test, None
    if config.data or config.test_data:
        raise ValueError("--data without --model: give the encoder to audit with --model (and --weights)")
    if config.world_dir:
        world = Path(config.world_dir)
    else:
        from replens.world import WorldConfig, cached_world

        wcfg = WorldConfig(n=config.world_n, size=config.world_size, domains=list(config.domains), seed=config.seed)
        world = cached_world(wcfg, config.cache_dir, progress)
    return f"world:{world}?split=train", f"world:{world}?split=test", str(world)


def _train_step(config: AuditConfig, train_spec: str, run: RunDir, progress: bool) -> dict[str, Any]:
    from replens.data import open_source

    folder = run / "train"
    done = folder / "train_summary.json"
    if done.is_file() and (folder / "backbone.safetensors").is_file():
        return json.loads(done.read_text())
    tcfg = TrainConfig(**{**asdict(config.train), "seed": config.seed})
    source = open_source(train_spec, image_size=tcfg.image_size)
    summary = train(tcfg, source, folder, resume=True, progress=progress)
    summary.pop("backbone", None)
    summary = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, list, dict, bool)) or v is None}
    atomic_write_json(done, summary)
    return summary


def _probe_step(
    name: str, weights: str | None, pretrained: bool, train_spec: str, test_spec: str, size: int,
    folder: Path, config: AuditConfig, progress: bool,
) -> dict[str, Any]:
    from replens.data import open_source
    from replens.models import create_backbone

    done = folder / "probe.json"
    if done.is_file():
        return json.loads(done.read_text())
    torch.manual_seed(config.seed)
    backbone = create_backbone(name, weights=weights, pretrained=pretrained).eval()
    train_src = open_source(train_spec, image_size=size)
    test_src = open_source(test_spec, image_size=size)
    result = probe_backbone(backbone, train_src, test_src, folder, config.device, progress)
    atomic_write_json(done, result)
    return result


def _cli(argv: list[str]) -> None:
    from replens.cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"audit step `replens {' '.join(argv)}` failed with exit code {code}")


def _qscore_step(config: AuditConfig, run: RunDir, progress: bool) -> Path:
    folder = run / "qscore"
    if not (folder / "metrics.json").is_file():
        _cli([
            "qscore", "--embeddings", str(run / "trained" / "embeddings-train"),
            "--test-embeddings", str(run / "trained" / "embeddings-test"), "--labels", "--eps", str(config.eps),
            "--format", "csv", "--top-failures", "0", "--device", config.device, "--seed", str(config.seed),
            "--out", str(folder), *([] if progress else ["--quiet"]), *map(str, config.qscore_args),
        ])
    return folder


def _tiny_clip_config(config: AuditConfig) -> Any:
    from replens.vl.tiny import TinyClipTrainConfig

    # trained on the audit's own world config, so the two share one cached world
    return TinyClipTrainConfig(steps=config.vl_steps, seed=config.seed, world_n=config.world_n,
                               world_size=config.world_size, world_domains=tuple(config.domains))


def _train_tiny_clip_child(cache_dir: str, vcfg: Any, device: str) -> None:
    # runs in a spawned process beside the SSL training, one thread each (see _start_vl_training)
    import logging

    from replens.vl.tiny import default_tiny_clip

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    default_tiny_clip(cache_dir, config=vcfg, device=device, progress=False)


def _start_vl_training(config: AuditConfig) -> Any:
    """Train the tiny CLIP in a second process while the encoder trains, when it is needed and not cached.

    On a small CPU two one-thread processes get more done than one process on
    two threads (tiny convolutions scale poorly across threads), so the
    FALCON step's VL model costs little extra wall time. Returns the process or None.
    """
    import multiprocessing

    from replens.vl.tiny import tiny_clip_cache_path

    if not config.falcon or config.vl is not None or not config.parallel_vl or config.device != "cpu":
        return None
    vcfg = _tiny_clip_config(config)
    if tiny_clip_cache_path(vcfg, config.cache_dir).is_file():
        return None
    process = multiprocessing.get_context("spawn").Process(
        target=_train_tiny_clip_child, args=(config.cache_dir, vcfg, config.device), daemon=True
    )
    process.start()
    return process


def _vl_args(config: AuditConfig, progress: bool, process: Any = None) -> list[str]:
    if config.vl is not None:
        return ["--vl", config.vl]
    from replens.vl.tiny import default_tiny_clip, tiny_clip_cache_path

    vcfg = _tiny_clip_config(config)
    if process is not None:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"training the tiny CLIP in a background process failed (exit code {process.exitcode})")
    path = tiny_clip_cache_path(vcfg, config.cache_dir)
    if not path.is_file():  # not trained beside the encoder: train it here (explain loads it from the file)
        default_tiny_clip(config.cache_dir, config=vcfg, device=config.device, progress=progress)
    # a tiny-clip checkpoint: `replens explain` picks its interpretability threshold itself
    return ["--vl", str(path)]


def _explain_step(
    config: AuditConfig, name: str, weights: str | None, train_spec: str, test_spec: str, size: int,
    run: RunDir, progress: bool, vl_process: Any = None,
) -> Path:
    folder = run / "explain"
    if not (folder / "metrics.json").is_file():
        _cli([
            "explain", "--model", name, *(["--weights", weights] if weights else []),
            *(["--pretrained"] if config.pretrained else []), "--data", test_spec, "--image-size", str(size),
            "--failures", "--train-data", train_spec, "--max-failures", "1000000", "--cache-dir", config.cache_dir,
            *(["--captions", config.captions] if config.captions else []), *_vl_args(config, progress, vl_process),
            "--device", config.device, "--seed", str(config.seed), "--out", str(folder),
            *([] if progress else ["--quiet"]), *map(str, config.explain_args),
        ])
    return folder


# ----------------------------------------------------------------------------- summary
def _read_table(path: Path) -> dict[str, list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}


def _thin(values: np.ndarray, n: int = 400) -> list[float]:
    """At most ``n`` evenly spaced points of a curve (the report plots, it need not store every threshold)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) > n:
        values = values[np.unique(np.linspace(0, len(values) - 1, n).round().astype(int))]
    return [float(v) for v in values]


def _accuracy_section(probes: dict[str, dict[str, Any]], domains: list[str]) -> dict[str, Any]:
    rows = []
    for probe in ("linear", "knn"):
        for encoder, result in probes.items():
            part = result[probe]
            rows.append({"encoder": encoder, "probe": probe, "all": part["top1"],
                         "per_domain": {d: part["per_domain"].get(d) for d in domains}})
    return {"domains": domains, "rows": rows}


def _qscore_section(folder: Path, metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """The report's Q-Score section and ``{test sample name -> Q-Score}`` (``metrics``: the step's metrics.json)."""
    from replens.quality import failure_prediction

    table = _read_table(folder / "scores.csv")
    test = [k for k, split in enumerate(table.get("split", [])) if split == "test"]
    scores = np.array([float(table["qscore"][k]) for k in test])
    correct = np.array([table["correct"][k] == "True" for k in test])
    names = [table["name"][k] for k in test]
    section: dict[str, Any] = {
        "eps": metrics.get("qscore", {}).get("train", {}).get("eps"),
        "n": int(len(scores)),
        "discriminative_features": metrics.get("discriminative_features"),
        "correct": [float(v) for v in scores[correct]],
        "wrong": [float(v) for v in scores[~correct]],
        "rankme": metrics.get("spectrum", {}).get("rankme"),
        "alpha_req": metrics.get("spectrum", {}).get("alpha_req"),
    }
    if len(scores):
        report = failure_prediction(scores, correct)
        section.update(auroc=100 * report.auroc, auprc=100 * report.auprc, auprc_failure=100 * report.auprc_failure,
                       correct_rate=100 * report.correct_rate)
        if report.roc:
            section["roc"] = {"fpr": _thin(report.roc["fpr"]), "tpr": _thin(report.roc["tpr"])}
            section["pr"] = {"recall": _thin(report.pr["recall"]), "precision": _thin(report.pr["precision"])}
    return section, dict(zip(names, scores.tolist(), strict=True))


def _compression_section(metrics: dict[str, Any]) -> dict[str, Any] | None:
    curve = metrics.get("compression")
    if not curve or not curve.get("points"):
        return None
    points = curve["points"]
    return {
        "k": [p["size"] for p in points],
        "curves": {
            "discriminative": [p["discriminative"] for p in points],
            "random": [p["random_mean"] for p in points],
            "pca": [p["pca"] for p in points],
        },
        "full": curve["full"],
    }


def _explain_sections(
    folder: Path, source: Any, qscores: dict[str, float], config: AuditConfig, report_dir: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """``(failures, groups, falcon summary)`` for the report; writes their images under ``report_dir/assets``.

    ``source`` is the test source FALCON explained (its rows are looked up by ``rows.json``).
    """
    from replens.explain.report import image_strip
    from replens.runs import atomic_write_bytes

    metrics = json.loads((folder / "metrics.json").read_text())
    assets = report_dir / "assets"
    failures_path = folder / "failures.json"
    failures: list[dict[str, Any]] = []
    if failures_path.is_file():
        listed = json.loads(failures_path.read_text())["failures"]
        rows = json.loads((folder / "rows.json").read_text())
        index_of = dict(zip(rows["names"], rows["index"], strict=True))
        nan = float("nan")
        # the most likely failures first: mis-classified samples by ascending Q-Score (seed section 3.4)
        listed.sort(key=lambda f: (qscores.get(f["sample"], nan) != qscores.get(f["sample"], nan),
                                   qscores.get(f["sample"], 0.0), f["row"]))
        for item in listed[: config.failures_shown]:
            sample = source[int(index_of[item["sample"]])]
            stem = f"failure-{item['row']}"
            atomic_write_bytes(assets / f"{stem}.png", image_strip([sample["image"]], size=96))
            words = [w["term"] for w in item.get("words", [])]
            feats = [str(t["feature"]) for t in item["top_features"]]
            subject = f"feature{'s' if len(feats) > 1 else ''} {', '.join(feats)}"
            if words:
                verb = "respond" if len(feats) > 1 else "responds"
                explanation = f"predicted {item['prediction']} for a {item['label']}: {subject} {verb} to " + ", ".join(
                    words[:4])
            else:
                verb = "have" if len(feats) > 1 else "has"
                explanation = f"predicted {item['prediction']} for a {item['label']}: {subject} {verb} no explained concept"
            failures.append({
                "index": int(index_of[item["sample"]]), "name": item["sample"], "image": f"assets/{stem}.png",
                "label": item["label"], "predicted": item["prediction"], "qscore": qscores.get(item["sample"]),
                "domain": _domain_of(sample, source), "explanation": explanation, "concepts": words[:8],
            })
    concepts = json.loads((folder / "concepts.json").read_text())
    groups = []
    explained = [g for g in concepts["groups"] if g.get("words") or g.get("phrases")]
    explained.sort(key=lambda g: (not g.get("interpretable"), -float(g.get("avg_similarity") or 0.0)))
    for k, g in enumerate(explained[: config.groups_shown]):
        stem = str(g["group"]).replace(",", "_")
        entry: dict[str, Any] = {
            "id": k, "name": g["group"], "features": g["features"], "interpretable": bool(g.get("interpretable")),
            "concepts": [w["term"] for w in g.get("words", [])][:8],
            "phrases": [w["term"] for w in g.get("phrases", [])][:4],
            "score": g.get("avg_similarity"), "images": g.get("n_highly"), "crops": [], "low_crops": [],
        }
        for kind, key in (("high", "crops"), ("low", "low_crops")):
            src = folder / "images" / f"group-{stem}-{kind}.png"
            if src.is_file():
                dst = assets / f"group-{stem}-{kind}.png"
                atomic_write_bytes(dst, src.read_bytes())
                entry[key].append(f"assets/{dst.name}")
        groups.append(entry)
    return failures, groups, metrics


def _domain_of(sample: dict[str, Any], source: Any) -> str | None:
    domain = sample.get("domain")
    names = list(getattr(source, "domain_names", []) or [])
    if isinstance(domain, (int, np.integer)) and 0 <= int(domain) < len(names):
        return names[int(domain)]
    return None if domain is None else str(domain)


# ----------------------------------------------------------------------------- the audit
def run_audit(config: AuditConfig, run: RunDir, progress: bool = True) -> dict[str, Any]:
    """Run the audit into ``run``; returns the summary written to ``summary.json``."""
    from replens.data import open_source
    from replens.report import write_report

    t0 = time.perf_counter()
    # Step times add up over the runs into one folder, so a resumed audit reports the compute it
    # took (not the seconds of its last, mostly skipped, run); timings.json keeps them between runs.
    timing_file = run / "timings.json"
    previous: dict[str, Any] = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    timings: dict[str, float] = {}
    runs, earlier_s = int(previous.get("runs", 0)) + 1, float(previous.get("total_s", 0.0))

    def save_timings() -> float:
        total_s = earlier_s + time.perf_counter() - t0
        atomic_write_json(timing_file, {"runs": runs, "steps": timings, "total_s": total_s})
        return total_s

    def record(step: str, seconds: float) -> None:
        timings[step] = float(previous.get("steps", {}).get(step, 0.0)) + seconds
        save_timings()

    train_spec, test_spec, world = _specs(config, progress)
    size = config.image_size or config.train.image_size
    overview: dict[str, Any] = {"data": train_spec.rsplit("?", 1)[0], "world": world}
    probes: dict[str, dict[str, Any]] = {}
    vl_process = _start_vl_training(config)
    if config.model is None:
        t = time.perf_counter()
        threads = torch.get_num_threads()
        if vl_process is not None:
            torch.set_num_threads(1)
        try:
            training = _train_step(config, train_spec, run, progress)
        finally:
            torch.set_num_threads(threads)
        record("train_s", time.perf_counter() - t)
        name, weights, pretrained = config.train.backbone, str(run / "train" / "backbone.safetensors"), False
        label = "+".join([config.train.method, *config.train.plugins])
        overview.update(encoder=name, method=config.train.method, plugins=list(config.train.plugins),
                        steps=training.get("steps"), final_loss=training.get("final_loss"),
                        images_per_s=training.get("images_per_s"))
    else:
        name, weights, pretrained = config.model, config.weights, config.pretrained
        label = config.model if not weights else f"{config.model} ({Path(weights).name})"
        overview.update(encoder=name, weights=weights)
    t = time.perf_counter()
    probes[f"{label}"] = _probe_step(name, weights, pretrained, train_spec, test_spec, size, run / "trained",
                                     config, progress)
    probes["random init"] = _probe_step(name, None, False, train_spec, test_spec, size, run / "random_init",
                                        config, progress)
    record("probe_s", time.perf_counter() - t)
    audited, baseline = probes[label], probes["random init"]
    test_src = open_source(test_spec, image_size=size)
    domains = list(test_src.domain_names)
    overview.update(
        train_samples=len(open_source(train_spec, image_size=size)), test_samples=len(test_src),
        linear_top1=audited["linear"]["top1"], random_linear_top1=baseline["linear"]["top1"],
        knn_top1=audited["knn"]["top1"], random_knn_top1=baseline["knn"]["top1"],
    )
    summary: dict[str, Any] = {
        "title": "replens audit", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "overview": overview, "accuracy": _accuracy_section(probes, domains),
        "protocol": audited.get("protocol"),
    }
    qscores: dict[str, float] = {}
    if config.qscore:
        t = time.perf_counter()
        qfolder = _qscore_step(config, run, progress)
        qmetrics = json.loads((qfolder / "metrics.json").read_text())
        summary["qscore"], qscores = _qscore_section(qfolder, qmetrics)
        compression = _compression_section(qmetrics)
        if compression:
            summary["compression"] = compression
        overview["auroc"] = summary["qscore"].get("auroc")
        record("qscore_s", time.perf_counter() - t)
    if config.falcon:
        t = time.perf_counter()
        efolder = _explain_step(config, name, weights, train_spec, test_spec, size, run, progress, vl_process)
        summary["failures"], summary["groups"], falcon_metrics = _explain_sections(
            efolder, test_src, qscores, config, run.path
        )
        fs = falcon_metrics.get("falcon", {})
        summary["falcon"] = {
            "vl": falcon_metrics.get("vl"), "bank_captions": falcon_metrics.get("bank_captions"),
            "candidate_groups": fs.get("candidate_groups"), "interpretable_groups": fs.get("interpretable_groups"),
            "explained_groups": fs.get("explained_groups"), "failures": falcon_metrics.get("failures"),
            "ground_truth_precision_at_1": (falcon_metrics.get("ground_truth", {}).get("top_k", {})
                                            .get("precision", {}).get("1")),
        }
        overview["explained_groups"] = fs.get("explained_groups")
        record("falcon_s", time.perf_counter() - t)
    overview["headline"] = _headline(summary)
    summary["timings"] = timings
    summary["seconds"], summary["runs"] = save_timings(), runs
    summary["config"] = asdict(config)
    write_report(summary, run.path)
    atomic_write_text(run / "summary.md", render_summary(summary))
    run.write_metrics({"overview": overview, "timings": timings, "seconds": summary["seconds"],
                       "qscore": {k: v for k, v in summary.get("qscore", {}).items() if not isinstance(v, list)
                                  and not isinstance(v, dict)}})
    return summary


def _headline(summary: dict[str, Any]) -> str:
    o = summary["overview"]
    parts = [f"{o['encoder']} reaches {o['linear_top1']:.1f}% linear-probe top-1 on {o['test_samples']} test "
             f"images (random init {o['random_linear_top1']:.1f}%)"]
    q = summary.get("qscore", {})
    if q.get("auroc") is not None:
        parts.append(f"its Q-Score flags probe failures without labels with AUROC {q['auroc']:.1f}")
    if summary.get("groups") is not None:
        count = len(summary["groups"])
        parts.append(f"{count} feature group{' is' if count == 1 else 's are'} explained in words")
    return "; ".join(parts) + "."


def render_summary(summary: dict[str, Any]) -> str:
    """A readable Markdown digest of an audit (the HTML report has the figures)."""
    o, acc = summary["overview"], summary["accuracy"]
    lines = ["# replens audit", "", o["headline"], "",
             f"Data: `{o['data']}` ({o['train_samples']} train / {o['test_samples']} test images); "
             f"encoder `{o['encoder']}`"
             + (f", {o['method']} + {', '.join(o['plugins']) or 'no plug-ins'}, {o['steps']} steps" if "method" in o
                else ""),
             "", "## Accuracy per domain, top-1 % on the test split", "",
             "| encoder | probe | " + " | ".join(acc["domains"]) + " | all |",
             "| --- | --- | " + " | ".join("---" for _ in acc["domains"]) + " | --- |"]
    for row in acc["rows"]:
        cells = [_pct(row["per_domain"].get(d)) for d in acc["domains"]]
        lines.append(f"| {row['encoder']} | {row['probe']} | " + " | ".join(cells) + f" | {_pct(row['all'])} |")
    q = summary.get("qscore")
    if q:
        lines += ["", "## Q-Score", "",
                  f"AUROC {_pct(q.get('auroc'))}, AUPRC {_pct(q.get('auprc'))} (probe correct on "
                  f"{_pct(q.get('correct_rate'))}% of {q['n']} test samples), eps {q.get('eps')}, "
                  f"RankMe {_pct(q.get('rankme'))}, alpha-ReQ {_pct(q.get('alpha_req'))}."]
    if summary.get("failures"):
        lines += ["", "## Likely failures (lowest Q-Score first)", ""]
        lines += [f"- `{f['name']}` ({f.get('domain')}): {f['explanation']}" for f in summary["failures"]]
    if summary.get("groups"):
        lines += ["", "## Explained feature groups", ""]
        lines += [f"- features {', '.join(map(str, g['features']))}: {', '.join(g['concepts'][:6])}"
                  for g in summary["groups"]]
    runs = summary.get("runs", 1)
    over = f" over {runs} runs into this folder" if runs > 1 else ""
    lines += ["", f"Total time: {summary['seconds']:.0f} s{over} "
              f"({', '.join(f'{k[:-2]} {v:.0f} s' for k, v in summary['timings'].items())}). "
              "Open index.html for the figures.", ""]
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{float(value):.2f}"

