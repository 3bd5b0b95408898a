"""Learning-rate and momentum schedules shared by every trainer (SSL engine, tiny CLIP, token encoder)."""

from __future__ import annotations

import math

__all__ = ["lr_at"]


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps`` steps, then half-cosine decay to 0 at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
