"""``replens audit``: train, diagnose and explain an encoder in one command, with an HTML report.

With no arguments it runs the embedded default end to end:

1. a world (cached by config, :func:`replens.world.cached_world`) with a planted
   failure cause: the corner marker's colour tied to the class in half the train
   images, random at test (paper section 3.5);
2. SSL training (VICReg on the world preset; the DDM (paper ch. 2) and FDA
   (ch. 5) plug-ins with ``--set train.plugins=[ddm,fda]``) in the one training
   loop (:func:`replens.engine.train.train`);
3. linear probe and kNN per domain, beside a random-init encoder of the same
   architecture (:func:`replens.engine.probing.probe_backbone`);
4. Q-Score (ch. 3): :func:`replens.quality.score` on the embeddings
   (discriminative features from the train split, per-sample scores on the
   test split, failure prediction, compression curve, RankMe / alpha-ReQ);
5. FALCON (ch. 4): :func:`replens.explain.explain` with the embedded tiny CLIP
   and the world's caption bank (explained feature groups and the concepts
   behind each mis-classification);
6. the report: ``index.html`` (offline), every figure as PNG, ``summary.json``
   (:func:`replens.report.write_report`) and ``summary.md``.

With ``model`` and ``data`` set (``replens audit --model M --data D``) steps 1-2
are skipped and the given encoder is diagnosed and explained.

Each step writes into its own sub-folder and is skipped when a rerun into the
same ``--out`` finds its outputs, so an interrupted audit resumes (training
itself resumes from its last checkpoint). Steps 4-5 call the library's typed
API (:class:`~replens.quality.QScoreReport` and
:class:`~replens.explain.Explanations`, saved with ``.save`` and read back
with ``.load`` on a rerun), the same functions ``replens qscore`` and
``replens explain`` call, so the audit and the single commands share one
implementation; ``qscore_args`` / ``explain_args`` are those commands' options.
"""

from __future__ import annotations

import html
import json
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replens.apps.commands.explain import explain_options, falcon_config
from replens.apps.commands.explain import parse_options as parse_explain_options
from replens.apps.commands.qscore import parse_options as parse_qscore_options
from replens.config import load_config, preset_path
from replens.data import open_source
from replens.engine.probing import probe_backbone
from replens.engine.train import TrainConfig, train
from replens.evaluate.factors import factor_encoding
from replens.explain import Explanations, default_world_bank, explain, is_pattern_world, open_bank
from replens.explain.outputs import group_image_stem, image_strip
from replens.models import create_backbone, load_embeddings
from replens.models.weights import checkpoint_backbone_args
from replens.quality import QScoreReport, eps_for_dim, failure_prediction, score
from replens.quality.compression import compression_series
from replens.report import write_report
from replens.runs import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text, default_run_dir, open_run
from replens.vl import load_vl_model
from replens.vl.tiny import TinyClipTrainConfig, default_tiny_clip, tiny_clip_cache_path
from replens.vl.zeroshot import world_attribute_accuracy, zero_shot_classify
from replens.world import WorldConfig, cached_world
from replens.world.vocab import SHAPES


