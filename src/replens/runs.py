"""Run folders: atomic writes, resolved configs and ``metrics.json``.

Every command writes into one run folder (default ``runs/<command>-<UTC time>``)
its resolved configuration (``config.yaml``), a ``metrics.json`` and whatever
artefacts it makes. Every file is written to a temporary name in the same
folder and renamed into place, so a crash never leaves a half-written output.

:func:`open_run` is the run-folder contract every command goes through: a
lock file (``run.lock``) keeps a second process out, and a run record
(``run.json``) holds the fingerprint of everything the outputs depend on, so a
rerun reuses or resumes a folder only when its inputs are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from replens import __version__


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, flush it to disk, then rename ``tmp_path`` onto ``path`` (the one atomic write).

    The temporary file lies in the destination's folder (``.NAME.*.tmp``), so the rename is atomic; the
    file is fsynced before the rename and the folder after it, so a crash leaves the old file or the
    complete new one, never a torn one. A failed ``write`` removes the temporary file.

    Args:
        path: Final destination.
        write: Writes the complete file at the temporary path it is given.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Persist a rename in ``folder`` (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the file itself is already on disk
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (numpy values converted)."""
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


def atomic_write_yaml(path: str | Path, data: Any) -> Path:
    """Write ``data`` as YAML atomically."""
    return atomic_write_text(path, yaml.safe_dump(_jsonable(data), sort_keys=False))


def default_run_dir(command: str, root: str | Path = "runs") -> Path:
    """``runs/<command>-<YYYYmmdd-HHMMSS>`` (a numeric suffix avoids clashes)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of the working tree, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunDir:
    """A run folder with helpers for the files every command writes.

    Args:
        path: The folder (created if needed).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        #: Whether :func:`open_run` found a run of the same fingerprint here (finished work is reused).
        self.reused = False
        self._lock: RunLock | None = None
        self._record: dict[str, Any] = {}
        self._prior: dict[str, bytes | None] = {}

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)

    def _claim(self, lock: RunLock, finger: dict[str, Any], command: str, reused: bool) -> None:
        self._prior = {name: (self.path / name).read_bytes() if (self.path / name).is_file() else None
                       for name in (RECORD, "config.yaml")}
        self._lock, self.reused = lock, reused
        self._record = {"format": "replens-run", "command": command, "state": "running",
                        "digest": _digest_of(finger), "fingerprint": finger}
        atomic_write_json(self.path / RECORD, self._record)
        _open_runs.append(self)

    @property
    def finished_before(self) -> bool:
        """Whether a finished run of the same fingerprint was in the folder when it was claimed."""
        prior = self._prior.get(RECORD)
        return self.reused and prior is not None and json.loads(prior).get("state") == "finished"

    def close(self, ok: bool = True) -> None:
        """Mark the run finished (``ok``) and release the lock.

        A failed run that reused a folder puts back the record and ``config.yaml``
        it found, so a failed resume leaves the folder as it was.
        """
        if self._lock is None:
            return
        try:
            if ok:
                atomic_write_json(self.path / RECORD, {**self._record, "state": "finished"})
            elif self._prior.get(RECORD) is not None:
                for name, data in self._prior.items():
                    if data is None:
                        (self.path / name).unlink(missing_ok=True)
                    else:
                        atomic_write_bytes(self.path / name, data)
            elif any(p.name not in (LOCK, RECORD, "config.yaml") and not p.name.startswith(".")
                     for p in self.path.iterdir()):
                atomic_write_json(self.path / RECORD, {**self._record, "state": "failed"})  # partial work: resumable
            else:  # failed before writing anything: leave no record that would pin these inputs
                for name in (RECORD, "config.yaml"):
                    (self.path / name).unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None
            if self in _open_runs:
                _open_runs.remove(self)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> Path:
        """Write the resolved configuration (plus replens version and git commit)."""
        full = {**config, "_replens_version": __version__, "_git_commit": git_commit()}
        return atomic_write_yaml(self.path / "config.yaml", full)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Write ``metrics.json`` atomically."""
        return atomic_write_json(self.path / "metrics.json", metrics)


# ----------------------------------------------------------------------------- the run-folder contract
#: The run record: what the folder's outputs depend on (the fingerprint) and whether the run finished.
RECORD = "run.json"
#: The lock file of the process writing the folder (its pid).
LOCK = "run.lock"
#: Top-level config keys that change how a run goes, not what it computes; never fingerprinted.
UNFINGERPRINTED = frozenset(
    {"out", "quiet", "overwrite", "device", "workers", "threads", "verbose", "offline", "resume", "no_resume",
     "cache_dir", "handler"}
)
_HASH_BLOCK = 1 << 22
_DIR_MANIFESTS = (RECORD, "manifest.json", "meta.json")
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:(?!//)")
_digest_memo: dict[tuple[str, int, int], str] = {}
_open_runs: list[RunDir] = []


class RunFolderError(ValueError):
    """A run folder cannot be used: other inputs, another writer, not a folder, not writable."""


def safe_name(text: str, fallback: str = "item") -> str:
    """A file name derived from ``text`` that stays inside its folder.

    Every character outside ``[A-Za-z0-9_.-]`` becomes ``_``, leading dots are
    dropped (no ``.``, ``..`` or hidden files) and the result is at most 100
    characters; an empty result becomes ``fallback``.

    Args:
        text: A label, sample id or class name.
        fallback: The name used when nothing of ``text`` is left.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.strip()).lstrip(".")[:100]
    return name or fallback


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and modification time within a process)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digest_memo:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
                digest.update(block)
        _digest_memo[key] = digest.hexdigest()
    return _digest_memo[key]


