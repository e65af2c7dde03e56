"""The image fetcher: the stage phase's bounded, verified, resumable download into the Update Area.

Invariants:

- Never more than the signed ``size`` is written, and at most one byte past it is read from the
  source: the count passing ``size`` stops the download at once (``IMAGE_TOO_LARGE``).
- Only a file whose size and SHA-256 match the signed values is renamed from ``<name>.part`` to
  ``<name>``; the rename is atomic (fsync the file, rename, fsync the folder, through the
  caller's :class:`~agent.fileio.Disk`, durable by default), and the caller's ``staged`` hook
  is called on the renamed file at once, nothing run in between.
- Bad data (:class:`~common.errors.VerificationError`) is never retried and deletes the ``.part``;
  transport trouble (an ``OSError`` from the source) is retried with jittered exponential backoff
  on the injected clock, resuming from the bytes already written. A cancel or a power cut keeps
  the ``.part`` so the next run resumes from it (its bytes are hashed again first).
- Memory stays flat: one scratch buffer of ``limits.chunk_size`` bytes per thread, shared by all
  of a thread's fetches (a fleet host runs thousands at once). Safe because a chunk is read,
  hashed and written with no ``await`` in between: nothing else runs in the thread meanwhile.
  An HTTP(S) download opens and reads in a worker thread (the event loop stays responsive to
  commands while a slow server keeps it waiting), into a buffer of its own.
- A slow source is given up: an attempt that, past ``limits.rate_grace`` seconds, has averaged
  less than ``limits.min_rate`` bytes per second fails (``IMAGE_TOO_SLOW``, retried, the
  ``.part`` kept for the next resume).

This is the one module that turns the source's ``OSError`` into ``TransportError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import http
import http.client
import io
import os
import random
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from agent.clock import Clock, exponential_backoff
from agent.crashpoints import hit
from agent.fileio import DURABLE, Disk
from agent.limits import DEFAULT_LIMITS, Limits
from common.errors import CancelledUpgrade, DigestError, StoreError, TransportError, VerificationError
from common.reasons import Reason

PART_SUFFIX = ".part"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_local = threading.local()
T = TypeVar("T")


def _scratch(size: int) -> memoryview:
    """This thread's reusable buffer, at least ``size`` bytes (see the module's memory invariant)."""
    buffer: bytearray | None = getattr(_local, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _local.buffer = bytearray(size)
    return memoryview(buffer)[:size]


class Source(Protocol):
    """What the fetcher needs of an opened image source (a binary file satisfies it)."""

    def readinto(self, buffer: memoryview, /) -> int | None:
        """Read into ``buffer``; return the count read, 0 at the end."""
        ...

    def close(self) -> None:
        """Release the source."""
        ...


Location = Path | str
"""Where an image is: a path in a local repository, or an ``http(s)://`` URL."""

Opener = Callable[[Location, int], Source]
"""Open the image at a location, positioned at a byte offset (a ranged request)."""

