"""Downloads of everything pretrained: one policy for weights, VL models, datasets and caption banks.

Every remote file replens uses goes through this module:

* :func:`fetch_url` for plain URLs (torchvision weights into the torch-hub
  cache ``$TORCH_HOME/hub/checkpoints``, open_clip URL weights into
  ``~/.cache/clip``, dataset archives, caption-bank shards into
  ``$XDG_CACHE_HOME/replens``): a progress bar, a resumed request (HTTP
  ``Range``) when the connection drops mid-file, the published checksum
  checked (a sha256 prefix in the file name as torchvision and open_clip
  publish it, or a given sha256 / md5), and an atomic rename into place, so a
  failed or corrupt download leaves nothing in the cache;
* :func:`fetch_hf` for files on the Hugging Face hub (timm weights, open_clip
  weights and ``hf-hub:`` models), read and written through
  ``huggingface_hub`` in its standard cache (``$HF_HOME/hub``), its LFS
  sha256 checked, its ``.incomplete`` leftovers removed after a failure.

Downloads happen on first use. ``REPLENS_OFFLINE=1`` (or ``replens
--offline``; ``HF_HUB_OFFLINE`` is honoured too) turns them off: a file that
is not cached then raises one :class:`DownloadError` line naming the file and
where it was looked for.

Base URLs can be redirected (mirrors, tests on a local server):
``REPLENS_HUB_URL`` replaces the scheme and host of every download, and
``REPLENS_HUB_URL_<KIND>`` that of one kind (``WEIGHTS``, ``HF``,
``DATASETS``, ``BANKS``); the Hugging Face endpoint also follows
``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from replens import __version__
from replens.runs import atomic_write

__all__ = [
    "KINDS",
    "DownloadError",
    "RemoteFileMissing",
    "cached_hf",
    "checkpoints_dir",
    "expected_sha256",
    "fetch_hf",
    "fetch_hf_any",
    "fetch_url",
    "hf_cache_dir",
    "hf_endpoint",
    "hf_repo_location",
    "mirror_url",
    "offline_mode",
    "replens_cache_dir",
]

#: Kinds of downloads whose base URL can be overridden with ``REPLENS_HUB_URL_<KIND>``.
KINDS = ("weights", "hf", "datasets", "banks")
_OFFLINE_ENV = ("REPLENS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}
_CHUNK = 1 << 20
_OFFLINE_HINT = "offline mode is on (REPLENS_OFFLINE / --offline): run once online or copy the file there"


class DownloadError(RuntimeError):
    """A remote file is not cached and could not be downloaded, or failed its checksum."""


class RemoteFileMissing(DownloadError):
    """The server has no such file (HTTP 404); callers may try an alternative name."""


# ----------------------------------------------------------------------------- policy and places
def offline_mode() -> bool:
    """True when an offline variable (``REPLENS_OFFLINE``, ``HF_HUB_OFFLINE``, ...) is set."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in _OFFLINE_ENV)


def _base_url(kind: str) -> str | None:
    if kind not in KINDS:
        raise ValueError(f"unknown download kind {kind!r}; known: {', '.join(KINDS)}")
    return os.environ.get(f"REPLENS_HUB_URL_{kind.upper()}") or os.environ.get("REPLENS_HUB_URL") or None


def mirror_url(url: str, kind: str) -> str:
    """``url`` with its scheme and host replaced by the override of ``kind``, if any.

    Example:
        With ``REPLENS_HUB_URL=http://127.0.0.1:8000``,
        ``https://download.pytorch.org/models/resnet18-f37072fd.pth`` becomes
        ``http://127.0.0.1:8000/models/resnet18-f37072fd.pth``.
    """
    base = _base_url(kind)
    if not base:
        return url
    parts = urlsplit(url)
    return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def hf_endpoint() -> str:
    """The Hugging Face endpoint: ``REPLENS_HUB_URL_HF``, ``REPLENS_HUB_URL``, ``HF_ENDPOINT`` or huggingface.co."""
    return (_base_url("hf") or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def checkpoints_dir() -> Path:
    """torch hub's checkpoint cache, ``$TORCH_HOME/hub/checkpoints`` (read at call time)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``$XDG_CACHE_HOME/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return _xdg_cache() / "huggingface" / "hub"


def replens_cache_dir() -> Path:
    """replens' own download cache (datasets, caption banks): ``REPLENS_CACHE`` or ``$XDG_CACHE_HOME/replens``."""
    return Path(os.environ.get("REPLENS_CACHE") or _xdg_cache() / "replens")


# ----------------------------------------------------------------------------- plain URLs
_TORCH_HASH = re.compile(r"-([a-f0-9]{6,64})\.")


def expected_sha256(url: str) -> str | None:
    """The sha256 (or its prefix) a URL publishes, as torchvision and open_clip read it.

    torch hub files carry a prefix in their name (``resnet18-f37072fd.pth``);
    OpenAI's CLIP files carry the whole hash as their parent folder
    (``.../clip/models/<sha256>/ViT-B-32.pt``).
    """
    parts = urlsplit(url).path.rstrip("/").split("/")
    if len(parts) >= 2 and re.fullmatch(r"[a-f0-9]{64}", parts[-2]):
        return parts[-2]
    found = _TORCH_HASH.search(parts[-1]) if parts else None
    return found.group(1) if found else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} more bytes"
    return str(exc) or type(exc).__name__