def input_digest(path: str | Path) -> str:
    """A content digest of an input file or folder.

    A file hashes its bytes. A folder hashes its run record, ``manifest.json``
    (worlds, caption banks) and ``meta.json`` (embeddings) when it has them,
    otherwise its listing (relative names and sizes).
    """
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256()
    known = [path / name for name in _DIR_MANIFESTS if (path / name).is_file()]
    if known:
        for file in known:
            digest.update(f"{file.name}={file_digest(file)}\n".encode())
    else:
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                file = Path(root) / name
                digest.update(f"{file.relative_to(path)}:{file.stat().st_size}\n".encode())
    return digest.hexdigest()


def _input_paths(value: str) -> list[Path]:
    """Local files or folders a config string names: a path, or the paths inside a data spec."""
    # lazy: importing replens.data loads torch; replens.runs (and replens.hub, replens.pages) stay torch-free
    from replens.data.paths import _split_top_level, expand_braces

    if not value or len(value) > 4096 or "\n" in value:
        return []
    text = _SCHEME.sub("", value, count=1) if not Path(value).exists() else value
    found: list[Path] = []
    for part in text.split("|"):
        part = part.split("?", 1)[0]
        for piece in _split_top_level(part):
            for candidate in expand_braces(os.path.expanduser(piece.strip())) if piece.strip() else []:
                path = Path(candidate)
                if path.exists():
                    found.append(path)
    return found


def _inputs(config: Any, key: str, out: dict[str, dict[str, str]], skip: Path | None) -> None:
    if isinstance(config, dict):
        for k, v in config.items():
            if not key and k in UNFINGERPRINTED:
                continue
            _inputs(v, f"{key}.{k}" if key else str(k), out, skip)
    elif isinstance(config, list | tuple):
        for k, v in enumerate(config):
            _inputs(v, f"{key}[{k}]", out, skip)
    elif isinstance(config, str | Path):
        for n, path in enumerate(_input_paths(str(config))):
            resolved = path.resolve()
            if skip is not None and (resolved == skip or skip in resolved.parents):
                continue  # the run's own outputs are not its inputs
            out[key if n == 0 else f"{key}#{n}"] = {"path": str(path), "sha256": input_digest(path)}


def fingerprint(config: dict[str, Any], run_path: str | Path | None = None) -> dict[str, Any]:
    """Everything a run's outputs depend on.

    The resolved config (less :data:`UNFINGERPRINTED` keys, so the data
    spec, image size and seed are in it), the content digest of every local
    file or folder a config value names (weights, worlds, shards, caption
    banks, embeddings) and the replens version.

    Args:
        config: The resolved config of the run.
        run_path: The run folder; paths inside it are outputs, not inputs.
    """
    clean = {k: v for k, v in _jsonable(config).items() if k not in UNFINGERPRINTED}
    inputs: dict[str, dict[str, str]] = {}
    _inputs(clean, "", inputs, Path(run_path).resolve() if run_path is not None else None)
    return {"config": clean, "inputs": inputs, "replens_version": __version__}


def _flat(value: Any, key: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value and not ({"path", "sha256"} == set(value)):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{key}.{k}" if key else str(k)))
        return out
    return {key: value}


def describe_difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    """The first differing entry of two fingerprints, in words (plus how many more differ)."""
    old, new = _flat(before), _flat(now)
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    if not keys:
        return "nothing"
    key = keys[0]
    a, b = old.get(key), new.get(key)
    if key.startswith("inputs.") and isinstance(a, dict) and isinstance(b, dict) and a["path"] == b["path"]:
        text = f"the content of {key[len('inputs.'):]} {b['path']} (sha256 {a['sha256'][:12]} before, {b['sha256'][:12]} now)"
    elif key.startswith("inputs."):
        text = f"input {key[len('inputs.'):]} ({_short(a)} before, {_short(b)} now)"
    else:
        text = f"{key.removeprefix('config.')} ({_short(a)} before, {_short(b)} now)"
    return text + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")


def _short(value: Any) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value['path']} sha256 {value['sha256'][:12]}"
    text = "absent" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _digest_of(finger: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(finger, sort_keys=True).encode()).hexdigest()


