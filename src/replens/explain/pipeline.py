"""FALCON as one call (paper chapter 4): :func:`explain` returns :class:`Explanations`.

It finds an encoder's interpretable feature groups on a probe set and explains
them with concepts (sections 4.2-4.3); optionally it explains mis-classified
samples (section 4.5, with a linear probe fitted on ``train_data`` or the
model's own classifier) and transfers concepts from an earlier explanation of
another model on the same probe set (section 4.6). On a world probe set the
metrics also hold the ground-truth precision and recall of the concepts.

The result is plain data with :meth:`Explanations.save` (the files of
``replens explain``: ``concepts.json``/``.csv``, ``report.html`` with
``images/``, ``representations.npy``, ``rows.json``, ``failures.json``/``.csv``,
``transfer.json``, ``metrics.json``) and :meth:`Explanations.load`::

    from replens.explain import explain

    found = explain(backbone, "world:runs/world?split=test", failures=True,
                    train_data="world:runs/world?split=train")
    [g["words"] for g in found.groups]
    found.save("runs/explain")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from replens.data import open_source
from replens.evaluate import fit_linear_probe
from replens.explain.activations import normalize_rows
from replens.explain.bank import default_world_bank, open_bank
from replens.explain.failures import FailureExplanation, explain_failures, linear_head_from_probe
from replens.explain.falcon import (
    Falcon,
    FalconConfig,
    FalconResult,
    GroupExplanation,
    compute_representations,
    load_images,
)
from replens.explain.ground_truth import (
    contrastive_filter_report,
    failure_spurious_report,
    is_pattern_world,
    precision_recall_at_k,
    source_concepts,
)
from replens.explain.outputs import (
    write_failure_records,
    write_falcon_outputs,
    write_html_report,
)
from replens.explain.transfer import TransferredGroup, learn_transfer, transfer_concepts
from replens.runs import atomic_write, atomic_write_json
from replens.vl import load_vl_model


@dataclass
class Explanations:
    """What :func:`explain` found, as the JSON-ready records ``replens explain`` writes.

    Attributes:
        concepts: ``concepts.json``: configuration, summary and every examined group (``groups``).
        rows: ``rows.json``: the probe set's spec (``data``), sample ``names`` and source ``index``.
        representations: (N, r) raw representations of the probe set.
        metrics: ``metrics.json``: ``falcon`` (counts), ``vl``, ``bank``, ``bank_captions``, ``gamma``,
            ``ground_truth`` (world data), ``failures``, ``transfer``, ``seconds``.
        failures: ``failures.json``: the head (``head``) and the explained mis-classifications
            (``failures``, one record each); None when not asked.
        transfer: ``transfer.json``: carry rates and the transferred groups; None when not asked.
        result: The live :class:`~replens.explain.FalconResult` (not saved; None after :meth:`load`).
        page: What the HTML page needs that is not data (the image loader, title, live failures and
            transfers; not saved; None after :meth:`load`, whose ``save`` writes no page).
    """

    concepts: dict[str, Any]
    rows: dict[str, Any]
    representations: np.ndarray
    metrics: dict[str, Any]
    failures: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    result: FalconResult | None = field(default=None, repr=False, compare=False)
    page: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Every examined group's record (features, highly/lowly images, words, phrases, ...)."""
        return list(self.concepts.get("groups", []))

    @property
    def failure_records(self) -> list[dict[str, Any]]:
        """The explained mis-classifications (empty when none were asked for)."""
        return list((self.failures or {}).get("failures", []))

    def index_of(self) -> dict[str, int]:
        """``{sample name -> position in the probe source}``."""
        return {str(n): int(i) for n, i in zip(self.rows["names"], self.rows["index"], strict=True)}

    def failure_index_of(self) -> dict[str, int]:
        """``{failure's sample name -> position in the data its failures come from}`` (``failure_data``, or
        the probe source; records written before ``index`` was stored: the probe source's positions)."""
        records = self.failure_records
        if records and all("index" in f for f in records):
            return {str(f["sample"]): int(f["index"]) for f in records}
        return self.index_of()

    def save(self, directory: str | Path) -> Path:
        """Write the records (and, for a live result, ``report.html`` with ``images/``) and ``metrics.json``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        representations = np.asarray(self.representations)

        def save_npy(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, representations)

        atomic_write(out / "representations.npy", save_npy)
        atomic_write_json(out / "rows.json", self.rows)
        if self.failures is not None:
            extra = {k: v for k, v in self.failures.items() if k != "failures"}
            write_failure_records(out / "failures.json", self.failures["failures"], extra)
        if self.transfer is not None:
            atomic_write_json(out / "transfer.json", self.transfer)
        if self.result is not None:
            meta = {k: v for k, v in self.concepts.items() if k not in ("config", "summary", "groups")}
            write_falcon_outputs(out, self.result, meta)
        else:
            atomic_write_json(out / "concepts.json", self.concepts)
        if self.result is not None and self.page is not None:
            write_html_report(out, self.result, self.page["images"], title=self.page["title"],
                              summary=self.page["summary"], failures=self.page["failures"],
                              classes=self.page["classes"], transfers=self.page["transfers"],
                              failure_images=self.page.get("failure_images"))
        atomic_write_json(out / "metrics.json", self.metrics)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Explanations:
        """Read explanations written by :meth:`save` (or by ``replens explain``)."""
        folder = Path(directory)

        def read(name: str) -> Any:
            path = folder / name
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

        for name in ("representations.npy", "rows.json", "concepts.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: missing {name} (pass the run folder of a `replens explain`)")
        return cls(concepts=read("concepts.json"), rows=read("rows.json"),
                   representations=np.load(folder / "representations.npy"), metrics=read("metrics.json") or {},
                   failures=read("failures.json"), transfer=read("transfer.json"))


def _failure_head(
    raw: np.ndarray, backbone: Any, train_data: Any, image_size: int | None, device: str, progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(weight, bias, features, description)`` of the linear head whose mistakes are explained, and the
    features of ``raw`` (the representations whose failures are explained) that the head acts on."""
    if train_data is not None:
        train = open_source(train_data, image_size=image_size) if isinstance(train_data, str) else train_data
        train_raw, index, _ = compute_representations(backbone, train, device=device, progress=progress)
        probe = fit_linear_probe(normalize_rows(train_raw), np.asarray(train.labels)[index])
        weight, bias = linear_head_from_probe(probe)
        spec = train_data if isinstance(train_data, str) else train.describe()
        return weight, bias, normalize_rows(raw).astype(np.float64), f"linear probe fitted on {spec} " \
                                                                      "(L2-normalised representations)"
    if getattr(backbone, "classifier", None) is not None and hasattr(backbone.classifier, "weight"):
        weight = backbone.classifier.weight.detach().cpu().double().numpy()
        bias = backbone.classifier.bias.detach().cpu().double().numpy()
        return weight, bias, np.asarray(raw, dtype=np.float64), f"the model's classifier ({backbone.classifier_name})"
    raise ValueError(
        "--failures needs a linear head: pass --train-data SPEC (a probe is fitted) or a model with a classifier"
    )