def _stream(url: str, tmp: Path, what: str, progress: bool, retries: int, timeout: float) -> None:
    """Write ``url`` to ``tmp``, resuming with a Range request when the connection drops."""
    from tqdm.auto import tqdm

    done, total, failures = 0, None, 0
    with open(tmp, "wb") as out, tqdm(
        desc=what, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress, leave=False
    ) as bar:
        while True:
            headers = {"User-Agent": f"replens/{__version__}"}
            if done:
                headers["Range"] = f"bytes={done}-"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                    if done and resp.status != 206:  # the server ignored the range: start again
                        out.seek(0)
                        out.truncate()
                        done = 0
                        bar.reset()
                    length = resp.headers.get("Content-Length")
                    span = re.search(r"/(\d+)$", resp.headers.get("Content-Range", ""))
                    if span:
                        total = int(span.group(1))
                    elif length is not None:
                        total = done + int(length)
                    bar.total = total
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        done += len(chunk)
                        bar.update(len(chunk))
                if total is not None and done < total:
                    raise http.client.IncompleteRead(b"", total - done)
                return
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise RemoteFileMissing(f"{what}: {url} does not exist (HTTP 404)") from None
                if exc.code < 500 or failures >= retries:
                    raise DownloadError(f"cannot download {what} from {url}: HTTP {exc.code} {exc.reason}") from None
                failures += 1
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                if failures >= retries:
                    raise DownloadError(
                        f"cannot download {what} from {url} after {failures + 1} tries: {_describe(exc)}"
                    ) from None
                failures += 1
            time.sleep(min(0.25 * 2**failures, 4.0))


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, what: str, source: str, sha256: str | None, md5: str | None) -> None:
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = _digest(path, algorithm)
            if not actual.startswith(expected.lower()):
                raise DownloadError(
                    f"checksum mismatch for {what} from {source}: {algorithm} {actual[:16]}... but "
                    f"{expected} is published; the download was discarded"
                )


def fetch_url(
    url: str,
    dest: str | Path,
    *,
    kind: str = "weights",
    sha256: str | None = None,
    md5: str | None = None,
    what: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
    hint: str = "",
) -> Path:
    """The cached file ``dest``, downloaded from ``url`` first if it is not there.

    Args:
        url: Where the file is published (the override of ``kind`` applies, see :func:`mirror_url`).
        dest: Its place in a cache; written only complete and verified (temp file, then rename).
        kind: ``weights``, ``datasets`` or ``banks`` (which base-URL override applies).
        sha256: Published sha256 or prefix (default: the one in the URL, :func:`expected_sha256`).
        md5: Published md5.
        what: Name for messages and the progress bar (default: the file name).
        progress: Show a progress bar.
        retries: Resumed requests after a dropped connection or a 5xx answer.
        timeout: Seconds of socket inactivity before a request fails.
        hint: What else the user can do (appended to the error of a missing file).

    Returns:
        ``dest``.

    Raises:
        DownloadError: Offline and not cached, unreachable, HTTP error or checksum
            mismatch (nothing is left at ``dest`` or beside it).
    """
    dest = Path(dest)
    what = what or dest.name
    if dest.is_file():
        return dest
    if offline_mode():
        raise DownloadError(f"{what} is not cached (looked for {dest}) and {_OFFLINE_HINT}{_hint(hint)}")
    source = mirror_url(url, kind)
    checksum = sha256 if sha256 is not None or md5 is not None else expected_sha256(url)

    def write(tmp: Path) -> None:
        _stream(source, tmp, what, progress, retries, timeout)
        _check(tmp, what, source, checksum, md5)

    try:
        return atomic_write(dest, write)
    except RemoteFileMissing:
        raise
    except DownloadError as exc:
        raise DownloadError(f"{exc} (cache: {dest}){_hint(hint)}") from None


# ----------------------------------------------------------------------------- Hugging Face hub
def hf_repo_location(repo: str, repo_type: str = "model") -> Path:
    """The cache folder of a hub repository (``models--org--name``)."""
    from huggingface_hub.file_download import repo_folder_name

    return hf_cache_dir() / repo_folder_name(repo_id=repo, repo_type=repo_type)


