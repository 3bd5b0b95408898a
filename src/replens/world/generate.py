"""Generate a world into a cached directory of shards with a manifest.

On-disk layout (all arrays are ``.npy`` files written with ``numpy.lib.format``,
which embeds no timestamps, so the same config gives the same bytes)::

    out_dir/
      manifest.json                 written last; its presence marks a complete world
      train/shard-00000/
        images.npy                  (n, H, W, 3) uint8
        segmentation.npy            (n, H, W) uint8: 0 background, k + 1 object slot k,
                                    255 marker patch (objects never overlap)
        labels.npy                  (n,) int64, class = shape of the main object
        domains.npy                 (n,) int64, index into manifest["domains"]
        boxes.npy                   (n, K, 4) int16 x0, y0, x1 (excl.), y1 (excl.); -1 padding
        records.jsonl               one JSON object per image: objects, relations,
                                    captions, concepts, background, marker, spurious_aligned
        scene/<field>.npy           the full scene specification (SceneBatch fields:
                                    shape, colour, texture, size with -1 padding,
                                    geometry, style, noise seeds), enough to re-render
      test/shard-00000/ ...

The directory is built under a temporary sibling name and renamed into place
with :func:`os.replace` once its manifest is written, so a crash never leaves a
directory that looks complete.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from replens.hub import replens_cache_dir
from replens.runs import LOCK, RECORD
from replens.world.annotate import annotate, boxes_from_segmentation
from replens.world.config import SPLITS, WorldConfig
from replens.world.render import MARKER_LABEL, render_scenes
from replens.world.scene import SceneBatch, sample_scenes
from replens.world.vocab import (
    BACKGROUNDS,
    COLOURS,
    DOMAINS,
    GENERATOR_VERSION,
    PATCH_CUES,
    RELATIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    marker_names,
)

MANIFEST = "manifest.json"
FORMAT = "replens-world"
#: Scenes rendered at once inside a shard (bounds the working memory).
RENDER_CHUNK = 512


class WorldCacheError(RuntimeError):
    """A world directory exists but does not hold the requested (or a valid) world."""


class _HashingWriter:
    """File wrapper that hashes what it writes (``numpy.lib.format`` calls ``write``)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.digest, self.bytes = fh, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.bytes += memoryview(data).nbytes
        return self.fh.write(data)


def _write_file(path: Path, write: Callable[[Any], None]) -> dict[str, Any]:
    with open(path, "wb") as fh:
        writer = _HashingWriter(fh)
        write(writer)
    return {"sha256": writer.digest.hexdigest(), "bytes": writer.bytes}


def _write_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    return _write_file(path, lambda w: np.lib.format.write_array(w, np.ascontiguousarray(array), allow_pickle=False))


def shard_rng(seed: int, split: str, shard_index: int) -> np.random.Generator:
    """The generator of one shard: independent of shard order and worker count."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(SPLITS.index(split), shard_index)))


def _shard_scenes(config: WorldConfig, split: str, shard_index: int, count: int) -> SceneBatch:
    return sample_scenes(
        shard_rng(config.seed, split, shard_index),
        count,
        domains=config.domains,
        max_objects=config.max_objects,
        spurious=config.spurious,
        spurious_cue=config.spurious_cue,
        train=split == "train",
    )


def _write_shard(
    config: WorldConfig,
    split: str,
    shard_index: int,
    start: int,
    count: int,
    root: Path,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Sample, render, annotate and write one shard; return its manifest entry."""
    scenes = _shard_scenes(config, split, shard_index, count)
    size = config.size
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    segmentation = np.empty((count, size, size), dtype=np.uint8)
    for lo in range(0, count, RENDER_CHUNK):
        hi = min(lo + RENDER_CHUNK, count)
        images[lo:hi], segmentation[lo:hi] = render_scenes(scenes.take(slice(lo, hi)), size,
                                                           patterned=config.patterned)
        if on_chunk is not None:
            on_chunk(hi - lo)
    boxes = boxes_from_segmentation(segmentation, config.max_objects)
    records = annotate(scenes, boxes, size, patterned=config.patterned)
    domain_of = {d: i for i, d in enumerate(config.domains)}
    domains = np.array([domain_of[DOMAINS[d]] for d in scenes.domain], dtype=np.int64)

    rel = Path(split) / f"shard-{shard_index:05d}"
    shard_dir = root / rel
    (shard_dir / "scene").mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    arrays = {
        "images.npy": images,
        "segmentation.npy": segmentation,
        "labels.npy": scenes.labels,
        "domains.npy": domains,
        "boxes.npy": boxes,
    }
    arrays.update({f"scene/{f.name}.npy": getattr(scenes, f.name) for f in fields(SceneBatch)})
    for name, array in arrays.items():
        files[name] = _write_array(shard_dir / name, array)
    text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
    files["records.jsonl"] = _write_file(shard_dir / "records.jsonl", lambda w: w.write(text.encode("utf-8")))
    return {
        "split": split,
        "index": shard_index,
        "path": rel.as_posix(),
        "start": start,
        "count": count,
        "files": files,
    }