def explain_mistakes(
    falcon: Falcon, result: FalconResult, source: Any, backbone: Any, *, train_data: Any = None,
    image_size: int | None = None, top_features: int = 1, max_failures: int = 200, device: str = "cpu",
    progress: bool = False,
) -> tuple[list[FailureExplanation], dict[str, Any], np.ndarray]:
    """Explain the mis-classified samples of ``source`` with the concepts of their top features (section 4.5).

    ``source`` is FALCON's probe set (``falcon.source``) or another one (e.g. a test split while the groups
    were found on a larger probe set); a feature that no explained group holds is explained on demand on
    FALCON's probe set.

    Returns:
        The failure explanations (``row``: a representation row of ``source``), their metrics (head,
        accuracy, counts, spurious-cue report) and the source position of each representation row.
    """
    if source is falcon.source:
        raw, index, names = falcon.raw, falcon.index, falcon.names
    else:
        raw, index, names = compute_representations(backbone, source, batch_size=128, device=device,
                                                    progress=progress)
    labels = np.asarray(source.labels)[index]
    weight, bias, features, head = _failure_head(raw, backbone, train_data, image_size, device, progress)
    predictions = (features @ weight.T + bias).argmax(1)
    failures = explain_failures(
        features, weight, predictions, labels, result.groups, names=names, top_features=top_features,
        explain_feature=lambda f: falcon.explain_group(f), max_samples=max_failures,
    )
    valid = labels >= 0
    metrics: dict[str, Any] = {
        "head": head,
        "accuracy": float(100 * (predictions[valid] == labels[valid]).mean()) if valid.any() else float("nan"),
        "misclassified": int(((predictions != labels) & valid).sum()),
        "explained": len(failures),
        "with_concepts": sum(1 for f in failures if f.words),
    }
    spurious = failure_spurious_report(failures, source)
    if spurious is not None:
        metrics["spurious"] = spurious
    return failures, metrics, np.asarray(index)