def _default_train() -> TrainConfig:
    # The world preset (presets/world.yaml: SimCLR on small_cnn, 20 epochs = 740 steps on the default world).
    # The DDM and FDA plug-ins are opt-in (--set train.plugins=[ddm,fda]): at this budget they cost about
    # 4 points of linear top-1 on world 2.0 (48.9 vs 52.9 %, scripts/validate_world_ssl.py notes).
    # VICReg instead of the preset's SimCLR: 74.3 % vs 59.7 % linear top-1 at the same 740 steps on world 2.0
    # (random init 24.9 %; scripts/validate_world_ssl.py).
    # 18 of the preset's 20 epochs keep the whole audit under 10 minutes on 2 cores (20 epochs: 10 min 3 s).
    # A 3-epoch warm-up instead of the preset's 1: at lr 0.004 one epoch let training seed 2 stall for its
    # first 200 steps and end at 51.2 % linear top-1 on the default world (seeds 0, 1: 68.4, 73.3 %); with
    # 3 epochs seeds 0-2 reach 71.8, 73.3, 69.2 % (2026-12-08, same world, 2 threads).
    preset = load_config(TrainConfig, preset_path("world"), [])
    return replace(preset, method="vicreg", epochs=18, warmup_epochs=3.0, knn_every=0, checkpoint_every=100)


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
        train: The SSL training configuration (default: the world preset with VICReg on ``small_cnn``).
        spurious: Planted failure cause of the default world: the share of train images whose corner
            marker's colour is tied to the class (random at test, paper section 3.5), so the probe learns
            a shortcut that fails at test time and FALCON has a known cause to name.
        spurious_cue: What carries that cause: ``"marker"`` (the corner patch's colour) or ``"pattern"``
            (its black-and-white pattern, which survives the colour-jitter and grayscale views).
        eps: Q-Score threshold ``mean + eps * std`` (None: :func:`replens.quality.eps_for_dim` of the
            representation size, 2 for 256 features).
        qscore: Run the Q-Score step.
        falcon: Run the FALCON step.
        vl: VL model for FALCON (None: the embedded tiny CLIP, trained for ``vl_steps``).
        vl_steps: Training steps of the embedded tiny CLIP when it is not cached.
        parallel_vl: Train that tiny CLIP in a second process while the encoder trains
            (CPU only; each process then uses one thread).
        captions: Caption bank folder (None: the world grammar bank).
        qscore_args: Extra arguments of the ``replens qscore`` step (e.g. ``["--band", "40,95"]``).
        explain_args: Extra arguments of the ``replens explain`` step (e.g. ``["--alpha-std", "4"]``).
        falcon_probe: The split FALCON finds and explains feature groups on (its probe set ``D``):
            ``"train"`` (default; no labels are read) or ``"test"``. Failures are those of the test split
            either way. A group needs more than 10 highly activating images (section 4.3, ``|T| > 10``),
            a count the paper meets on ImageNet's 50,000 validation images; on the default world's 1,200
            test images few groups reach it.
        failures_shown: Likely failures shown in the report.
        groups_shown: Explained feature groups shown in the report.
        device: Device for embedding, probing and explaining.
        seed: Seed of everything (the world, the training, the probes, the tiny CLIP).
        train_seed: Seed of the SSL training alone (None: ``seed``), to repeat the training on one world;
            ``train.seed`` is not read (the audit sets it), and setting it is an error that says so.
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
    spurious: float = 0.5
    spurious_cue: str = "marker"
    eps: float | None = None
    qscore: bool = True
    falcon: bool = True
    vl: str | None = None
    vl_steps: int = 800
    parallel_vl: bool = True
    captions: str | None = None
    qscore_args: list[str] = field(default_factory=list)
    # FALCON at the scale of the default encoder: 256 dense features leave 3 groups of > 10 images at the
    # authors' mean + 5 std (11 at + 3 std), and small_cnn's 4 x 4 last stage makes the authors' 0.6 Grad-CAM
    # threshold crop object fragments the VL model cannot name (2 of 11 groups interpretable at 0.2, with true
    # top concepts; 1 of 11 with distractor words at 0.6). Measured on the default audit's encoder.
    explain_args: list[str] = field(default_factory=lambda: ["--alpha-std", "3", "--cam-threshold", "0.2"])
    # The default encoder on the 1,200 test images: 9 candidate groups, 2 interpretable; on the 4,800 train
    # images: 62 candidates, 8 interpretable, true top concept in 75 % (the same encoder); a full audit with
    # the train split: 50 candidates, 10 interpretable, 50 % (2026-12-07, one run each).
    falcon_probe: str = "train"
    failures_shown: int = 12
    groups_shown: int = 12
    device: str = "cpu"
    seed: int = 0
    train_seed: int | None = None


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
        wcfg = WorldConfig(n=config.world_n, size=config.world_size, domains=list(config.domains), seed=config.seed,
                           spurious=config.spurious, spurious_cue=config.spurious_cue)
        world = cached_world(wcfg, config.cache_dir, progress)
    return f"world:{world}?split=train", f"world:{world}?split=test", str(world)


def _train_config(config: AuditConfig) -> TrainConfig:
    """The SSL training configuration: ``config.train`` seeded by ``train_seed``, else by the audit's ``seed``."""
    return replace(config.train, seed=config.seed if config.train_seed is None else config.train_seed)


def _train_step(config: AuditConfig, train_spec: str, run: RunDir, progress: bool) -> dict[str, Any]:
    folder = run / "train"
    done = folder / "train_summary.json"
    if done.is_file() and (folder / "backbone.safetensors").is_file():
        return json.loads(done.read_text())
    tcfg = _train_config(config)
    source = open_source(train_spec, image_size=tcfg.image_size)
    summary = train(tcfg, source, folder, resume=True, progress=progress)
    summary.pop("backbone", None)
    summary = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, list, dict, bool)) or v is None}
    atomic_write_json(done, summary)
    return summary