HTTP_TIMEOUT = 30.0  # seconds without a byte before an HTTP read fails (retried like any transport error)

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total)."""


def location_name(location: Location) -> str:
    """The last part of a path or URL (the image's file name), for messages."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


class _HttpSource:
    """An HTTP response body as a :class:`Source`; HTTP protocol errors are ``OSError`` s."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response

    def readinto(self, buffer: memoryview, /) -> int | None:
        try:  # read1: what has arrived (up to the buffer), not a wait for the whole buffer
            data = self.response.read1(len(buffer))
            count = len(data)
            buffer[:count] = data
        except http.client.HTTPException as exc:  # e.g. IncompleteRead: the server dropped the connection
            raise ConnectionError(f"the connection broke: {exc!r}") from exc
        if not count and buffer and self.response.length:  # the body ended before its Content-Length
            raise ConnectionError(f"the connection closed {self.response.length} bytes before the end")
        return count

    def close(self) -> None:
        self.response.close()


def open_http(url: str, offset: int) -> Source:
    """Request ``url`` from byte ``offset`` on (a ``Range`` request; a server that ignores it is
    read past the first ``offset`` bytes).

    Raises:
        OSError: the request failed (``urllib.error.URLError`` is one), or the server answered
            with an error status.
    """
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=HTTP_TIMEOUT)  # noqa: S310  # reason: the URL is the configured repository's, http(s) only
    source = _HttpSource(response)
    if offset and response.status != http.HTTPStatus.PARTIAL_CONTENT:
        skip = bytearray(min(offset, 1 << 16))
        left = offset
        while left > 0:
            count = source.readinto(memoryview(skip)[: min(left, len(skip))]) or 0
            if not count:
                source.close()
                raise ConnectionError(f"{url} ended before byte {offset}")
            left -= count
    return source


def open_source(location: Location, offset: int) -> Source:
    """Open ``location`` for reading at byte ``offset``: the default :data:`Opener` (a file, or
    an HTTP(S) URL through :func:`open_http`).

    Raises:
        OSError: the file cannot be opened or positioned, or the request failed.
    """
    if isinstance(location, str) and location.startswith(("http://", "https://")):
        return open_http(location, offset)
    path = Path(location)
    handle = path.open("rb")
    try:
        handle.seek(offset)
    except BaseException:
        handle.close()
        raise
    return handle


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What a verification found: whether it passed and, if not, why."""

    ok: bool
    reason: Reason | None  # None when ok
    message: str  # one plain sentence, e.g. "size 1048577 exceeds signed size 1048576"
    size: int  # bytes found (the file's size; hashing stops at the signed size)
    sha256: str | None  # the digest computed, None when the size already failed

    @classmethod
    def matching(cls, size: int, sha256: str) -> VerifyResult:
        """The result for a file found to hold ``size`` bytes hashing to ``sha256``, as signed."""
        return cls(True, None, f"size {size} and sha256 {sha256} match", size, sha256)


def _check_args(part: Path, size: int, sha256: str, limits: Limits) -> None:
    if not part.name.endswith(PART_SUFFIX) or part.name == PART_SUFFIX:
        raise ValueError(f"{part} does not end with {PART_SUFFIX}")
    if size < 0:
        raise ValueError(f"negative signed size {size}")
    if not _SHA256_HEX.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a lowercase hex SHA-256 digest")
    if size > limits.max_image_size:
        raise VerificationError(
            f"signed size {size} exceeds the limit of {limits.max_image_size} bytes",
            reason=Reason.IMAGE_TOO_LARGE,
        )


def _raise_for(result: VerifyResult) -> None:
    if result.ok:
        return
    if result.reason is Reason.IMAGE_DIGEST_MISMATCH:
        raise DigestError(result.message)
    raise VerificationError(result.message, reason=result.reason)


def _digest_result(size: int, expected: str, actual: str) -> VerifyResult:
    if actual == expected:
        return VerifyResult.matching(size, actual)
    return VerifyResult(
        False,
        Reason.IMAGE_DIGEST_MISMATCH,
        f"sha256 {actual} does not match signed sha256 {expected}",
        size,
        actual,
    )


def _size_result(found: int, size: int) -> VerifyResult | None:
    if found > size:
        return VerifyResult(
            False, Reason.IMAGE_TOO_LARGE, f"size {found} exceeds signed size {size}", found, None
        )
    if found < size:
        return VerifyResult(
            False, Reason.IMAGE_TRUNCATED, f"size {found} is short of signed size {size}", found, None
        )
    return None


def verify_file(path: Path, size: int, sha256: str, chunk: int = DEFAULT_LIMITS.chunk_size) -> VerifyResult:
    """Check a file against its signed size and SHA-256, reading at most ``size`` bytes.

    Args:
        path: the file to check (a staged image in the Update Area).
        size: the signed size in bytes.
        sha256: the signed SHA-256, lowercase hex.
        chunk: bytes read per step (the memory used).

    Returns:
        A :class:`VerifyResult` saying what matched, or why not.

    Raises:
        OSError: the file cannot be opened or read.
    """
    hasher = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        failed = _size_result(os.fstat(handle.fileno()).st_size, size)
        if failed is not None:
            return failed
        chunk = max(1, min(chunk, size))
        buffer = _scratch(chunk)
        done = 0
        while done < size:
            count = handle.readinto(buffer[: min(chunk, size - done)])
            if not count:
                break
            hasher.update(buffer[:count])
            done += count
    failed = _size_result(done, size)  # the file shrank while being read
    return failed if failed is not None else _digest_result(size, sha256, hasher.hexdigest())


def require_verified(
    path: Path, size: int, sha256: str, chunk: int = DEFAULT_LIMITS.chunk_size
) -> VerifyResult:
    """Verify like :func:`verify_file`, raising when the file does not match.

    Returns:
        The passing :class:`VerifyResult`.

    Raises:
        DigestError: the digest differs (``IMAGE_DIGEST_MISMATCH``).
        VerificationError: the size differs (``IMAGE_TOO_LARGE`` or ``IMAGE_TRUNCATED``).
        OSError: the file cannot be opened or read.
    """
    result = verify_file(path, size, sha256, chunk)
    _raise_for(result)
    return result


async def _sleep_or_cancel(clock: Clock, seconds: float, cancel: asyncio.Event | None) -> None:
    """Sleep on ``clock``, waking early when ``cancel`` is set."""
    if cancel is None:
        await clock.sleep(seconds)
        return
    if cancel.is_set():
        return
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            task.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)


