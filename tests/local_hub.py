"""A local HTTP server on 127.0.0.1 that plays download.pytorch.org, the Hugging Face hub and dataset hosts.

Tests write small files into it and point replens' base URLs at it
(``REPLENS_HUB_URL``), so the real download code runs without leaving the
machine. Importable as ``local_hub`` (pyproject puts ``tests`` on pytest's pythonpath).
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: The commit every served Hugging Face repository is at.
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class LocalHub:
    """Served files by URL path, the requests seen, and faults to inject.

    Attributes:
        files: URL path -> content.
        etags: URL path -> ETag sent for hub files (default: the content's sha256, as for LFS files).
        cut_once: URL path -> bytes sent before the connection is closed, on the next GET only.
        cut_always: URL path -> bytes sent before the connection is closed, on every GET.
        requests: ``(method, path, Range header)`` of every request, in order.
        url: ``http://127.0.0.1:PORT`` once started.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    cut_once: dict[str, int] = field(default_factory=dict)
    cut_always: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its full URL."""
        self.files[path] = data
        return self.url + path

    def add_hf(self, repo: str, filename: str, data: bytes, *, etag: str | None = None) -> str:
        """Serve a Hugging Face hub file at ``/{repo}/resolve/main/{filename}``."""
        path = f"/{repo}/resolve/main/{filename}"
        self.etags[path] = etag or hashlib.sha256(data).hexdigest()
        return self.add(path, data)

    def hits(self, needle: str = "") -> list[tuple[str, str, str | None]]:
        """Requests whose path contains ``needle``."""
        return [r for r in self.requests if needle in r[1]]


def _handler(hub: LocalHub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def _headers(self, data: bytes, path: str, start: int) -> None:
            if path in hub.etags:
                self.send_header("ETag", f'"{hub.etags[path]}"')
                self.send_header("X-Repo-Commit", HF_COMMIT)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def _serve(self, body: bool) -> None:
            path = self.path.split("?")[0]
            rng = self.headers.get("Range")
            hub.requests.append((self.command, path, rng))
            data = hub.files.get(path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            found = re.match(r"bytes=(\d+)-", rng or "")
            start = int(found.group(1)) if found else 0
            self.send_response(206 if start else 200)
            self._headers(data, path, start)
            if not body:
                return
            cut = hub.cut_once.pop(path, None) or hub.cut_always.get(path)
            if cut is not None:
                self.wfile.write(data[start : start + cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._serve(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

    return Handler


@contextmanager
def serve() -> Iterator[LocalHub]:
    """Start a :class:`LocalHub` on 127.0.0.1 (a free port) in a thread; stop it on exit."""
    hub = LocalHub()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