def transfer_from(
    falcon: Falcon, earlier: Explanations, *, method: str = "lstsq", std_multiplier: float = 4.0, seed: int = 0,
    origin: str = "",
) -> tuple[list[TransferredGroup], dict[str, Any]]:
    """Carry an earlier explanation's concepts (another model, the same probe set) to this model (section 4.6).

    Returns:
        The transferred groups and ``transfer.json``'s record (carry rates, fit error, groups).
    """
    if list(earlier.rows["names"]) != list(falcon.names):
        raise ValueError(f"--transfer-from {origin} explained another probe set: its sample names differ from --data's")
    source_h = normalize_rows(earlier.representations)
    row_of = {name: k for k, name in enumerate(earlier.rows["names"])}
    groups = [GroupExplanation.from_dict(g, row_of) for g in earlier.groups]
    z = learn_transfer(falcon.features, source_h, method=method, seed=seed)
    transfers = transfer_concepts(
        z, groups, falcon.features, falcon.alpha, std_multiplier=std_multiplier,
        image_terms=lambda r, feats: falcon.caption_terms(r, feats), min_samples=falcon.config.min_samples, seed=seed,
    )
    carry = [t.carry for t in transfers if t.carry == t.carry]
    rand = [t.carry_random for t in transfers if t.carry_random == t.carry_random]
    metrics = {
        "source_run": origin,
        "source_groups_with_concepts": sum(1 for g in groups if g.words),
        "mapped_groups": len(transfers),
        "carry_rate": float(np.mean(carry)) if carry else float("nan"),
        "carry_rate_random_features": float(np.mean(rand)) if rand else float("nan"),
        "fit_mse": float(((falcon.features @ z - source_h) ** 2).mean()),
    }
    return transfers, metrics