@dataclass(slots=True)
class _Download:
    """The mutable state of one fetch: bytes on disk in the ``.part`` and their running hash."""

    source: Location
    part: Path
    size: int
    clock: Clock
    limits: Limits
    opener: Opener
    progress: Progress | None
    cancel: asyncio.Event | None
    done: int = 0
    reported: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    buffer: memoryview = field(init=False)
    remote: bool = field(init=False)

    def __post_init__(self) -> None:
        size = min(self.limits.chunk_size, self.size + 1)
        self.remote = str(self.source).startswith(("http://", "https://"))
        self.buffer = memoryview(bytearray(size)) if self.remote else _scratch(size)

    async def _call(self, func: Callable[..., T], *args: object) -> T:
        """Run a blocking source call: in a worker thread for an HTTP(S) source, else here."""
        return await asyncio.to_thread(func, *args) if self.remote else func(*args)

    def _check_rate(self, started: float, first: int) -> None:
        elapsed = time.monotonic() - started
        if elapsed > self.limits.rate_grace and (self.done - first) / elapsed < self.limits.min_rate:
            raise TransportError(
                f"{location_name(self.source)} arrives at {(self.done - first) / elapsed:.0f} bytes/s, "
                f"below {self.limits.min_rate:.0f}",
                reason=Reason.IMAGE_TOO_SLOW,
            )

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledUpgrade(f"download of {location_name(self.source)} cancelled at byte {self.done}")

    async def resume(self) -> None:
        """Hash the bytes an interrupted run left in the ``.part``, or discard an oversized one."""
        try:
            found = self.part.stat().st_size
        except FileNotFoundError:
            return
        if found > self.size:
            self.part.unlink()
            return
        with self.part.open("rb", buffering=0) as handle:
            while self.done < found:
                self._check_cancel()
                count = handle.readinto(self.buffer[: min(self.limits.chunk_size, found - self.done)])
                if not count:
                    break
                self.hasher.update(self.buffer[:count])
                self.done += count
                await asyncio.sleep(0)
        self.reported = self.done

    async def attempt(self) -> None:
        """Stream the rest of the image into the ``.part`` once; return when all ``size`` bytes are in.

        Raises:
            TransportError: the source failed to open or read (retryable).
            VerificationError: the source holds more or fewer bytes than signed.
            CancelledUpgrade: ``cancel`` was set.
            StoreError: writing the ``.part`` failed.
        """
        self._check_cancel()
        started, first = time.monotonic(), self.done
        try:
            src = await self._call(self.opener, self.source, self.done)
        except OSError as exc:
            raise TransportError(f"cannot open {self.source}: {exc}") from exc
        with contextlib.closing(src), self._open_part() as out:
            while (count := await self._call(self._read, src)) > 0:
                if self.done + count > self.size:
                    raise VerificationError(
                        f"{location_name(self.source)} holds more than its signed size {self.size}",
                        reason=Reason.IMAGE_TOO_LARGE,
                    )
                self._write(out, count)
                self._check_rate(started, first)
                await self._pace(count)
        if self.done < self.size:
            raise VerificationError(
                f"{location_name(self.source)} ended at byte {self.done} of its signed size {self.size}",
                reason=Reason.IMAGE_TRUNCATED,
            )

    def _open_part(self) -> io.BufferedRandom:
        out = os.fdopen(os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666), "r+b")
        if os.fstat(out.fileno()).st_size != self.done:  # bytes a failed write left beyond what is hashed
            os.ftruncate(out.fileno(), self.done)  # only then: ext4 writes a file cut to nothing out at close
        out.seek(self.done)
        return out

    def _read(self, src: Source) -> int:
        self._check_cancel()
        want = min(self.limits.chunk_size, self.size - self.done + 1)  # one byte past size proves the end
        try:
            return src.readinto(self.buffer[:want]) or 0
        except OSError as exc:
            raise TransportError(f"reading {self.source} failed at byte {self.done}: {exc}") from exc

    def _write(self, out: io.BufferedRandom, count: int) -> None:
        data = self.buffer[:count]
        try:
            out.write(data)
            out.flush()
        except OSError as exc:
            reason = Reason.NO_SPACE if exc.errno == errno.ENOSPC else Reason.BAD_INPUT
            raise StoreError(f"writing {self.part} failed: {exc}", reason=reason) from exc
        self.hasher.update(data)
        self.done += count
        hit("stage.download")
        due = self.done - self.reported >= self.limits.progress_interval
        if self.progress is not None and due and self.done < self.size:
            self.reported = self.done
            self.progress(self.done, self.size)

    async def _pace(self, count: int) -> None:
        """Yield to the loop; on a throttled link, wait the chunk's nominal transfer time."""
        if self.limits.bandwidth is None:
            await asyncio.sleep(0)
        else:
            await _sleep_or_cancel(self.clock, count / self.limits.bandwidth, self.cancel)


