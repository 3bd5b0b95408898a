"""A PNG contact sheet of a world: one labelled row per domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from replens.world.config import WorldConfig
from replens.world.dataset import load_world
from replens.world.render import render_scenes
from replens.world.scene import sample_scenes

_LABEL_WIDTH = 96


def _rows_from_config(config: WorldConfig, per_domain: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(np.random.SeedSequence(entropy=config.seed, spawn_key=(99,)))
    rows = []
    for domain in config.domains:
        scenes = sample_scenes(
            rng,
            per_domain,
            domains=(domain,),
            max_objects=config.max_objects,
            spurious=config.spurious,
            spurious_cue=config.spurious_cue,
        )
        rows.append((domain, render_scenes(scenes, config.size, patterned=config.patterned)[0]))
    return rows


def _rows_from_world(path: Path, per_domain: int) -> list[tuple[str, np.ndarray]]:
    data = load_world(path, "train")
    if len(data) == 0:
        data = load_world(path, "test")
    rows = []
    for d, domain in enumerate(data.domain_names):
        idx = np.nonzero(data.domains == d)[0][:per_domain]
        images = [data.read(int(i)) for i in idx]
        size = data.config.size
        rows.append((domain, np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)))
    return rows


def save_preview(
    out_png: str | Path,
    source: WorldConfig | str | Path | None = None,
    per_domain: int = 8,
    *,
    tile: int | None = None,
) -> Path:
    """Save a grid with one row per domain, labelled with the domain name.

    Args:
        out_png: Where to write the PNG.
        source: A :class:`WorldConfig` (scenes are rendered on the fly, nothing
            is cached), the directory of a generated world (its first train
            images of each domain), or ``None`` for ``WorldConfig()``.
        per_domain: Images per row.
        tile: Side of each cell in pixels (nearest-neighbour upscaled);
            defaults to the image size, at least 64.

    Returns:
        ``out_png`` as a :class:`~pathlib.Path`.
    """
    if source is None or isinstance(source, WorldConfig):
        rows = _rows_from_config(source or WorldConfig(), per_domain)
    else:
        rows = _rows_from_world(Path(source), per_domain)
    size = max((r.shape[1] for _, r in rows if len(r)), default=64)
    tile = tile or max(64, size)
    gap = 2
    width = _LABEL_WIDTH + per_domain * (tile + gap)
    height = len(rows) * (tile + gap) + gap
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (domain, images) in enumerate(rows):
        top = gap + r * (tile + gap)
        draw.text((6, top + tile // 2 - 6), domain, fill=(0, 0, 0))
        for c, image in enumerate(images[:per_domain]):
            cell = Image.fromarray(image).resize((tile, tile), Image.NEAREST)
            sheet.paste(cell, (_LABEL_WIDTH + c * (tile + gap), top))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