def explain(
    model: Any,
    data: Any,
    vl: Any = None,
    bank: Any = None,
    config: FalconConfig | None = None,
    *,
    failures: bool = False,
    train_data: Any = None,
    failure_data: Any = None,
    top_features: int = 1,
    max_failures: int = 200,
    transfer: str | Path | Explanations | None = None,
    transfer_method: str = "lstsq",
    transfer_std: float = 4.0,
    image_size: int | None = None,
    cache_dir: str | Path = "runs/cache",
    model_name: str | None = None,
    data_name: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> Explanations:
    """Explain an encoder's feature groups in words with FALCON (paper chapter 4).

    Args:
        model: The encoder (:class:`~replens.models.Backbone`).
        data: The probe set: a data spec (``world:DIR?split=test``) or an image source.
        vl: The VL model (:class:`~replens.vl.VLModel`), or a name / checkpoint for
            :func:`replens.vl.load_vl_model` (None: the embedded tiny CLIP, trained on demand).
        bank: The caption bank (a :class:`~replens.explain.CaptionBank` or its folder; None: the
            world grammar bank encoded by ``vl``, cached under ``cache_dir``).
        config: FALCON's settings (default :class:`~replens.explain.FalconConfig`; its ``gamma`` None
            picks the VL model's threshold, :func:`~replens.explain.falcon.interpretability_threshold`).
        failures: Also explain mis-classified samples (section 4.5).
        train_data: Data (spec or source) to fit the linear probe whose mistakes are explained
            (None: the model's own classifier).
        failure_data: Data (spec or source) whose mis-classified samples are explained (None: the
            probe set ``data``). FALCON's groups come from ``data`` either way, so a large probe set
            (e.g. a training split, more groups with more than ``min_samples`` images) can explain the
            failures of a held-out split.
        top_features: Most contributing features per failure.
        max_failures: Failures explained at most.
        transfer: Earlier explanations of another model on the same probe set (or their folder):
            carry their concepts to this model (section 4.6).
        transfer_method: How the transfer map Z is fitted (``lstsq`` or ``sgd``).
        transfer_std: Map weights above mean + this many std.
        image_size: Resize + centre-crop side when ``data`` / ``train_data`` are specs.
        cache_dir: Cache of the default tiny CLIP and caption bank.
        model_name: The model's name in the records (default: ``model.name``).
        data_name: The probe set's name in the records (default: the spec, or the source's description).
        device: Device of the encoders.
        seed: Seed of the transfer fit and its random baseline.
        progress: Show progress bars.

    Returns:
        The :class:`Explanations`.
    """
    source = open_source(data, image_size=image_size) if isinstance(data, str) else data
    vl, bank = _vl_and_bank(vl, bank, cache_dir, device, progress, is_pattern_world(source))
    falcon = Falcon(model, source, vl, bank, config, device=device, progress=progress)
    result = falcon.run()
    metrics = _run_metrics(falcon, result, vl, bank, source)
    data_name = data_name or (data if isinstance(data, str) else source.describe())
    found, failure_record, transfers, transfer_record = [], None, [], None
    failure_images = None
    if failures:
        failed = source if failure_data is None else (
            open_source(failure_data, image_size=image_size) if isinstance(failure_data, str) else failure_data)
        found, metrics["failures"], failure_index = explain_mistakes(
            falcon, result, failed, model, train_data=train_data, image_size=image_size, top_features=top_features,
            max_failures=max_failures, device=device, progress=progress,
        )
        failed_name = data_name if failure_data is None else (
            failure_data if isinstance(failure_data, str) else failed.describe())
        metrics["failures"]["data"] = failed_name
        # each failure's position in the data it comes from (``index`` of its row), for readers of failures.json
        failure_record = {"head": metrics["failures"]["head"], "data": failed_name,
                          "failures": [{**f.to_dict(list(failed.classes)), "index": int(failure_index[f.row])}
                                       for f in found]}
        if failed is not source:
            def failure_images(rows: Any) -> Any:
                return load_images(failed, [int(failure_index[int(r)]) for r in rows])
    if transfer is not None:
        earlier, origin = _earlier_explanations(transfer)
        transfers, metrics["transfer"] = transfer_from(falcon, earlier, method=transfer_method,
                                                       std_multiplier=transfer_std, seed=seed, origin=origin)
        transfer_record = {**metrics["transfer"], "groups": [t.to_dict(falcon.names) for t in transfers]}
    name = model_name or str(getattr(model, "name", type(model).__name__))
    page = {"images": falcon.images, "title": f"FALCON: {name} on {data_name}", "failures": found,
            "summary": {"model": name, "vl model": vl.name, "caption bank": str(bank.root)},
            "classes": list(source.classes), "transfers": transfers, "failure_images": failure_images}
    return Explanations(concepts={**result.to_dict(), "model": name, "data": data_name, "vl": vl.name},
                        rows={"data": data_name, "names": falcon.names, "index": falcon.index},
                        representations=falcon.raw, metrics=metrics, failures=failure_record,
                        transfer=transfer_record, result=result, page=page)


def _vl_and_bank(vl: Any, bank: Any, cache_dir: str | Path, device: str, progress: bool,
                 patterns: bool = False) -> tuple[Any, Any]:
    """The VL model (loaded from a name / checkpoint, or the tiny CLIP) and the caption bank (opened, or the default)."""
    if vl is None or isinstance(vl, (str, Path)):
        vl = load_vl_model(vl, device=device, cache_dir=cache_dir, progress=progress)
    if bank is None:
        bank = default_world_bank(vl, cache_dir, progress=progress, patterns=patterns)
    elif isinstance(bank, (str, Path)):
        bank = open_bank(bank)
    return vl, bank


def _run_metrics(falcon: Falcon, result: FalconResult, vl: Any, bank: Any, source: Any) -> dict[str, Any]:
    """``metrics.json`` of the FALCON run itself; on world data with the concepts' ground-truth precision/recall."""
    metrics: dict[str, Any] = {"falcon": result.summary(), "vl": vl.name, "bank": str(bank.root),
                               "bank_captions": len(bank), "gamma": falcon.config.gamma}
    truth = source_concepts(source)
    if truth is not None:
        concepts = [truth[int(i)] for i in falcon.index]
        metrics["ground_truth"] = {"top_k": precision_recall_at_k(result.explained, concepts),
                                   "contrastive_filter": contrastive_filter_report(result.explained, concepts)}
    return metrics


def _earlier_explanations(transfer: str | Path | Explanations) -> tuple[Explanations, str]:
    """The explanations to transfer from and their folder (``""`` for live ones)."""
    if isinstance(transfer, Explanations):
        return transfer, ""
    try:
        return Explanations.load(transfer), str(Path(transfer))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--transfer-from {exc}") from None