class RunLock:
    """An exclusive lock file holding the writer's pid; a lock of a dead process is taken over.

    Args:
        path: The lock file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def acquire(self, what: str) -> None:
        """Create the lock file or raise :class:`RunFolderError` naming the live holder's pid."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                mine = pid == os.getpid() and any(r._lock is not None and r._lock.path == self.path for r in _open_runs)
                if (pid != os.getpid() and _pid_alive(pid)) or mine:
                    raise RunFolderError(
                        f"{what} is being written by process {pid} (lock {self.path}); wait for it to finish, "
                        "or use another --out"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                # what the killed writer staged: our files and scratch folders (``.NAME.*.tmp``, e.g. a
                # Q-Score spill) and the files safetensors' Rust writer stages next to its target
                # (``.tmpXXXXXX``, the tempfile crate's naming)
                for tmp in sorted(self.path.parent.rglob(".*.tmp")):
                    if tmp.is_dir():
                        shutil.rmtree(tmp, ignore_errors=True)
                    else:
                        tmp.unlink(missing_ok=True)
                for tmp in self.path.parent.rglob(".tmp*"):
                    if tmp.is_file():
                        tmp.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            self.held = True
            return
        raise RunFolderError(f"cannot take the lock {self.path}: other processes keep racing for it")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _clear_folder(path: Path, keep: tuple[str, ...]) -> None:
    for entry in path.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def open_run(
    path: str | Path, config: dict[str, Any], *, overwrite: bool = False, command: str | None = None
) -> RunDir:
    """Claim ``path`` as the run folder of a run with ``config`` (the one run-folder contract).

    * The folder is locked (``run.lock``, the writer's pid) until :meth:`RunDir.close`.
    * ``run.json`` records the run's :func:`fingerprint` and state. A folder
      whose record matches is reused: commands skip finished work and resume
      the rest. Any other folder with files is refused with one line naming
      what differs, unless ``overwrite`` (then its contents are deleted first;
      only a replens run folder is ever deleted).
    * ``config.yaml`` is written only once the folder is claimed. When the run
      then fails, :meth:`RunDir.close` puts back the record and config it found.

    Args:
        path: The run folder (created).
        config: The resolved config; also written to ``config.yaml``.
        overwrite: Replace a run folder made from other inputs (or a finished run).
        command: Name in messages (default: ``config["command"]``).

    Returns:
        The claimed :class:`RunDir`; ``run.reused`` tells whether a matching run was there.

    Raises:
        RunFolderError: The folder is a file, not writable, locked by a live
            process, or holds another run (without ``overwrite``).
    """
    path = Path(path)
    what = f"run folder {path}"
    if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or int(os.environ.get("NODE_RANK", "0") or 0) > 0:
        return RunDir(path)  # a worker that a distributed launcher started: rank 0 holds the folder
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {path} is a file, not a folder; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunFolderError(f"run folder {path} is not writable")
    finger = fingerprint(config, path)
    run = RunDir(path)
    lock = RunLock(path / LOCK)
    lock.acquire(what)
    try:
        record_path, config_path = path / RECORD, path / "config.yaml"
        record: dict[str, Any] | None = None
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = {"fingerprint": {"unreadable": str(record_path)}}
        others = [p.name for p in path.iterdir() if p.name != LOCK and not p.name.startswith(".")]
        reused = False
        if record is not None and record.get("digest") == _digest_of(finger):
            reused = True
        elif record is None and _legacy_config_matches(config_path, config):
            reused = True  # a run folder of a replens before run records, with the same config
        elif record is not None or others:
            if not overwrite:
                if record is None:
                    why = f"it holds {len(others)} file(s) ({', '.join(sorted(others)[:3])}) and no {RECORD}"
                else:
                    why = f"it was made from other inputs: {describe_difference(record.get('fingerprint', {}), finger)}"
                raise RunFolderError(
                    f"{what} is not reusable: {why}; give another --out, or --overwrite to replace it"
                )
            if record is None and not config_path.is_file():
                raise RunFolderError(
                    f"{what} is not a replens run folder ({', '.join(sorted(others)[:3])}); "
                    "--overwrite only replaces run folders: give another --out"
                )
            _clear_folder(path, keep=(LOCK,))
        run._claim(lock, finger, command or str(config.get("command", "run")), reused)
        run.write_config(config)
    except BaseException:
        lock.release()
        raise
    return run


def _legacy_config_matches(config_path: Path, config: dict[str, Any]) -> bool:
    if not config_path.is_file():
        return False
    try:
        stored = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(stored, dict):
        return False
    clean = {k: v for k, v in stored.items() if k not in UNFINGERPRINTED and not k.startswith("_")}
    return clean == {k: v for k, v in _jsonable(config).items() if k not in UNFINGERPRINTED}


def close_runs(since: int = 0, ok: bool = True) -> None:
    """Close the runs opened after the first ``since`` (``cli.main`` closes those of its command)."""
    while len(_open_runs) > since:
        _open_runs[-1].close(ok=ok)


def open_run_count() -> int:
    """How many runs this process holds open (a mark for :func:`close_runs`)."""
    return len(_open_runs)
