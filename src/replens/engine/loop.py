"""The parts of the one training loop that every trainer shares.

:func:`replens.engine.train` (SSL recipes), :func:`replens.vl.train_tiny_clip`
and :func:`replens.tokens.train_token_model` are built from these, so data
order, learning-rate schedule, the finite-loss guard, the metrics log and
checkpoint writes behave the same in all three:

* :func:`epoch_batches`: the batches of an epoch, a pure function of
  ``(n, batch_size, seed, epoch)`` (exact resume; the last partial batch is dropped);
* :func:`set_learning_rate`: warm-up then cosine (``replens.schedules.lr_at``)
  on every parameter group, at the group's own ``peak_lr`` when it has one;
* :func:`finite_loss`: the loss as a float, or a ``FloatingPointError`` naming the step;
* :func:`due`: whether a periodic action (log, evaluation, checkpoint) falls on a step;
* :func:`open_metrics_log`: ``metrics.jsonl`` emptied for a fresh run or cut back
  to the checkpoint's step on resume, opened for appending;
* :func:`write_record`: one JSON line, flushed;
* :func:`save_training_checkpoint`: ``torch.save`` written atomically;
* :func:`clamp_logit_scale`: CLIP's temperature kept in ``[0, log 100]``;
* :func:`clip_update`: one optimiser step on a CLIP loss (backward, step, clamp, finite check).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

import torch

from replens.runs import atomic_write
from replens.schedules import lr_at

__all__ = [
    "clamp_logit_scale",
    "clip_update",
    "due",
    "epoch_batches",
    "finite_loss",
    "open_metrics_log",
    "save_training_checkpoint",
    "set_learning_rate",
    "write_record",
]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Sample indices of every full batch of ``epoch`` (a seeded permutation of ``range(n)``)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def set_learning_rate(
    optimizer: torch.optim.Optimizer, step: int, total: int, warmup: int, peak: float | None = None
) -> None:
    """Set every group's learning rate for ``step``: ``lr_at`` of the group's ``peak_lr`` (else ``peak``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, total, warmup, group.get("peak_lr", peak))


def finite_loss(loss: torch.Tensor | float, step: int, what: str = "loss") -> float:
    """``loss`` as a float.

    Raises:
        FloatingPointError: The loss is NaN or infinite (the message names ``what`` and the step).
    """
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} became {value} at step {step}; lower the learning rate")
    return value


def due(step: int, every: int, last: int) -> bool:
    """Whether a periodic action falls on ``step``: every ``every`` steps (0: never) and at ``last``."""
    return bool(every and step % every == 0) or step == last


def open_metrics_log(path: Path, step: int) -> IO[str]:
    """Open ``metrics.jsonl`` for appending: emptied at step 0, else cut back to the lines up to ``step``.

    The file is rewritten atomically, so a run killed here leaves the old log or the new one.
    """
    if step == 0:
        atomic_write(path, lambda tmp: tmp.write_text(""))
    else:  # drop lines logged after the checkpoint we resume from
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [ln for ln in lines if ln and json.loads(ln)["step"] <= step]
        atomic_write(path, lambda tmp: tmp.write_text("".join(ln + "\n" for ln in kept)))
    return open(path, "a", encoding="utf-8")


def write_record(log: IO[str], record: dict[str, Any]) -> None:
    """Append one metrics record as a JSON line and flush it."""
    log.write(json.dumps(record) + "\n")
    log.flush()


def save_training_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a training checkpoint (tensors and plain values, read back with ``weights_only=True``) atomically."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


@torch.no_grad()
def clamp_logit_scale(logit_scale: torch.Tensor) -> None:
    """Keep CLIP's learned log temperature in ``[0, log 100]`` (open_clip's rule), in place."""
    logit_scale.clamp_(0, math.log(100))


def clip_update(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, logit_scale: torch.Tensor, step: int, what: str = "loss"
) -> float:
    """One optimiser step on a CLIP loss: gradients, step, :func:`clamp_logit_scale`, then :func:`finite_loss`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    clamp_logit_scale(logit_scale)
    return finite_loss(loss, step, what)
