"""Figures without pyplot state: every plot of the library is drawn on an Agg canvas and written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replens.runs import atomic_write

__all__ = ["new_figure", "save_figure"]


def new_figure(width: float = 6.0, height: float = 4.0, dpi: int = 120) -> Any:
    """A matplotlib ``Figure`` on its own Agg canvas (no display, no global figure registry)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, *, tight: bool = True, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix, PNG by default); pyplot figures are closed."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    savefig.setdefault("format", path.suffix.lstrip(".") or "png")
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig))
    if fig.canvas.manager is not None:  # created by pyplot: release it from pyplot's registry
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out