def _probe_step(
    name: str, weights: str | None, pretrained: bool, train_spec: str, test_spec: str, size: int,
    folder: Path, config: AuditConfig, progress: bool, architecture: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Linear and kNN probes of one encoder (``architecture``: backbone options of a random-init control, so
    it matches the trained encoder; weights files carry their own)."""
    done = folder / "probe.json"
    if done.is_file():
        return json.loads(done.read_text())
    torch.manual_seed(config.seed)
    backbone = create_backbone(name, weights=weights, pretrained=pretrained, **(architecture or {})).eval()
    train_src = open_source(train_spec, image_size=size)
    test_src = open_source(test_spec, image_size=size)
    result = probe_backbone(backbone, train_src, test_src, folder, config.device, progress)
    atomic_write_json(done, result)
    return result


def _qscore_step(config: AuditConfig, run: RunDir, progress: bool) -> QScoreReport:
    """Q-Score of the trained encoder's embeddings (``qscore/``), or the report a finished run saved there."""
    folder = run / "qscore"
    if (folder / "metrics.json").is_file():
        return QScoreReport.load(folder)

    train_emb, test_emb = run / "trained" / "embeddings-train", run / "trained" / "embeddings-test"
    eps = config.eps if config.eps is not None else eps_for_dim(int(load_embeddings(train_emb).features.shape[1]))
    qconfig = parse_qscore_options([str(a) for a in config.qscore_args], eps=eps, labels=True, top_failures=0,
                            device=config.device, seed=config.seed)
    torch.manual_seed(config.seed)
    step_config = {"command": "qscore", "embeddings": str(train_emb), "test_embeddings": str(test_emb),
                   **asdict(qconfig)}
    with open_run(folder, step_config):
        report = score(train_emb, test=test_emb, config=qconfig, work_dir=folder, progress=progress)
        report.save(folder, table_format="csv")
    return report


def _tiny_clip_config(config: AuditConfig) -> Any:
    # trained on the audit's own world config, so the two share one cached world. Object crops drawn more
    # often and a higher learning rate teach shapes within the encoder's training time: 700 steps name the
    # shape of 90 % of object crops and 65 % of whole images of world 2.0 (400 steps at the trainer's
    # defaults: 60 % and 33 %).
    return TinyClipTrainConfig(steps=config.vl_steps, seed=config.seed, world_n=config.world_n,
                               world_size=config.world_size, world_domains=tuple(config.domains),
                               lr=2e-3, kind_weights=(0.35, 0.55, 0.10), world_spurious=config.spurious,
                               world_spurious_cue=config.spurious_cue)


def _train_tiny_clip_child(cache_dir: str, config_json: str, device: str) -> None:
    """Train the default tiny CLIP of ``config_json`` (a :class:`TinyClipTrainConfig` as JSON) into ``cache_dir``.

    Runs in a second Python process beside the SSL training, one thread each (see :func:`_start_vl_training`).
    """
    import logging

    from replens.config import from_dict
    from replens.vl import TinyClipTrainConfig

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    vcfg = from_dict(TinyClipTrainConfig, json.loads(config_json))
    default_tiny_clip(cache_dir, config=vcfg, device=device, progress=False)


def _start_vl_training(config: AuditConfig) -> Any:
    """Train the tiny CLIP in a second process while the encoder trains, when it is needed and not cached.

    On a small CPU two one-thread processes get more done than one process on
    two threads (tiny convolutions scale poorly across threads), so the
    FALCON step's VL model costs little extra wall time. Returns the process (``subprocess.Popen``) or None.

    A fresh interpreter (``python -c``), not ``multiprocessing``: its spawn start re-runs the caller's
    ``__main__``, so a user's script calling :func:`audit` without an ``if __name__ == "__main__":`` guard
    would start a second audit in the child, which fails on the locked run folder.
    """
    import subprocess
    import sys

    if not config.falcon or config.vl is not None or not config.parallel_vl or config.device != "cpu":
        return None
    vcfg = _tiny_clip_config(config)
    if tiny_clip_cache_path(vcfg, config.cache_dir).is_file():
        return None
    code = "import sys; from replens.apps.audit import _train_tiny_clip_child as t; t(*sys.argv[1:])"
    errors = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # read back when the child fails
    process = subprocess.Popen([sys.executable, "-c", code, str(config.cache_dir), json.dumps(asdict(vcfg)),
                                config.device], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
    process.error_file = errors  # type: ignore[attr-defined]
    return process


def _stop_vl_training(process: Any) -> None:
    """End the background tiny-CLIP training when the audit stops early (an error, Ctrl-C); close its error file."""
    import subprocess

    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # still running after SIGTERM: kill it
            process.kill()
            process.wait()
    process.error_file.close()


def _vl_name(config: AuditConfig, progress: bool, process: Any = None) -> str:
    """The VL model FALCON uses: ``config.vl``, else the cached tiny CLIP checkpoint (trained here if missing)."""
    if config.vl is not None:
        return config.vl

    vcfg = _tiny_clip_config(config)
    if process is not None:
        if process.wait() != 0:
            process.error_file.seek(0)
            last = process.error_file.read().strip().splitlines()[-1:] or ["no error output"]
            raise RuntimeError(f"training the tiny CLIP in a background process failed (exit code "
                               f"{process.returncode}): {last[0]}")
    path = tiny_clip_cache_path(vcfg, config.cache_dir)
    if not path.is_file():  # not trained beside the encoder: train it here (explain loads it from the file)
        default_tiny_clip(config.cache_dir, config=vcfg, device=config.device, progress=progress)
    # a tiny-clip checkpoint: the library picks its interpretability threshold itself
    return str(path)


def _explain_step(
    config: AuditConfig, name: str, weights: str | None, train_spec: str, test_spec: str, size: int,
    run: RunDir, progress: bool, vl_process: Any = None,
) -> Explanations:
    """FALCON on ``config.falcon_probe``'s split, with the test split's failures explained by a probe fitted on
    the train split (``explain/``)."""
    folder = run / "explain"
    if (folder / "metrics.json").is_file():
        return Explanations.load(folder)
    probe_spec = train_spec if config.falcon_probe == "train" else test_spec
    options = parse_explain_options(
        [str(a) for a in config.explain_args], model=name, weights=weights, pretrained=config.pretrained,
        data=probe_spec, image_size=size, failures=True, train_data=train_spec, max_failures=1_000_000,
        failure_data=None if probe_spec == test_spec else test_spec,
        cache_dir=config.cache_dir, captions=config.captions, vl=_vl_name(config, progress, vl_process),
        device=config.device, seed=config.seed,
    )
    torch.manual_seed(config.seed)
    source = open_source(options.data, image_size=options.image_size)
    backbone = create_backbone(options.model, weights=options.weights, pretrained=options.pretrained).eval()
    backbone.require_layers([options.layer])
    falcon = falcon_config(options)
    step_config = {"command": "explain", "model": options.model, "weights": options.weights,
                   "pretrained": options.pretrained, "data": options.data, "train_data": options.train_data,
                   "failure_data": options.failure_data,
                   "vl": options.vl, "vl_weights": options.vl_weights, "captions": options.captions,
                   "falcon": asdict(falcon), **{k: v for k, v in explain_options(options).items()
                                                if k not in ("train_data", "failure_data", "transfer")}}
    t0 = time.perf_counter()
    with open_run(folder, step_config):
        vl = load_vl_model(options.vl, weights=options.vl_weights, device=options.device,
                           cache_dir=options.cache_dir, progress=progress)
        bank = open_bank(options.captions) if options.captions else default_world_bank(
            vl, options.cache_dir, progress=progress, patterns=is_pattern_world(source))
        found = explain(backbone, source, vl, bank, falcon, model_name=options.model, data_name=options.data,
                        progress=progress, **explain_options(options))
        found.metrics["seconds"] = time.perf_counter() - t0
        found.save(folder)
    return found


# ----------------------------------------------------------------------------- summary
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


def _qscore_section(report: QScoreReport) -> tuple[dict[str, Any], dict[str, float]]:
    """The report's Q-Score section and ``{test sample name -> Q-Score}``."""
    metrics = report.metrics
    test = report.split_rows("test")
    scores = np.array([float(report.samples["qscore"][k]) for k in test])
    correct = np.array([bool(report.samples["correct"][k]) for k in test], dtype=bool)
    names = [report.samples["name"][k] for k in test]
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
        fp = failure_prediction(scores, correct)
        section.update(auroc=100 * fp.auroc, auprc=100 * fp.auprc, auprc_failure=100 * fp.auprc_failure,
                       correct_rate=100 * fp.correct_rate)
        if fp.roc:
            section["roc"] = {"fpr": _thin(fp.roc["fpr"]), "tpr": _thin(fp.roc["tpr"])}
            section["pr"] = {"recall": _thin(fp.pr["recall"]), "precision": _thin(fp.pr["precision"])}
    return section, dict(zip(names, scores.tolist(), strict=True))


def _compression_section(metrics: dict[str, Any]) -> dict[str, Any] | None:
    curve = metrics.get("compression")
    if not curve or not curve.get("points"):
        return None

    return compression_series(curve, ("discriminative", "random", "pca"))


def _explain_sections(
    found: Explanations, folder: Path, source: Any, qscores: dict[str, float], config: AuditConfig, report_dir: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """``(failures, groups, falcon summary)`` for the report; writes their images under ``report_dir/assets``.

    ``source`` is the test source whose failures were explained (looked up by
    :meth:`~replens.explain.Explanations.failure_index_of`); the group crops are the PNGs ``found.save`` wrote
    under ``folder/images``.
    """
    metrics = found.metrics
    assets = report_dir / "assets"
    failures: list[dict[str, Any]] = []
    if found.failures is not None:
        listed = found.failure_records
        index_of = found.failure_index_of()
        nan = float("nan")
        # the most likely failures first: mis-classified samples by ascending Q-Score (paper section 3.4)
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
    groups = []
    explained = [g for g in found.groups if g.get("words") or g.get("phrases")]
    explained.sort(key=lambda g: (not g.get("interpretable"), -float(g.get("avg_similarity") or 0.0)))
    for k, g in enumerate(explained[: config.groups_shown]):
        stem = group_image_stem(str(g["group"]))
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


def _vl_accuracy(config: AuditConfig, vl_name: str, test_src: Any, run: RunDir) -> dict[str, Any] | None:
    """How well the VL model names shapes on the world's test split: object crops and whole images.

    FALCON captions Grad-CAM crops, so the crop accuracy bounds what its concepts can get right.
    Only for world data (the crops need the world's boxes). Chance is 10 % (10 shapes).
    """
    if not hasattr(test_src, "records"):
        return None
    done = run / "vl_accuracy.json"
    if done.is_file():
        return json.loads(done.read_text())
    vl = load_vl_model(vl_name, device=config.device, cache_dir=config.cache_dir, progress=False)
    crops = world_attribute_accuracy(vl, test_src, max_items=600, seed=config.seed)
    whole = zero_shot_classify(vl, test_src)
    result = {"shape_crops": crops.get("shape"), "colour_crops": crops.get("colour"),
              "texture_crops": crops.get("texture"), "marker_crops": crops.get("marker"),
              "crops": crops.get("object_crops"), "shape_images": whole["top1"],
              "shape_images_per_domain": whole["per_domain"], "images": whole["samples"], "chance": 10.0}
    atomic_write_json(done, result)
    return result


#: What carries the planted cause, by the world's ``spurious_cue``.
_CUE_WORD: dict[str, str] = {"marker": "colour", "pattern": "pattern"}


def _cue_section(found: Explanations, test_src: Any) -> dict[str, Any] | None:
    """Failures the planted cue explains, and whether FALCON names the cue for them.

    The default world ties the corner marker's colour to the class in ``spurious`` of the train images
    and draws it at random at test. The explain step already counts, with
    :func:`replens.explain.ground_truth.failure_spurious_report`, the failures whose image carries the cue
    of the class they were mistaken for (by chance one in ten) and those whose concepts name the cue;
    this is that report in the audit's terms.
    """
    world_config = getattr(test_src, "config", None)
    strength = float(getattr(world_config, "spurious", 0.0) or 0.0)
    failures = found.metrics.get("failures") or {}
    report = failures.get("spurious")
    kind = getattr(world_config, "spurious_cue", None)
    if strength <= 0 or kind not in _CUE_WORD or not report:
        return None
    with_cue, cue = report["failures"], report["spurious_driven"]
    grey = int(report.get("spurious_driven_colourless", 0))
    named = int(report.get("named_among_nameable", report["named_among_spurious_driven"]))
    return {
        "cue": f"corner marker {_CUE_WORD[kind]} tied to the class", "kind": kind, "strength": strength, "failures": failures.get("explained"),
        "with_marker": with_cue, "cue_failures": cue, "chance_share": 100.0 / len(SHAPES),
        "share": 100.0 * cue / with_cue if with_cue else None,
        # sketches draw the marker as a grey level: no colour word is true of it there, so those are apart
        "cue_failures_colourless": grey, "named": named,
        "named_share": 100.0 * named / (cue - grey) if cue - grey > 0 else None,
    }


def _encoding_section(run: RunDir, test_src: Any, discriminative: np.ndarray | None) -> dict[str, Any] | None:
    """What single features of the audited encoder encode: the correlation ratio with each labelled factor.

    Q-Score and FALCON read single features; when the features follow another factor of the data more than
    the class (the render domain, say), that is where their results come from. Factors: the class, the render
    domain (more than one) and, on a world with a planted cue, the marker colour of each test image.
    """
    emb = load_embeddings(run / "trained" / "embeddings-test")
    factors: dict[str, np.ndarray] = {"class": np.asarray(emb.labels)}
    if len(np.unique(emb.domains)) > 1:
        factors["domain"] = np.asarray(emb.domains)
    world_config = getattr(test_src, "config", None)
    cues = getattr(test_src, "spurious_cues", None)
    if cues is not None and float(getattr(world_config, "spurious", 0.0) or 0.0) > 0:
        factors["planted cue"] = np.asarray(cues)[np.asarray(emb.index)]
    if (factors["class"] < 0).all():
        return None
    sets = {"discriminative": discriminative} if discriminative is not None and len(discriminative) else None
    found = factor_encoding(np.asarray(emb.features), factors, feature_sets=sets)
    return {"measure": "correlation ratio eta^2 of each feature with the factor, on L2-normalised test "
                       "representations (0: ignores it, 1: a function of it)",
            "factors": [e.to_dict() for e in found]}


def _encoding_line(section: dict[str, Any]) -> str:
    """One sentence: which factor single features follow, best feature and median, strongest first."""
    factors = sorted(section["factors"], key=lambda e: -e["best"])
    parts = [f"{e['factor']} {e['best']:.2f} (median {e['median']:.2f}"
             + (f", within Q-Score's discriminative set {e['median_in']['discriminative']:.2f}"
                if "discriminative" in e.get("median_in", {}) else "") + ")" for e in factors]
    lead = factors[0]["factor"]
    follow = "" if lead == "class" else (f"; single features follow the {lead} more than the class, so Q-Score and "
                                         "FALCON, which read single features, see the " + lead)
    return "What single features encode (eta^2 of the best feature): " + ", ".join(parts) + follow + "."


def _two_proportions(p1: float, p2: float, n: int) -> float:
    """z of a two-proportion test (percentages on two independent samples of size ``n``)."""
    a, b = p1 / 100.0, p2 / 100.0
    pooled = (a + b) / 2.0
    se = np.sqrt(max(pooled * (1 - pooled) * 2.0 / max(n, 1), 1e-12))
    return float((a - b) / se)


def _auroc_ci(auroc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """95 % interval of an AUROC (Hanley & McNeil 1982), percent in and out."""
    a = auroc / 100.0
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / max(n_pos * n_neg, 1)
    half = 1.96 * np.sqrt(max(var, 0.0))
    return 100 * (a - half), 100 * (a + half)


def _verdicts(summary: dict[str, Any]) -> list[str]:
    """One line per method: its number beside its control, and a verdict by a stated test."""
    o, lines = summary["overview"], []
    n = int(o.get("test_samples") or 0)
    z = _two_proportions(o["linear_top1"], o["random_linear_top1"], n)
    verdict = "learns" if z > 3.29 else "does not beat its random init" if z < 1.96 else "barely beats its random init"
    lines.append(f"Encoder {verdict}: {o['linear_top1']:.1f}% linear-probe top-1 vs {o['random_linear_top1']:.1f}% "
                 f"for the same architecture at random init (chance {100 / max(len(o.get('classes') or []), 1):.0f}%; "
                 f"two-proportion z = {z:.1f} on {n} test images).")
    q = summary.get("qscore") or {}
    if q.get("auroc") is not None:
        lo, hi = _auroc_ci(q["auroc"], len(q.get("correct", [])), len(q.get("wrong", [])))
        word = ("separates correct from wrong" if lo > 50 else "ranks wrong above correct" if hi < 50
                else "does not separate correct from wrong")
        lines.append(f"Q-Score {word} without labels: AUROC {q['auroc']:.1f} vs 50 by chance (95% CI {lo:.1f}-{hi:.1f}); "
                     f"AUPRC {q['auprc']:.1f} vs a base rate of {q['correct_rate']:.1f}.")
    f = summary.get("falcon")
    if f:
        gt = f.get("ground_truth_precision_at_1")
        on = (f" (groups found on the {f['probe_images']} {f.get('probe_split') or ''} images, no labels read)"
              if f.get("probe_images") else "")
        lines.append(f"FALCON{on}: {f.get('interpretable_groups') or 0} of {f.get('candidate_groups') or 0} candidate feature "
                     f"groups are interpretable and {f.get('explained_groups') or 0} are explained in words"
                     + (f"; their top concept is a true concept of the images in {gt:.0f}% of groups" if gt is not None
                        else "") + ".")
        vl = f.get("vl_accuracy")
        if vl:
            lines.append(f"The VL model names the shape of {vl['shape_crops']:.0f}% of object crops and "
                         f"{vl['shape_images']:.0f}% of whole images (chance 10%).")
    if summary.get("encoding"):
        lines.append(_encoding_line(summary["encoding"]))
    cue = summary.get("failure_causes")
    if cue and cue.get("with_marker"):
        grey = int(cue.get("cue_failures_colourless") or 0)
        word = _CUE_WORD.get(cue.get("kind", "marker"), "colour")
        named = (f"; FALCON names the marker {word} for {cue['named_share']:.0f}% of them"
                 + (f" ({cue['cue_failures'] - grey} whose domain draws colour; the {grey} in sketches show the marker "
                    "as a grey level, which no colour word names)" if grey else "")
                 if cue.get("named_share") is not None else "")
        lines.append(f"Planted cause (marker {word} tied to the class in {100 * cue['strength']:.0f}% of train images, "
                     f"random at test): {cue['cue_failures']} of {cue['with_marker']} failures "
                     f"({cue['share']:.0f}%, chance {cue['chance_share']:.0f}%) predict the class the marker was tied "
                     f"to{named}.")
    return lines


# ----------------------------------------------------------------------------- the audit
class _Timings:
    """The audit's step times, added up over the runs into one folder (kept in ``timings.json``).

    A resumed audit so reports the compute it took, not the seconds of its last, mostly skipped, run.
    """

    def __init__(self, run: RunDir) -> None:
        self.t0 = time.perf_counter()
        self.file = run / "timings.json"
        self.previous: dict[str, Any] = json.loads(self.file.read_text()) if self.file.exists() else {}
        self.steps: dict[str, float] = {}
        self.runs = int(self.previous.get("runs", 0)) + 1
        self.earlier_s = float(self.previous.get("total_s", 0.0))

    def save(self) -> float:
        """Write ``timings.json``; returns the total seconds over all runs."""
        total_s = self.earlier_s + time.perf_counter() - self.t0
        atomic_write_json(self.file, {"runs": self.runs, "steps": self.steps, "total_s": total_s})
        return total_s

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step ``name`` (added to the earlier runs' time of it) when it finishes."""
        t = time.perf_counter()
        yield
        self.steps[name] = float(self.previous.get("steps", {}).get(name, 0.0)) + time.perf_counter() - t
        self.save()


def _architecture(weights: str | None) -> dict[str, Any]:
    """Backbone options of the audited encoder, from its weights file's header (trained here or ``--weights``)."""
    return checkpoint_backbone_args(weights) if weights else {}


def run_audit(config: AuditConfig, run: RunDir, progress: bool = True) -> dict[str, Any]:
    """Run the audit into ``run``; returns the summary written to ``summary.json``."""
    if config.falcon_probe not in ("train", "test"):  # before the world and the training, not after them
        raise ValueError(f"falcon_probe must be 'train' or 'test', got {config.falcon_probe!r}")
    if config.train.seed != 0:  # the audit seeds the training itself: a train.seed would be silently ignored
        raise ValueError(f"train.seed={config.train.seed} is not read by the audit: use --seed (world, training, "
                         f"probes) or --set train_seed={config.train.seed} (the training alone)")
    timings = _Timings(run)
    train_spec, test_spec, world = _specs(config, progress)
    size = config.image_size or config.train.image_size
    overview: dict[str, Any] = {"data": train_spec.rsplit("?", 1)[0], "world": world}
    vl_process = _start_vl_training(config)
    try:
        name, weights, pretrained, label = _encoder(config, train_spec, run, progress, vl_process, timings, overview)
        with timings.step("probe_s"):
            probes = {
                label: _probe_step(name, weights, pretrained, train_spec, test_spec, size, run / "trained", config,
                                   progress),
                "random init": _probe_step(name, None, False, train_spec, test_spec, size, run / "random_init", config,
                                           progress, _architecture(weights)),
            }
        test_src = open_source(test_spec, image_size=size)
        overview.update(train_samples=len(open_source(train_spec, image_size=size)), test_samples=len(test_src))
        summary = _probe_summary(overview, probes, label, test_src)
        qscores, discriminative = _add_qscore(summary, config, run, progress, timings)
        encoding = _encoding_section(run, test_src, discriminative)
        if encoding:
            summary["encoding"] = encoding
        if config.falcon:
            with timings.step("falcon_s"):
                _add_falcon(summary, config, (name, weights), (train_spec, test_spec, size), run, progress, vl_process,
                            test_src, qscores)
        overview["classes"] = list(test_src.classes)
        if (summary.get("protocol") or {}).get("planted_cause"):
            overview["planted_cause"] = summary["protocol"]["planted_cause"]
        overview["headline"] = _headline(summary)
        overview["verdicts"] = _verdicts(summary)
        summary["timings"] = timings.steps
        summary["seconds"], summary["runs"] = timings.save(), timings.runs
        summary["config"] = asdict(config)
        write_report(summary, run.path)
        atomic_write_text(run / "summary.md", render_summary(summary))
        run.write_metrics({"overview": overview, "timings": timings.steps, "seconds": summary["seconds"],
                           "qscore": {k: v for k, v in summary.get("qscore", {}).items() if not isinstance(v, list)
                                      and not isinstance(v, dict)}})
        return summary
    finally:
        _stop_vl_training(vl_process)


def _encoder(config: AuditConfig, train_spec: str, run: RunDir, progress: bool, vl_process: Any, timings: _Timings,
             overview: dict[str, Any]) -> tuple[str, str | None, bool, str]:
    """``(backbone name, weights, pretrained, label)`` of the audited encoder: trained here, or the given one.

    Adds the encoder (and the training's steps, loss and speed) to ``overview``.
    """
    if config.model is not None:
        name, weights, pretrained = config.model, config.weights, config.pretrained
        overview.update(encoder=name, weights=weights)
        return name, weights, pretrained, config.model if not weights else f"{config.model} ({Path(weights).name})"
    with timings.step("train_s"):
        threads = torch.get_num_threads()
        if vl_process is not None:  # the tiny CLIP trains beside it in a child process
            torch.set_num_threads(1)
        try:
            training = _train_step(config, train_spec, run, progress)
        finally:
            torch.set_num_threads(threads)
    overview.update(encoder=config.train.backbone, method=config.train.method, plugins=list(config.train.plugins),
                    steps=training.get("steps"), final_loss=training.get("final_loss"),
                    images_per_s=training.get("images_per_s"))
    label = "+".join([config.train.method, *config.train.plugins])
    return config.train.backbone, str(run / "train" / "backbone.safetensors"), False, label


def _probe_summary(overview: dict[str, Any], probes: dict[str, dict[str, Any]], label: str,
                   test_src: Any) -> dict[str, Any]:
    """The summary so far: the overview with both probes' top-1, accuracy per domain and the protocol."""
    audited, baseline = probes[label], probes["random init"]
    overview.update(
        linear_top1=audited["linear"]["top1"], random_linear_top1=baseline["linear"]["top1"],
        knn_top1=audited["knn"]["top1"], random_knn_top1=baseline["knn"]["top1"],
    )
    summary: dict[str, Any] = {
        "title": "replens audit", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "overview": overview, "accuracy": _accuracy_section(probes, list(test_src.domain_names)),
        "protocol": audited.get("protocol"),
    }
    world_config = getattr(test_src, "config", None)
    planted = float(getattr(world_config, "spurious", 0.0) or 0.0)
    kind = getattr(world_config, "spurious_cue", "marker")
    if planted > 0 and kind in _CUE_WORD:
        summary["protocol"] = {**(summary["protocol"] or {}), "planted_cause": (
            f"in {100 * planted:.0f}% of the train images the corner marker's {_CUE_WORD[kind]} is tied to the class; at test "
            "it is random, so a probe that learned the shortcut fails on it (paper section 3.5)")}
    return summary


def _add_qscore(summary: dict[str, Any], config: AuditConfig, run: RunDir, progress: bool,
                timings: _Timings) -> tuple[dict[str, float], np.ndarray | None]:
    """Add the Q-Score and compression sections (when ``config.qscore``).

    Returns ``(per-sample Q-Scores, discriminative features)``: ``({}, None)`` when Q-Score is off.
    """
    if not config.qscore:
        return {}, None
    with timings.step("qscore_s"):
        qreport = _qscore_step(config, run, progress)
        summary["qscore"], qscores = _qscore_section(qreport)
        compression = _compression_section(qreport.metrics)
        if compression:
            summary["compression"] = compression
        summary["overview"]["auroc"] = summary["qscore"].get("auroc")
    return qscores, qreport.discriminative


def _add_falcon(summary: dict[str, Any], config: AuditConfig, encoder: tuple[str, str | None],
                data: tuple[str, str, int], run: RunDir, progress: bool, vl_process: Any, test_src: Any,
                qscores: dict[str, float]) -> None:
    """Add FALCON's sections: explained failures and groups, its counts, the VL model's accuracy and the causes.

    ``encoder`` is ``(backbone name, weights)``, ``data`` ``(train spec, test spec, image size)``.
    """
    found = _explain_step(config, *encoder, *data, run, progress, vl_process)
    summary["failures"], summary["groups"], falcon_metrics = _explain_sections(
        found, run / "explain", test_src, qscores, config, run.path
    )
    fs = falcon_metrics.get("falcon", {})
    vl_accuracy = _vl_accuracy(config, _vl_name(config, progress), test_src, run)
    summary["falcon"] = {
        "vl": falcon_metrics.get("vl"), "bank_captions": falcon_metrics.get("bank_captions"),
        "probe_split": config.falcon_probe, "probe_images": fs.get("samples"),
        "candidate_groups": fs.get("candidate_groups"), "interpretable_groups": fs.get("interpretable_groups"),
        "explained_groups": fs.get("explained_groups"), "failures": falcon_metrics.get("failures"),
        # precision@k keys are ints in a fresh run's metrics and strings once read back from JSON
        "ground_truth_precision_at_1": next((v for k, v in (falcon_metrics.get("ground_truth", {}).get("top_k", {})
                                                            .get("precision", {}) or {}).items()
                                             if str(k) == "1"), None),
        "vl_accuracy": vl_accuracy,
    }
    causes = _cue_section(found, test_src)
    if causes:
        summary["failure_causes"] = causes
    summary["overview"]["explained_groups"] = fs.get("explained_groups")


def _headline(summary: dict[str, Any]) -> str:
    o = summary["overview"]
    classes = len(o.get("classes") or []) or None
    chance = f", chance {100 / classes:.0f}%" if classes else ""
    parts = [f"{o['encoder']} reaches {o['linear_top1']:.1f}% linear-probe top-1 on {o['test_samples']} test "
             f"images (random init {o['random_linear_top1']:.1f}%{chance})"]
    q = summary.get("qscore", {})
    if q.get("auroc") is not None:
        parts.append(f"its Q-Score flags probe failures without labels with AUROC {q['auroc']:.1f} (chance 50)")
    if summary.get("groups") is not None:
        count = len(summary["groups"])
        f = summary.get("falcon") or {}
        gt = f.get("ground_truth_precision_at_1")
        detail = f" ({f.get('interpretable_groups') or 0} interpretable" + (
            f"; true top concept in {gt:.0f}%)" if gt is not None else ")") if f else ""
        parts.append(f"{count} feature group{' is' if count == 1 else 's are'} explained in words{detail}")
    return "; ".join(parts) + "."


def render_summary(summary: dict[str, Any]) -> str:
    """A readable Markdown digest of an audit (the HTML report has the figures)."""
    o, acc = summary["overview"], summary["accuracy"]
    lines = ["# replens audit", "", o["headline"], "", *[f"- {_md(v)}" for v in o.get("verdicts", [])], "",
             f"Data: {_md(o['data'])} ({o['train_samples']} train / {o['test_samples']} test images); "
             f"encoder {_md(o['encoder'])}"
             + (f", {_md(o['method'])} + {_md(', '.join(o['plugins']) or 'no plug-ins')}, {o['steps']} steps"
                if "method" in o
                else ""),
             "", "## Accuracy per domain, top-1 % on the test split", "",
             "| encoder | probe | " + " | ".join(map(_md, acc["domains"])) + " | all |",
             "| --- | --- | " + " | ".join("---" for _ in acc["domains"]) + " | --- |"]
    for row in acc["rows"]:
        cells = [_pct(row["per_domain"].get(d)) for d in acc["domains"]]
        lines.append(f"| {_md(row['encoder'])} | {_md(row['probe'])} | " + " | ".join(cells) + f" | {_pct(row['all'])} |")
    q = summary.get("qscore")
    if q:
        lines += ["", "## Q-Score", "",
                  f"AUROC {_pct(q.get('auroc'))}, AUPRC {_pct(q.get('auprc'))} (probe correct on "
                  f"{_pct(q.get('correct_rate'))}% of {q['n']} test samples), eps {q.get('eps')}, "
                  f"RankMe {_pct(q.get('rankme'))}, alpha-ReQ {_pct(q.get('alpha_req'))}."]
    enc = summary.get("encoding")
    if enc:
        lines += ["", "## What single features encode", "", f"{_md(enc['measure'])}.", "",
                  "| factor | levels | best feature | eta^2 best | eta^2 median | median in Q-Score's D |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for e in enc["factors"]:
            inside = e.get("median_in", {}).get("discriminative")
            lines.append(f"| {_md(e['factor'])} | {e['levels']} | {e['top_features'][0]} | {e['best']:.2f} | "
                         f"{e['median']:.2f} | {'' if inside is None else f'{inside:.2f}'} |")
    if summary.get("failures"):
        lines += ["", "## Likely failures (lowest Q-Score first)", ""]
        lines += [f"- {_md(f['name'])} ({_md(f.get('domain'))}): {_md(f['explanation'])}" for f in summary["failures"]]
    if summary.get("groups"):
        lines += ["", "## Explained feature groups", ""]
        lines += [f"- features {', '.join(map(str, g['features']))}: {_md(', '.join(g['concepts'][:6]))}"
                  for g in summary["groups"]]
    protocol = summary.get("protocol") or {}
    if protocol:
        lines += ["", "## Protocol", ""]
        lines += [f"- {_md(k.replace('_', ' '))}: {_md(v)}" for k, v in protocol.items()]
    runs = summary.get("runs", 1)
    over = f" over {runs} runs into this folder" if runs > 1 else ""
    lines += ["", f"Total time: {summary['seconds']:.0f} s{over} "
              f"({', '.join(f'{k[:-2]} {v:.0f} s' for k, v in summary['timings'].items())}). "
              "Open index.html for the figures.", ""]
    return "\n".join(lines)


def _md(value: Any) -> str:
    """A name as Markdown text: HTML escaped (as in index.html), Markdown syntax backslash-escaped, one line."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*\[\]|])", r"\\\1", text)


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{float(value):.2f}"



# ----------------------------------------------------------------------------- the Python API
@dataclass
class AuditReport:
    """An audit's result: the summary of ``summary.json`` and the folder holding the report.

    Attributes:
        summary: Overview, accuracy per domain, Q-Score, compression, failures, groups, timings, config.
        path: The run folder (``index.html``, ``figures/``, ``summary.md`` and one sub-folder per step).
    """

    summary: dict[str, Any]
    path: Path

    @property
    def headline(self) -> str:
        """The one-sentence result (encoder accuracy, Q-Score AUROC, explained groups)."""
        return str(self.summary["overview"]["headline"])

    def save(self, directory: str | Path) -> Path:
        """Write ``summary.json`` and ``summary.md`` into ``directory`` (the audit itself writes them to its folder)."""
        folder = Path(directory)
        atomic_write_json(folder / "summary.json", self.summary)
        atomic_write_text(folder / "summary.md", render_summary(self.summary))
        return folder

    @classmethod
    def load(cls, directory: str | Path) -> AuditReport:
        """Read the report of an audit run folder."""
        folder = Path(directory)
        return cls(summary=json.loads((folder / "summary.json").read_text(encoding="utf-8")), path=folder)


def audit(config: AuditConfig | None = None, out: str | Path | None = None, *, overwrite: bool = False,
          progress: bool = False) -> AuditReport:
    """Train (or take), diagnose and explain an encoder; ``replens audit`` as a function.

    Args:
        config: The audit's settings (default :class:`AuditConfig`: the embedded default end to end).
        out: Its run folder (default ``runs/audit-<time>``); a rerun into the same folder resumes.
        overwrite: Replace a run folder made from other inputs.
        progress: Show progress bars.

    Returns:
        The :class:`AuditReport`.
    """
    config = config or AuditConfig()
    folder = Path(out) if out is not None else default_run_dir("audit")
    with open_run(folder, {"command": "audit", **asdict(config)}, overwrite=overwrite) as run:
        summary = run_audit(config, run, progress=progress)
    return AuditReport(summary=summary, path=folder)
