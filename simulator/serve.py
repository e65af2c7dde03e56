"""``allworx-sim releases serve``: the release repository over plain HTTP, for lab boxes.

A repository is static files (docs/releases.md): any web server or CDN can serve the same folder.
This one is the standard library's threading HTTP server with what the agent's downloads use:
``GET`` and ``HEAD`` of regular files under the folder, single ``Range: bytes=N-`` / ``N-M``
requests answered ``206`` (so a cut download resumes where it stopped), ``404`` for anything
else (no directory listings, nothing outside the folder).

Invariant: only files inside the served folder are read, whatever the request path holds (a
resolved path that leaves the folder, or a symbolic link out of it, is ``404``). The served bytes
are the files' bytes: the trust comes from the TUF metadata, not from this server.

For tests, :class:`Faults` makes the server misbehave on purpose: drop the connection once after
some bytes of a file (a resumable download), or serve a file in slow trickles.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from agent.cliutil import guarded
from common.errors import StoreError

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
CHUNK = 64 * 1024  # bytes per write


@dataclass
class Faults:
    """Deliberate misbehaviour (tests and the attack suite): off by default."""

    cut_once_after: int | None = None  # drop the connection once after this many body bytes of a file
    cut_suffix: str = ".img"  # ...of the first file whose path ends with this
    trickle: float | None = None  # seconds between single bytes of files ending with ``cut_suffix``
    requests: list[str] = field(default_factory=list)  # "METHOD path range" of every request seen
    _cut_done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take_cut(self, path: str) -> int | None:
        """The byte count after which to drop this response, once; None to serve it whole."""
        with self._lock:
            if self.cut_once_after is None or self._cut_done or not path.endswith(self.cut_suffix):
                return None
            self._cut_done = True
            return self.cut_once_after


class RepositoryHandler(BaseHTTPRequestHandler):
    """Serves the files of ``server.folder`` (a :class:`RepositoryServer`)."""

    server: RepositoryServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # reason: the base class's name
        """Quiet: the simulator logs through structlog, not stderr lines per request."""

    def do_HEAD(self) -> None:  # reason: http.server's dispatch name
        """Answer the headers of a GET."""
        self._serve(body=False)

    def do_GET(self) -> None:  # reason: http.server's dispatch name
        """Serve a file, whole or a byte range."""
        self._serve(body=True)

    def _file(self) -> Path | None:
        folder = self.server.folder
        relative = unquote(urlsplit(self.path).path).lstrip("/")
        try:
            path = (folder / relative).resolve()
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(folder) or not path.is_file():
            return None
        return path

    def _serve(self, *, body: bool) -> None:
        faults = self.server.faults
        faults.requests.append(f"{self.command} {self.path} {self.headers.get('Range', '')}".strip())
        path = self._file()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        wanted = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if wanted is not None:
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(HTTPStatus.PARTIAL_CONTENT if wanted is not None else HTTPStatus.OK)
        if wanted is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self._send_body(path, start, end - start + 1)

    def _send_body(self, path: Path, start: int, length: int) -> None:
        faults = self.server.faults
        cut = faults.take_cut(self.path)
        slow = faults.trickle is not None and self.path.endswith(faults.cut_suffix)
        with path.open("rb") as handle:
            handle.seek(start)
            sent = 0
            while sent < length:
                step = 1 if slow else min(CHUNK, length - sent)
                if cut is not None:
                    step = min(step, cut - sent)
                    if step <= 0:
                        self.close_connection = True
                        self.connection.close()  # the connection drops mid-body
                        return
                data = handle.read(step)
                if not data:
                    return
                self.wfile.write(data)
                sent += len(data)
                if slow and faults.trickle is not None:
                    self.wfile.flush()
                    time.sleep(faults.trickle)


class RepositoryServer(ThreadingHTTPServer):
    """An HTTP server for one repository folder."""

    daemon_threads = True

    def __init__(
        self, folder: Path, port: int, host: str = "127.0.0.1", faults: Faults | None = None
    ) -> None:
        self.folder = folder.resolve()
        self.faults = faults or Faults()
        super().__init__((host, port), RepositoryHandler)

    @property
    def url(self) -> str:
        """The repository's base URL."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


@contextmanager
def serving(folder: Path, port: int = 0, faults: Faults | None = None) -> Iterator[RepositoryServer]:
    """Serve ``folder`` on 127.0.0.1 (``port`` 0: a free one) in a thread for the block.

    Raises:
        OSError: the port cannot be bound.
    """
    server = RepositoryServer(folder, port, faults=faults)
    thread = threading.Thread(target=server.serve_forever, name="release-repository", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@click.command("serve")
@click.option("--dir", "folder", required=True,
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="The repository folder (what `releases publish --out` made).")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The TCP port (0: any free one).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@guarded
def serve_command(folder: Path, port: int, host: str) -> None:
    """Serve a release repository over HTTP until interrupted (any static web server would do)."""
    try:
        server = RepositoryServer(folder, port, host)
    except OSError as exc:
        raise StoreError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    click.echo(f"serving {folder} at {server.url}/ (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