def cached_hf(repo: str, filename: str, *, revision: str | None = None, repo_type: str = "model") -> Path | None:
    """A hub file already in the cache, or None (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo, filename, cache_dir=hf_cache_dir(), revision=revision or None, repo_type=repo_type
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _probe(url: str, what: str, where: Path, hint: str, timeout: float = 15.0) -> None:
    """One quick HEAD request, so an unreachable host fails at once (huggingface_hub retries for ~20 s).

    Raises:
        RemoteFileMissing: HTTP 404.
        DownloadError: The host cannot be reached.
    """
    request = urllib.request.Request(url, method="HEAD", headers={"Accept-Encoding": "identity"})
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise RemoteFileMissing(f"{what}: {url} does not exist (HTTP 404)") from None
        # anything else (auth, redirects to a CDN, rate limits) is huggingface_hub's to handle
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise DownloadError(
            f"cannot download {what} from {url} (not cached in {where}): {_describe(exc)}{_hint(hint)}"
        ) from None


def _remove_incomplete(repo: str, repo_type: str) -> None:
    blobs = hf_repo_location(repo, repo_type) / "blobs"
    for leftover in blobs.glob("*.incomplete") if blobs.is_dir() else ():
        leftover.unlink(missing_ok=True)


def _check_hf_blob(path: Path, repo: str, filename: str) -> None:
    """LFS files are stored under their sha256: recompute it; on mismatch drop the blob and its link."""
    blob = Path(os.path.realpath(path))
    if re.fullmatch(r"[a-f0-9]{64}", blob.name) and _digest(blob, "sha256") != blob.name:
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {repo}/{filename} from {hf_endpoint()}: its sha256 is not the published "
            f"{blob.name[:16]}...; the download was discarded"
        )


def fetch_hf(
    repo: str,
    filename: str,
    *,
    revision: str | None = None,
    repo_type: str = "model",
    what: str | None = None,
    hint: str = "",
) -> Path:
    """A file of a Hugging Face hub repository, from the cache or downloaded into it.

    Args:
        repo: ``org/name``.
        filename: Path of the file in the repository.
        revision: Branch, tag or commit (default ``main``).
        repo_type: ``model`` or ``dataset``.
        what: Name for messages.
        hint: What else the user can do (appended to the error of a missing file).

    Returns:
        The cached file (a snapshot path of the standard hub cache).

    Raises:
        RemoteFileMissing: The repository has no such file.
        DownloadError: Offline and not cached, unreachable, or a checksum mismatch.
    """
    found = cached_hf(repo, filename, revision=revision, repo_type=repo_type)
    if found is not None:
        return found
    what = what or f"{repo}/{filename}"
    where = hf_repo_location(repo, repo_type)
    if offline_mode():
        raise DownloadError(f"{what} is not cached (looked in {where}, file {filename}) and {_OFFLINE_HINT}"
                            f"{_hint(hint)}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    _probe(f"{hf_endpoint()}/{'datasets/' if repo_type == 'dataset' else ''}{repo}/resolve/{revision or 'main'}/"
           f"{filename}", what, where, hint)
    try:
        path = Path(
            hf_hub_download(
                repo, filename, revision=revision, repo_type=repo_type, cache_dir=hf_cache_dir(), endpoint=hf_endpoint()
            )
        )
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        _remove_incomplete(repo, repo_type)
        if isinstance(exc, FileNotFoundError):  # LocalEntryNotFoundError: the hub could not be reached
            raise DownloadError(f"cannot download {what} from {hf_endpoint()} (not cached in {where}): "
                                f"{str(exc).splitlines()[0]}{_hint(hint)}") from None
        raise RemoteFileMissing(f"{what}: no such file on {hf_endpoint()} ({type(exc).__name__})") from None
    except Exception as exc:  # network and HTTP errors of huggingface_hub / httpx, re-raised as one line
        _remove_incomplete(repo, repo_type)
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DownloadError(f"cannot download {what} from {hf_endpoint()} into {where}: {first}{_hint(hint)}") from None
    _check_hf_blob(path, repo, filename)
    return path


def fetch_hf_any(
    repo: str, filenames: list[str], *, revision: str | None = None, what: str | None = None, hint: str = ""
) -> Path:
    """The first of alternative files of a hub repository (e.g. ``.safetensors`` before ``.bin``).

    A cached alternative wins over downloading; otherwise they are tried in order.

    Raises:
        RemoteFileMissing: The repository has none of them.
        DownloadError: Offline and none cached, or any other failure.
    """
    for name in filenames:
        found = cached_hf(repo, name, revision=revision)
        if found is not None:
            return found
    if offline_mode():
        where = hf_repo_location(repo)
        raise DownloadError(f"{what or repo} is not cached (looked in {where}, files {', '.join(filenames)}) "
                            f"and {_OFFLINE_HINT}{_hint(hint)}")
    last: RemoteFileMissing | None = None
    for name in filenames:
        try:
            return fetch_hf(repo, name, revision=revision, what=what, hint=hint)
        except RemoteFileMissing as exc:
            last = exc
    if last is None:
        raise ValueError("no file names given")
    raise last
