"""A local stand-in for the Hugging Face hub on 127.0.0.1, serving files the way the hub does.

``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` answer with ``X-Repo-Commit``, an ``ETag`` (the sha256 for
"LFS" files, the git blob sha1 for small files; LFS files also get ``X-Linked-Etag``/``X-Linked-Size``),
``Content-Length`` and ``Accept-Ranges: bytes``; a ``Range: bytes=N-`` request gets ``206`` with the rest. Test
switches: ``cut_after`` sends only that many bytes of the next GET of a path and drops the connection, after which
GETs of that path are refused (403) until ``cut_after`` is cleared; ``corrupt`` serves other bytes of the same size
under the published hash. Every request is logged. Used only by the tests; stopped by them.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    data: bytes
    lfs: bool


@dataclass
class HubState:
    files: dict[str, HubFile] = field(default_factory=dict)  # "repo/path" -> file
    cut_after: dict[str, int] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, "repo/path", Range header)


def etag_of(file: HubFile) -> str:
    if file.lfs:
        return hashlib.sha256(file.data).hexdigest()
    return hashlib.sha1(f"blob {len(file.data)}\0".encode() + file.data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    state: HubState

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def _lookup(self, method: str) -> tuple[str, HubFile | None]:
        """The requested "repo/path" and its file; logs the request and answers 404 when there is no such file."""
        parts = self.path.split("?")[0].strip("/").split("/")
        key = "/".join(parts[:2] + parts[4:]) if len(parts) >= 5 and parts[2] == "resolve" else ""
        self.state.log.append((method, key, self.headers.get("Range", "")))
        file = self.state.files.get(key)
        if file is None:
            self.send_error(404)
        return key, file

    def _headers(self, file: HubFile, status: int, length: int, start: int = 0) -> None:
        self.send_response(status)
        etag = etag_of(file)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag}"')
        if file.lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(file.data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(file.data) - 1}/{len(file.data)}")
        self.end_headers()

    def do_HEAD(self) -> None:
        _, file = self._lookup("HEAD")
        if file is not None:
            self._headers(file, 200, len(file.data))

    def do_GET(self) -> None:
        key, file = self._lookup("GET")
        if file is None:
            return
        requested = self.headers.get("Range", "")
        if key in self.state.broken:
            self.send_error(403, "interrupted (test)")
            return
        data = bytes(b ^ 0xFF for b in file.data) if key in self.state.corrupt else file.data
        start = int(requested.removeprefix("bytes=").split("-")[0]) if requested.startswith("bytes=") else 0
        body = data[start:]
        self._headers(file, 206 if start else 200, len(body), start)
        cut = self.state.cut_after.pop(key, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.state.broken.add(key)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class HubServer:
    """``with HubServer(files) as hub:`` serves on ``hub.endpoint`` until the block ends."""

    def __init__(self, files: dict[str, HubFile]) -> None:
        self.state = HubState(files=files)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
