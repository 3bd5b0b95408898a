"""The Q-Score pipeline as one call (paper chapter 3): :func:`score` returns a :class:`QScoreReport`.

From a folder of streamed representations (``replens embed``), or from an
encoder and a data source (the representations are streamed to ``work_dir``
first), :func:`score` finds the discriminative features on the first split,
scores every sample of both splits with Eq. 3.1 and, with ``labels=True``,
measures how well Q-Score predicts linear-probe failures (section 3.4) and
draws the compression curve (section 3.4.2); RankMe and alpha-ReQ are always
computed, Grad-CAM IoU with core/spurious masks (section 3.5) on request.

The report is plain data: :meth:`QScoreReport.save` writes the files of
``replens qscore`` (``scores.parquet`` or ``.csv``, ``failures.csv``,
``feature_sets.json``, ``metrics.json`` and the plots) and
:meth:`QScoreReport.load` reads them back::

    from replens.quality import score

    report = score("runs/emb-train", test="runs/emb-test", labels=True, eps=2.0)
    report.metrics["failure_prediction"]["auroc"]
    report.test_scores()                          # {sample name -> Q-Score} of the judged split
    report.save("runs/qscore")
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from replens.data import open_source
from replens.evaluate import fit_linear_probe
from replens.models import extract_features
from replens.quality.compression import compression_curve
from replens.quality.failure import FailureReport, failure_prediction, rank_failures
from replens.quality.plots import plot_activation_percentages, plot_compression, plot_pr, plot_roc
from replens.quality.qscore import (
    DEFAULT_BAND,
    EmbeddingChunks,
    QScoreResult,
    load_feature_sets,
    qscore_embeddings,
)
from replens.quality.saliency import SalientImageNetSource, saliency_iou
from replens.quality.spectrum import spectrum_metrics
from replens.runs import atomic_write, atomic_write_json, atomic_write_text

#: Columns of the per-sample table (``scores.parquet`` / ``scores.csv``), in order.
SAMPLE_COLUMNS = ("split", "row", "index", "name", "label", "domain", "qscore", "n_highly", "n_discriminative",
                  "prediction", "correct")
_INT_COLUMNS = frozenset({"row", "index", "label", "domain", "n_highly", "n_discriminative", "prediction", "rank"})
_FLOAT_COLUMNS = frozenset({"qscore"})
_BOOL_COLUMNS = frozenset({"correct"})


@dataclass
class QScoreConfig:
    """Settings of :func:`score` (the defaults are ``replens qscore``'s).

    Attributes:
        eps: Highly activating threshold ``mean + eps * std`` of ``L_i`` (section 3.3.1; 4 in the paper for r = 2048).
        band: Percentile band of ``A_j`` that defines the discriminative set D (section 3.3.1).
        features: A ``feature_sets.json`` fixing D instead of the band.
        labels: Use labels: failure prediction (a linear probe) and the compression curve.
        holdout: Judged fraction of the one split when there is no second split (seeded).
        probe_samples: Most probe-training samples (a seeded subset).
        weight_decay: L2 penalty of the linear probe.
        compression: Draw the compression curve (with ``labels``).
        fractions: Kept fractions of the compression curve (None: the library's default).
        seeds: Random subsets per size of the compression curve.
        spectrum_samples: Rows used for RankMe / alpha-ReQ.
        top_failures: Rows of the ranked failure table (0: all).
        saliency: Grad-CAM IoU on this many images (0: none; needs an encoder).
        saliency_threshold: Heatmap area threshold of the IoU.
        cam_layer: Grad-CAM layer (None: the backbone's last stage).
        salient_masks: Salient ImageNet mask folder (instead of the world's masks).
        salient_images: ImageNet images (``<wnid>/<name>.JPEG``) of ``salient_masks``.
        salient_csv: ``discover_spurious_features.csv`` of ``salient_masks``.
        layer: Named layer whose output is the representation (None: the representation).
        image_size: Resize + centre-crop side when reading images.
        batch_size: Images per batch when streaming representations.
        workers: DataLoader workers when streaming representations.
        device: Device of the encoder and the probes.
        seed: Seed of the holdout, the subsets and the compression curve.
    """

    eps: float = 4.0
    band: tuple[float, float] = DEFAULT_BAND
    features: str | Path | None = None
    labels: bool = False
    holdout: float = 0.2
    probe_samples: int = 50_000
    weight_decay: float = 1e-4
    compression: bool = True
    fractions: list[float] | None = None
    seeds: int = 4
    spectrum_samples: int = 25_600
    top_failures: int = 100
    saliency: int = 0
    saliency_threshold: float = 0.5
    cam_layer: str | None = None
    salient_masks: str | Path | None = None
    salient_images: str | Path | None = None
    salient_csv: str | Path | None = None
    layer: str | None = None
    image_size: int | None = None
    batch_size: int = 256
    workers: int = 0
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        lower, upper = (float(v) for v in self.band)
        if not 0 <= lower <= upper <= 100:
            raise ValueError(f"band needs 0 <= LOWER <= UPPER <= 100, got {self.band!r}")
        self.band = (lower, upper)
        if self.labels and not 0.0 < self.holdout < 1.0:
            raise ValueError(f"--holdout must lie in (0, 1), got {self.holdout}")


def check_inputs(config: QScoreConfig, *, embeddings: bool, model: bool, data: bool) -> None:
    """Refuse an inconsistent combination of inputs before any work (messages name the CLI's options).

    Args:
        config: The settings.
        embeddings: An embeddings folder is given.
        model: An encoder is given.
        data: A data spec or source is given.

    Raises:
        ValueError: Neither representations nor an encoder with data, both, or saliency without an encoder.
    """
    if not embeddings and not (model and data):
        raise ValueError("give --model and --data, or --embeddings")
    if embeddings and data:
        raise ValueError("--embeddings replaces --data/--test-data; give one or the other")
    if config.saliency and not (model and (data or config.salient_masks)):
        raise ValueError("--saliency needs --model with --data or --salient-masks (Grad-CAM runs the network)")


@dataclass
class QScoreReport:
    """What :func:`score` found: plain tables and metrics, saved and loaded as files.

    Attributes:
        metrics: The summary (``metrics.json``): ``qscore`` (per split), ``discriminative_features``,
            ``probe`` / ``failure_prediction`` / ``compression`` (with labels), ``spectrum``,
            ``failures_top_k``, ``saliency``, ``timings``, ``outputs``.
        feature_sets: ``feature_sets.json``: the discriminative set D, the band and ``A_j``.
        samples: The per-sample table, columns :data:`SAMPLE_COLUMNS` (``prediction`` and
            ``correct`` are None outside the judged rows or without labels).
        failures: The ranked likely failures of the judged split, lowest Q-Score first.
        results: The live per-split :class:`~replens.quality.QScoreResult` (not saved; None after :meth:`load`).
        failure_report: The live failure-prediction report (not saved; see :meth:`failure_prediction`).
        name: The scored encoder or embeddings folder (the legend of the ROC and PR plots).
    """

    metrics: dict[str, Any]
    feature_sets: dict[str, Any]
    samples: dict[str, list[Any]]
    failures: dict[str, list[Any]]
    results: dict[str, QScoreResult] | None = field(default=None, repr=False, compare=False)
    failure_report: FailureReport | None = field(default=None, repr=False, compare=False)
    name: str = "representation"

    @property
    def discriminative(self) -> np.ndarray:
        """The discriminative feature ids D (int64)."""
        return np.asarray(self.feature_sets["discriminative"], dtype=np.int64)

    def split_rows(self, split: str) -> np.ndarray:
        """Positions in :attr:`samples` of one split's rows."""
        return np.flatnonzero(np.asarray(self.samples["split"]) == split)

    def judged(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(qscores, correct, names)`` of the rows the probe judged (empty without labels)."""
        keep = [k for k, c in enumerate(self.samples["correct"]) if c is not None]
        scores = np.array([self.samples["qscore"][k] for k in keep], dtype=np.float64)
        correct = np.array([bool(self.samples["correct"][k]) for k in keep], dtype=bool)
        return scores, correct, [self.samples["name"][k] for k in keep]

    def failure_prediction(self) -> FailureReport | None:
        """How well Q-Score predicts probe correctness on the judged rows (None without labels)."""
        if self.failure_report is not None:
            return self.failure_report
        scores, correct, _ = self.judged()
        return failure_prediction(scores, correct) if len(scores) else None

    def scores_of(self, split: str) -> dict[str, float]:
        """``{sample name -> Q-Score}`` of one split."""
        return {self.samples["name"][k]: float(self.samples["qscore"][k]) for k in self.split_rows(split)}

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path, *, table_format: str = "parquet") -> Path:
        """Write ``scores.<table_format>``, ``failures.csv``, ``feature_sets.json``, the plots and ``metrics.json``.

        ``metrics["outputs"]`` lists the folder's files as they are before ``metrics.json`` is written.
        The plots that need live objects (``activation.png``, ``roc.png``, ``pr.png``) are drawn only
        by a report that :func:`score` returned.

        Args:
            directory: The folder (created).
            table_format: ``"parquet"`` or ``"csv"`` for the per-sample table.

        Returns:
            The folder.
        """
        if table_format not in ("parquet", "csv"):
            raise ValueError(f"table_format must be 'parquet' or 'csv', got {table_format!r}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "feature_sets.json", self.feature_sets)
        if self.results is not None and "train" in self.results:
            plot_activation_percentages(self.results["train"], out / "activation.png")
        if self.failure_report is not None:
            plot_roc({self.name: self.failure_report}, out / "roc.png")
            plot_pr({self.name: self.failure_report}, out / "pr.png")
        if self.metrics.get("compression"):
            plot_compression(self.metrics["compression"], out / "compression.png")
        write_table(out / f"scores.{table_format}", self.samples, table_format)
        write_table(out / "failures.csv", self.failures, "csv")
        outputs = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
        self.metrics = {**{k: v for k, v in self.metrics.items() if k != "outputs"}, "outputs": outputs}
        atomic_write_json(out / "metrics.json", self.metrics)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> QScoreReport:
        """Read a report written by :meth:`save` (or by ``replens qscore``)."""
        folder = Path(directory)
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        feature_sets = json.loads((folder / "feature_sets.json").read_text(encoding="utf-8"))
        table = folder / "scores.parquet"
        samples = read_table(table if table.is_file() else folder / "scores.csv")
        failures = read_table(folder / "failures.csv")
        return cls(metrics=metrics, feature_sets=feature_sets, samples=samples, failures=failures, name=folder.name)


def write_table(path: Path, columns: dict[str, list[Any]], fmt: str) -> Path:
    """Write a column table as parquet or CSV (None: an empty CSV cell), atomically."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(columns)
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    names = list(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    writer.writerows(zip(*(list(columns[k]) for k in names), strict=True))
    return atomic_write_text(path, buffer.getvalue())


def _cell(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in _INT_COLUMNS:
        return int(text)
    if column in _FLOAT_COLUMNS:
        return float(text)
    if column in _BOOL_COLUMNS:
        return text == "True"
    return text


def read_table(path: Path) -> dict[str, list[Any]]:
    """Read a table of :func:`write_table` back into typed columns."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {k: list(v) for k, v in pq.read_table(path).to_pydict().items()}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = list(reader)
    return {name: [_cell(name, row[k]) for row in rows] for k, name in enumerate(header)}


# ----------------------------------------------------------------------------- the pipeline
def _stream_representations(
    backbone: Any, sources: dict[str, Any], work_dir: Path, cfg: QScoreConfig, progress: bool,
    timings: dict[str, float],
) -> dict[str, Path]:
    folders = {}
    for split, source in sources.items():
        t0 = time.perf_counter()
        folders[split] = extract_features(
            backbone, source, work_dir / f"embeddings-{split}", layer=cfg.layer, normalize=False,
            batch_size=cfg.batch_size, device=cfg.device, num_workers=cfg.workers, progress=progress,
        )
        timings[f"embed_{split}_s"] = time.perf_counter() - t0
    return folders


def _open_sources(data: Any, test: Any, image_size: int | None) -> dict[str, Any]:
    sources = {"train": open_source(data, image_size=image_size) if isinstance(data, str) else data}
    if test is not None:
        sources["test"] = open_source(test, image_size=image_size) if isinstance(test, str) else test
    return sources


def _probe_and_compression(
    cfg: QScoreConfig, results: dict[str, QScoreResult], chunks: dict[str, EmbeddingChunks], eval_split: str,
    eval_rows: np.ndarray, fit_rows: np.ndarray, rng: np.random.Generator, metrics: dict[str, Any],
    timings: dict[str, float], progress: bool,
) -> tuple[np.ndarray, np.ndarray, FailureReport]:
    """Fit the linear probe, judge the evaluated rows, and draw the compression curve (section 3.4)."""
    train_chunks = chunks["train"]
    for split in chunks:
        unknown = int((chunks[split].labels < 0).sum())
        if unknown:
            raise ValueError(f"--labels: {unknown} samples of the {split} split have no label")
    if len(fit_rows) > cfg.probe_samples:
        fit_rows = np.sort(rng.choice(fit_rows, size=cfg.probe_samples, replace=False))
    t0 = time.perf_counter()
    fit_x = train_chunks.rows(fit_rows)
    probe = fit_linear_probe(fit_x, train_chunks.labels[fit_rows], weight_decay=cfg.weight_decay, device=cfg.device)
    ev_chunks = chunks[eval_split]
    predictions = np.empty(len(eval_rows), dtype=np.int64)
    for start in range(0, len(eval_rows), 8192):
        rows = eval_rows[start : start + 8192]
        predictions[start : start + len(rows)] = probe.predict(ev_chunks.rows(rows))
    correct = predictions == ev_chunks.labels[eval_rows]
    timings["probe_s"] = time.perf_counter() - t0
    report = failure_prediction(results[eval_split].scores[eval_rows], correct)
    metrics["probe"] = {"top1": float(100 * correct.mean()), "train_samples": int(len(fit_rows)),
                        "eval_split": eval_split, "eval_samples": int(len(eval_rows))}
    metrics["failure_prediction"] = report.as_dict()
    if cfg.compression:
        t0 = time.perf_counter()
        comp_rows = eval_rows
        if len(comp_rows) > cfg.probe_samples:
            comp_rows = np.sort(rng.choice(comp_rows, size=cfg.probe_samples, replace=False))
        kwargs: dict[str, Any] = {} if cfg.fractions is None else {"fractions": [float(v) for v in cfg.fractions]}
        metrics["compression"] = compression_curve(
            fit_x, train_chunks.labels[fit_rows], ev_chunks.rows(comp_rows), ev_chunks.labels[comp_rows],
            results["train"].percentages, reference_band=cfg.band, seeds=cfg.seeds, weight_decay=cfg.weight_decay,
            device=cfg.device, progress=progress, **kwargs,
        )
        timings["compression_s"] = time.perf_counter() - t0
    return predictions, correct, report


def _sample_table(
    results: dict[str, QScoreResult], chunks: dict[str, EmbeddingChunks], eval_split: str, eval_rows: np.ndarray,
    predictions: np.ndarray | None, correct: np.ndarray | None,
) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {k: [] for k in SAMPLE_COLUMNS}
    eval_pos = {int(r): k for k, r in enumerate(eval_rows)}
    for split, res in results.items():
        ch = chunks[split]
        n = len(ch)
        columns["split"] += [split] * n
        columns["row"] += list(range(n))
        columns["index"] += ch.index.tolist()
        columns["name"] += list(ch.names)
        columns["label"] += ch.labels.tolist()
        columns["domain"] += ch.domains.tolist()
        columns["qscore"] += res.scores.tolist()
        columns["n_highly"] += res.n_highly.tolist()
        columns["n_discriminative"] += res.n_discriminative.tolist()
        for r in range(n):
            k = eval_pos.get(r) if split == eval_split and correct is not None else None
            columns["prediction"].append(int(predictions[k]) if k is not None and predictions is not None else None)
            columns["correct"].append(bool(correct[k]) if k is not None else None)
    return columns


def _failure_table(
    result: QScoreResult, ev_chunks: EmbeddingChunks, eval_split: str, eval_rows: np.ndarray,
    predictions: np.ndarray | None, correct: np.ndarray | None, top: int,
) -> dict[str, list[Any]]:
    ranked = rank_failures(result.scores[eval_rows], [ev_chunks.names[r] for r in eval_rows], top=top or None)
    cols: dict[str, list[Any]] = {"rank": [], "split": [], "row": [], "name": [], "qscore": [], "label": []}
    if correct is not None:
        cols.update(prediction=[], correct=[])
    for item in ranked:
        row = int(eval_rows[item["row"]])
        cols["rank"].append(item["rank"])
        cols["split"].append(eval_split)
        cols["row"].append(row)
        cols["name"].append(item["name"])
        cols["qscore"].append(item["qscore"])
        cols["label"].append(int(ev_chunks.labels[row]))
        if correct is not None and predictions is not None:
            cols["prediction"].append(int(predictions[item["row"]]))
            cols["correct"].append(bool(correct[item["row"]]))
    return cols


def _saliency(
    cfg: QScoreConfig, backbone: Any, sources: dict[str, Any] | None, eval_split: str, eval_index: np.ndarray,
    correct: np.ndarray | None, discriminative: np.ndarray, rng: np.random.Generator, progress: bool,
) -> dict[str, Any]:
    """mIoU of Grad-CAMs with core/spurious masks on ``cfg.saliency`` images of the judged split (section 3.5).

    ``eval_index`` holds the source positions of the judged rows (the embeddings' stored index, so
    skipped unreadable images do not shift them).
    """
    if cfg.salient_masks is not None:
        if cfg.salient_images is None:
            raise ValueError("--salient-masks needs --salient-images (the ImageNet image folder)")
        source = SalientImageNetSource(cfg.salient_masks, cfg.salient_images, cfg.salient_csv,
                                       image_size=cfg.image_size or 224)
        rows = np.sort(rng.choice(len(source), size=min(cfg.saliency, len(source)), replace=False))
        split_correct = None
    else:
        if sources is None:
            raise ValueError("--saliency with --embeddings needs --salient-masks (or use --data)")
        source = sources[eval_split]
        take = np.sort(rng.choice(len(eval_index), size=min(cfg.saliency, len(eval_index)), replace=False))
        rows = eval_index[take]
        split_correct = correct[take] if correct is not None else None
    result = saliency_iou(backbone, source, discriminative, rows, eps=cfg.eps, layer=cfg.cam_layer,
                          threshold=cfg.saliency_threshold, batch_size=min(64, cfg.batch_size),
                          device=cfg.device, progress=progress)
    return result.summary(split_correct)


def score(
    embeddings_or_model: str | Path | Any,
    data: Any = None,
    *,
    test: Any = None,
    config: QScoreConfig | None = None,
    saliency_model: Any = None,
    work_dir: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> QScoreReport:
    """Score every sample of one or two splits with Q-Score (Eq. 3.1) and report on it (chapter 3).

    Args:
        embeddings_or_model: A ``replens embed`` folder, or an encoder (:class:`~replens.models.Backbone`)
            whose representations of ``data`` (and ``test``) are streamed to ``work_dir`` first.
        data: With an encoder: the split that defines D (a data spec or an image source).
        test: A second split scored with the first split's D: an embeddings folder (with a folder
            first), or a data spec / source (with an encoder).
        config: Settings (default :class:`QScoreConfig`); ``options`` override its fields.
        saliency_model: The encoder Grad-CAM runs when scoring a folder with ``saliency`` (and
            ``salient_masks``).
        work_dir: Where representations are streamed and the scorer spills (default: a temp dir).
        progress: Show progress bars.
        **options: :class:`QScoreConfig` fields, e.g. ``labels=True, eps=2.0``.

    Returns:
        The :class:`QScoreReport`.

    Raises:
        ValueError: Inconsistent inputs (say which), unlabelled samples with ``labels``, splits of
            different widths.
    """
    import tempfile

    cfg = replace(config or QScoreConfig(), **options)
    is_folder = isinstance(embeddings_or_model, (str, Path))
    backbone = saliency_model if is_folder else embeddings_or_model
    check_inputs(cfg, embeddings=is_folder, model=backbone is not None, data=data is not None)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="replens-qscore-") as scratch:
        work = Path(work_dir) if work_dir is not None else Path(scratch)
        if is_folder:
            sources = None
            folders = {"train": Path(embeddings_or_model)}
            if test is not None:
                folders["test"] = Path(test)
        else:
            sources = _open_sources(data, test, cfg.image_size)
            folders = _stream_representations(backbone, sources, work, cfg, progress, timings)
        # the scorer's spill is scratch: the system temp dir, never the caller's work_dir / run folder
        report = _score_folders(cfg, folders, Path(scratch), backbone, sources, timings, progress)
        report.name = str(getattr(backbone, "name", "")) if backbone is not None else folders["train"].name
        return report


def _score_folders(
    cfg: QScoreConfig, folders: dict[str, Path], work: Path, backbone: Any, sources: dict[str, Any] | None,
    timings: dict[str, float], progress: bool,
) -> QScoreReport:
    fixed = load_feature_sets(cfg.features) if cfg.features else None
    t0 = time.perf_counter()
    train, train_chunks = qscore_embeddings(folders["train"], eps=cfg.eps, band=cfg.band, discriminative=fixed,
                                            spill_dir=work, progress=progress)
    results, chunks = {"train": train}, {"train": train_chunks}
    if "test" in folders:
        results["test"], chunks["test"] = qscore_embeddings(
            folders["test"], eps=cfg.eps, discriminative=train.discriminative, spill_dir=work, progress=progress
        )
        if chunks["test"].dim != train_chunks.dim:
            raise ValueError(f"the splits have {train_chunks.dim} and {chunks['test'].dim} features")
    timings["qscore_s"] = time.perf_counter() - t0
    metrics: dict[str, Any] = {
        "qscore": {split: res.summary() for split, res in results.items()},
        "discriminative_features": len(train.discriminative),
    }
    # the split whose samples are judged: the second split, or a seeded holdout of the first
    rng = np.random.default_rng(cfg.seed)
    n_train = len(train_chunks)
    eval_split = "test" if "test" in results else "train"
    eval_rows, fit_rows = np.arange(len(chunks[eval_split])), np.arange(n_train)
    if eval_split == "train" and cfg.labels:
        perm = rng.permutation(n_train)
        n_eval = max(1, int(round(cfg.holdout * n_train)))
        eval_rows, fit_rows = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    correct = predictions = report = None
    if cfg.labels:
        predictions, correct, report = _probe_and_compression(cfg, results, chunks, eval_split, eval_rows, fit_rows,
                                                              rng, metrics, timings, progress)
    spec_rows = np.arange(n_train)
    if n_train > cfg.spectrum_samples:
        spec_rows = np.sort(rng.choice(n_train, size=cfg.spectrum_samples, replace=False))
    metrics["spectrum"] = spectrum_metrics(train_chunks.rows(spec_rows), max_samples=cfg.spectrum_samples,
                                           seed=cfg.seed)
    samples = _sample_table(results, chunks, eval_split, eval_rows, predictions, correct)
    failures = _failure_table(results[eval_split], chunks[eval_split], eval_split, eval_rows, predictions, correct,
                              cfg.top_failures)
    if correct is not None and cfg.top_failures:
        top = np.array(failures["correct"], dtype=bool)
        metrics["failures_top_k"] = {"k": int(len(top)), "misclassified": int((~top).sum()),
                                     "misclassified_rate": float((~top).mean()) if len(top) else float("nan"),
                                     "base_misclassified_rate": float(1 - correct.mean())}
    if cfg.saliency:
        metrics["saliency"] = _saliency(cfg, backbone, sources, eval_split, chunks[eval_split].index[eval_rows],
                                        correct, train.discriminative, rng, progress)
    metrics["timings"] = timings
    return QScoreReport(metrics=metrics, feature_sets=train.feature_sets(), samples=samples, failures=failures,
                        results=results, failure_report=report)
