"""Training as one typed call: :func:`train_encoder` (``replens.train``) returns a :class:`TrainResult`.

It runs the one training loop (:func:`replens.engine.train.train`) and, with
evaluation data, probes the trained encoder beside a randomly initialised one
of the same architecture (linear probe and kNN, overall and per domain)::

    import replens
    from replens.engine import TrainConfig

    result = replens.train(TrainConfig(epochs=1), "world:runs/world?split=train", "runs/simclr",
                           eval_data="world:runs/world?split=test")
    result.final_loss, result.trained["linear"]["top1"]
    result.backbone                      # the trained encoder (None after TrainResult.load)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from replens.data import open_source
from replens.engine.probing import probe_backbone
from replens.engine.train import TrainConfig, train
from replens.models import create_backbone
from replens.runs import atomic_write_json

_SUMMARY_KEYS = ("steps", "total_steps", "finished", "final_loss", "images_per_s", "bad_images", "world_size",
                 "checkpoint", "backbone_weights")


@dataclass
class TrainResult:
    """What a training run did and, with evaluation data, how good its encoder is.

    Attributes:
        steps: Optimiser steps taken (over every call into the run folder).
        total_steps: Steps of the whole schedule.
        finished: Whether the schedule is complete (``backbone.safetensors`` is written then).
        final_loss: The last step's loss.
        images_per_s: Training throughput of this call.
        bad_images: Images skipped because they could not be decoded.
        world_size: Processes that trained.
        checkpoint: ``checkpoint.pt`` of the run.
        backbone_weights: ``backbone.safetensors`` (None until finished).
        monitors: Last values of the monitors (e.g. ``knn_acc``).
        trained: Probe results of the trained encoder (with evaluation data).
        random_init: Probe results of a randomly initialised encoder (with evaluation data).
        backbone: The trained encoder module (not saved; None after :meth:`load`).
    """

    steps: int
    total_steps: int
    finished: bool
    final_loss: float
    images_per_s: float
    bad_images: int = 0
    world_size: int = 1
    checkpoint: str | None = None
    backbone_weights: str | None = None
    monitors: dict[str, float] = field(default_factory=dict)
    trained: dict[str, Any] | None = None
    random_init: dict[str, Any] | None = None
    backbone: torch.nn.Module | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> TrainResult:
        """From the summary dict of :func:`replens.engine.train.train` (``backbone`` taken along)."""
        known = {k: summary[k] for k in _SUMMARY_KEYS if k in summary}
        monitors = {k: v for k, v in summary.items() if k not in _SUMMARY_KEYS and k != "backbone"}
        return cls(**known, monitors=monitors, backbone=summary.get("backbone"))

    def summary(self) -> dict[str, Any]:
        """The training summary as ``train_summary.json`` holds it."""
        ordered = {k: getattr(self, k) for k in _SUMMARY_KEYS[:7]}
        return {**ordered, **self.monitors, "checkpoint": self.checkpoint, "backbone_weights": self.backbone_weights}

    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` of ``replens train``: ``training`` and, when probed, ``trained`` / ``random_init``."""
        out: dict[str, Any] = {"training": self.summary()}
        if self.trained is not None:
            out["trained"], out["random_init"] = self.trained, self.random_init
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``train_summary.json`` and ``metrics.json`` into ``directory``."""
        folder = Path(directory)
        atomic_write_json(folder / "train_summary.json", self.summary())
        atomic_write_json(folder / "metrics.json", self.metrics())
        return folder

    @classmethod
    def load(cls, directory: str | Path) -> TrainResult:
        """Read a result written by :meth:`save` (or by ``replens train``)."""
        folder = Path(directory)
        metrics_path = folder / "metrics.json"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            result = cls.from_summary(metrics["training"])
            result.trained, result.random_init = metrics.get("trained"), metrics.get("random_init")
            return result
        return cls.from_summary(json.loads((folder / "train_summary.json").read_text(encoding="utf-8")))


def train_encoder(
    config: TrainConfig,
    data: Any,
    out: str | Path,
    *,
    eval_data: Any = None,
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train ``config.method`` on ``data`` into ``out``; probe against a random encoder with ``eval_data``.

    Args:
        config: The run's configuration (:class:`~replens.engine.TrainConfig`).
        data: Training images: a data spec or an image source.
        out: Folder for ``checkpoint.pt``, ``metrics.jsonl``, ``backbone.safetensors`` and the probes' files.
        eval_data: Evaluation images (spec or source): kNN monitor during training, and at the end a
            linear probe and kNN of the trained and of a randomly initialised encoder.
        resume: Continue from ``out/checkpoint.pt`` when it exists.
        progress: Show progress bars.

    Returns:
        The :class:`TrainResult` (``backbone`` is the trained encoder).
    """
    source = open_source(data, image_size=config.image_size) if isinstance(data, str) else data
    evaluation = open_source(eval_data, image_size=config.image_size) if isinstance(eval_data, str) else eval_data
    out = Path(out)
    summary = train(config, source, out, resume=resume, progress=progress,
                    monitor=(source, evaluation) if evaluation is not None else None)
    result = TrainResult.from_summary(summary)
    if evaluation is not None and result.finished and result.backbone is not None:
        result.trained = probe_backbone(result.backbone.eval(), source, evaluation, out / "eval" / "trained",
                                        progress=progress)
        torch.manual_seed(config.seed)
        random_init = create_backbone(config.backbone, **config.backbone_args).eval()
        result.random_init = probe_backbone(random_init, source, evaluation, out / "eval" / "random_init",
                                            progress=progress)
    return result