def _tasks(config: WorldConfig) -> list[tuple[str, int, int, int]]:
    tasks = []
    for split in SPLITS:
        total = config.split_sizes[split]
        for index, start in enumerate(range(0, total, config.shard_size)):
            tasks.append((split, index, start, min(config.shard_size, total - start)))
    return tasks


def _manifest(config: WorldConfig, shards: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": config.to_dict(),
        "classes": list(SHAPES),
        "domains": list(config.domains),
        "colours": list(COLOURS),
        "textures": list(TEXTURES),
        "sizes": list(SIZES),
        "backgrounds": list(BACKGROUNDS),
        "markers": list(marker_names(config.patterned)),
        "relations": list(RELATIONS),
        "segmentation": {"background": 0, "object_slot_k": "k + 1", "marker": MARKER_LABEL},
        "spurious_region": "marker patch" if config.spurious_cue in PATCH_CUES else "background",
        "splits": {s: config.split_sizes[s] for s in SPLITS},
        "shards": shards,
    }


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``path/manifest.json``.

    Raises:
        WorldCacheError: No manifest, not a world, or written by another generator version.
    """
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise WorldCacheError(f"{path} is not a complete world: {MANIFEST} is missing")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise WorldCacheError(f"{manifest_path} is not a {FORMAT} manifest")
    if manifest.get("generator_version") != GENERATOR_VERSION:
        raise WorldCacheError(
            f"{path} was written by world generator {manifest.get('generator_version')}, "
            f"this is {GENERATOR_VERSION}; regenerate it (generate_world(..., overwrite=True))"
        )
    return manifest


def _config_diff(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [
        f"{k}: cached {stored.get(k)!r} != requested {wanted.get(k)!r}"
        for k in sorted(set(stored) | set(wanted))
        if stored.get(k) != wanted.get(k)
    ]


def _files_complete(root: Path, manifest: dict[str, Any]) -> bool:
    for shard in manifest["shards"]:
        for name, meta in shard["files"].items():
            path = root / shard["path"] / name
            if not path.is_file() or path.stat().st_size != meta["bytes"]:
                return False
    return True


def verify_world(path: str | Path) -> None:
    """Re-hash every file of a world against its manifest.

    Raises:
        WorldCacheError: A file is missing or its sha256 differs.
    """
    root = Path(path)
    manifest = read_manifest(root)
    for shard in manifest["shards"]:
        for name, meta in shard["files"].items():
            file = root / shard["path"] / name
            if not file.is_file():
                raise WorldCacheError(f"missing file {file}")
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    digest.update(block)
            if digest.hexdigest() != meta["sha256"]:
                raise WorldCacheError(f"{file} does not match its sha256 in the manifest")


#: Files of the run-folder contract (replens.runs) that may sit beside a world generated by `replens world`.
RUN_FOLDER_FILES = (RECORD, LOCK, "config.yaml")


_verified: set[str] = set()


def _world_signature(root: Path, manifest: dict[str, Any]) -> str:
    """Hash of the manifest bytes and every listed file's size and modification time."""
    digest = hashlib.sha256((root / MANIFEST).read_bytes())
    for shard in manifest["shards"]:
        for name in sorted(shard["files"]):
            stat = (root / shard["path"] / name).stat()
            digest.update(f"{shard['path']}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def verify_world_once(path: str | Path) -> None:
    """:func:`verify_world`, once per world state: the result is cached by the manifest and file stats.

    A stamp named by the signature goes to ``replens_cache_dir()/verified-worlds`` (and a set in
    memory), so a world is re-hashed only after its manifest or a file changed.

    Raises:
        WorldCacheError: A file is missing, truncated or its sha256 differs from the manifest.
    """
    root = Path(path)
    manifest = read_manifest(root)
    try:
        signature = _world_signature(root, manifest)
    except (OSError, KeyError, TypeError) as exc:
        raise WorldCacheError(f"{root}: files listed in the manifest are missing ({exc})") from None
    stamp = replens_cache_dir() / "verified-worlds" / signature
    if signature in _verified or stamp.is_file():
        _verified.add(signature)
        return
    verify_world(root)
    _verified.add(signature)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(str(root.resolve()) + "\n")
    except OSError:
        pass  # an unwritable cache only costs a re-check in the next process


def _check_existing(root: Path, config: WorldConfig, overwrite: bool) -> bool:
    """True on a cache hit; clears or rejects anything else at ``root``."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise WorldCacheError(f"{root} exists and is not a directory")
    if (root / MANIFEST).is_file():
        try:
            manifest = read_manifest(root)
            problem = _config_diff(manifest["config"], config.to_dict())
            if not problem and not _files_complete(root, manifest):
                problem = ["files listed in the manifest are missing or truncated"]
        except (WorldCacheError, json.JSONDecodeError, KeyError) as exc:
            problem = [str(exc)]
        if not problem:
            return True
        if not overwrite:
            raise WorldCacheError(
                f"{root} holds a different world ({'; '.join(problem)}); pass another directory "
                "or overwrite=True to regenerate it"
            )
        shutil.rmtree(root)
        return False
    if any(p.name not in RUN_FOLDER_FILES for p in root.iterdir()):
        if not overwrite:
            raise WorldCacheError(f"{root} is not empty and has no {MANIFEST}; refusing to write into it")
        shutil.rmtree(root)
    return False


def cached_world(config: WorldConfig, cache_dir: str | Path = "runs/cache", progress: bool = True) -> Path:
    """Generate (or reuse) ``config``'s world in ``cache_dir/world-<key>``.

    The key hashes the config and :data:`GENERATOR_VERSION`, so a new
    generator never reuses an old world.
    """
    blob = json.dumps({**config.to_dict(), "generator": GENERATOR_VERSION}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return Path(generate_world(config, Path(cache_dir) / f"world-{key}", progress=progress))


def generate_world(
    config: WorldConfig,
    out_dir: str | Path,
    progress: bool = True,
    *,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate (or find cached) the world described by ``config`` in ``out_dir``.

    A directory whose manifest has the same generator version and config, with
    all its files present at their recorded sizes, is a cache hit and is
    returned at once. A directory holding anything else raises
    :class:`WorldCacheError` unless ``overwrite=True``, in which case it is
    deleted and regenerated (it is never silently reused or mixed).

    Args:
        config: What to generate.
        out_dir: The world directory.
        progress: Show a tqdm progress bar (scenes).
        workers: Processes rendering shards in parallel; ``None`` uses up to
            ``os.cpu_count()`` for worlds of more than two shards, else 1. The
            output does not depend on it.
        overwrite: Replace a directory that holds another world.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    root = Path(out_dir)
    if _check_existing(root, config, overwrite):
        return root
    tasks = _tasks(config)
    if workers is None:
        workers = min(os.cpu_count() or 1, len(tasks)) if len(tasks) > 2 else 1
    workers = max(1, min(workers, len(tasks)))

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        with tqdm(total=config.n, unit="scene", desc="world", disable=not progress) as bar:
            if workers == 1:
                shards = [_write_shard(config, *task, tmp, on_chunk=bar.update) for task in tasks]
            else:
                shards = _run_parallel(config, tasks, tmp, workers, bar.update)
        shards.sort(key=lambda s: (SPLITS.index(s["split"]), s["index"]))
        manifest_tmp = tmp / (MANIFEST + ".tmp")
        manifest_tmp.write_text(json.dumps(_manifest(config, shards), indent=2, sort_keys=True) + "\n")
        os.replace(manifest_tmp, tmp / MANIFEST)
        try:
            os.replace(tmp, root)  # root is absent or an empty directory here
        except OSError:
            # Another process finished the same world first: use it if it matches.
            if _check_existing(root, config, overwrite=False):
                return root
            if not root.is_dir():
                raise
            # root is the run folder of `replens world` (its lock, record and config): move the world in, manifest last
            for entry in sorted(tmp.iterdir(), key=lambda p: p.name == MANIFEST):
                os.replace(entry, root / entry.name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _run_parallel(
    config: WorldConfig,
    tasks: list[tuple[str, int, int, int]],
    tmp: Path,
    workers: int,
    update: Callable[[int], Any],
) -> list[dict[str, Any]]:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    shards = []
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        # Largest shards first keeps the workers evenly busy.
        order = sorted(tasks, key=lambda t: -t[3])
        futures = {pool.submit(_write_shard, config, *task, tmp): task for task in order}
        for future in concurrent.futures.as_completed(futures):
            shards.append(future.result())
            update(futures[future][3])
    return shards