async def _attempt_with_retries(download: _Download, rng: random.Random) -> None:
    """Run attempts until one completes, retrying transport failures with jittered backoff."""
    limits = download.limits
    delays = exponential_backoff(
        limits.backoff_base, limits.backoff_cap, jitter=limits.backoff_jitter, rng=rng
    )
    retries = 0
    while True:
        try:
            await download.attempt()
            return
        except TransportError as exc:
            if retries >= limits.max_retries:
                slow = exc.reason is Reason.IMAGE_TOO_SLOW
                raise TransportError(
                    f"{location_name(download.source)} unavailable after {retries} retries: {exc}",
                    reason=Reason.IMAGE_TOO_SLOW if slow else Reason.IMAGE_UNAVAILABLE,
                ) from exc
        retries += 1
        await _sleep_or_cancel(download.clock, next(delays), download.cancel)


def _discard(part: Path) -> None:
    """Delete a ``.part`` whose bytes are known bad (never resumed from)."""
    part.unlink(missing_ok=True)


def _promote(part: Path, final: Path, disk: Disk) -> None:
    """Make the verified ``.part`` durable, then atomically rename it to ``final``."""
    with part.open("rb") as handle:
        disk.fsync(handle.fileno())
    hit("stage.promote")
    disk.replace(part, final)
    disk.fsync_dir(final.parent)


async def fetch_image(
    source: Location,
    part: Path,
    *,
    size: int,
    sha256: str,
    clock: Clock,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    cancel: asyncio.Event | None = None,
    opener: Opener = open_source,
    rng: random.Random | None = None,
    disk: Disk = DURABLE,
    staged: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``source`` into ``part``, verify it against its signed size and digest, and stage it.

    Args:
        source: the image in the release repository: a local path or an http(s) URL.
        part: ``<name>.part`` in the Update Area; bytes already there are resumed from.
        size: the signed size in bytes (from the verified release target).
        sha256: the signed SHA-256, lowercase hex.
        clock: the injected clock; retry backoff and link throttling sleep on it.
        limits: chunk size, retries, backoff, bandwidth, size ceiling, progress interval.
        progress: called with (done, total) at most every ``limits.progress_interval`` bytes
            and once at the end.
        cancel: when set, the download stops at the next chunk and keeps the ``.part``.
        opener: opens the source at an offset (tests inject failing or counting sources).
        rng: the jitter source (seed it for reproducible runs).
        disk: flushes and renames the staged image (durable by default).
        staged: called with the staged image's path right after its rename: the file holds the
            bytes this download wrote and hashed (a verifier may remember them).

    Returns:
        The staged image's path: ``part`` without ``.part``.

    Raises:
        ValueError: ``part`` does not end with ``.part``, or ``size``/``sha256`` are malformed.
        VerificationError: ``IMAGE_TOO_LARGE`` or ``IMAGE_TRUNCATED``; the ``.part`` is deleted.
        DigestError: the digest differs (``IMAGE_DIGEST_MISMATCH``); the ``.part`` is deleted.
        TransportError: the source still failed after ``limits.max_retries`` retries
            (``IMAGE_UNAVAILABLE``); the ``.part`` is kept.
        CancelledUpgrade: ``cancel`` was set; the ``.part`` is kept.
        StoreError: the Update Area could not be written; the ``.part`` is kept.
    """
    _check_args(part, size, sha256, limits)
    final = part.with_name(part.name.removesuffix(PART_SUFFIX))
    download = _Download(source, part, size, clock, limits, opener, progress, cancel)
    try:
        await download.resume()
        await _attempt_with_retries(download, rng if rng is not None else random.Random())
        _raise_for(_digest_result(size, sha256, download.hasher.hexdigest()))
    except VerificationError:
        _discard(part)
        raise
    _promote(part, final, disk)
    if staged is not None:
        staged(final)
    hit("stage.verified")
    if progress is not None:
        progress(size, size)
    return final
