"""replens: understand vision encoders and fix their failures.

The typed Python API, one call per capability (each returns a dataclass with ``.save(dir)`` / ``.load(dir)``):

* :func:`replens.train` (:func:`replens.engine.train_encoder`) -> :class:`~replens.engine.TrainResult`;
* :func:`replens.quality.score` -> :class:`~replens.quality.QScoreReport`;
* :func:`replens.explain.explain` -> :class:`~replens.explain.Explanations`;
* :func:`replens.audit` (:func:`replens.apps.audit.audit`) -> :class:`~replens.apps.audit.AuditReport`.

``train`` and ``audit`` are loaded on first use, so ``import replens`` stays light. This package root is the
one library module that names the application layer (``audit``); ruff's TID251 rule allows it here only.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "audit", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        # lazy: replens.engine imports torch; `import replens` stays light
        from replens.engine.result import train_encoder

        return train_encoder
    if name == "audit":
        # lazy: the application layer imports torch and the whole library; `import replens` stays light
        from replens.apps.audit import audit

        return audit
    raise AttributeError(f"module 'replens' has no attribute {name!r}")
