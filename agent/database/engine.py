"""Building a server's new database from its old one: the 7.1 rebuild and the migrated copy.

Invariants (rules DB-1 and DB-2):

- the source is opened read-only (a ``mode=ro`` URI) and is never modified;
- the new database is built at ``<dst>.tmp`` and becomes ``dst`` only after its logical digest
  (counts and checksums of every record) equals the source's, or, for a copy whose schema stays,
  its bytes read back hash (SHA-256) as the source's did, the file is fsynced, and the atomic
  rename has renamed it, with the directory fsynced after (through the caller's
  :class:`~agent.fileio.Disk`, durable by default);
- on any failure no ``dst`` is produced by the call and the ``.tmp`` file is removed; a power cut
  (a ``BaseException`` at a crash point) may leave only the ``.tmp`` file, which the next call
  discards before it starts;
- every digest is asked of the caller's :class:`DatabaseVerifier` with the means to compute it;
  the default, :data:`RECOMPUTE`, computes each one from the file as it is now, and keeps nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.crashpoints import hit
from agent.database.digest import OLD_CANON, PAGE_ROWS, RecordDigest, count_rows, digest, digest_connection
from agent.database.schema import (
    NEW_MODEL,
    check_known,
    connect,
    ddl_for,
    is_new_model,
    read_schema,
    stamp,
    steps_between,
    translated,
)
from agent.fileio import DURABLE, Disk, fsync_file
from common.errors import DatabaseError
from common.reasons import Reason

Progress = Callable[[int, int], None]  # (done_rows, total_rows)

_COLON_MAC = "||':'||".join(f"substr(mac, {i}, 2)" for i in range(1, 12, 2))

# rule DB-1: how each table of the 7.1 model is filled from the canonical export of the old one.
_LOADS: tuple[tuple[str, str, str, str], ...] = (
    # (new table, its columns, canonical entity, the SELECT list over the canonical rows)
    ("users", "id, login, first_name, last_name, enabled, created", "users",
     "id, login, first_name, last_name, enabled, created"),
    ("auto_attendants", "id, name, menu", "auto_attendants", "id, name, menu"),
    ("extensions", "number, user_id, aa_id", "extensions",
     "number, CASE kind WHEN 'user' THEN owner END, CASE kind WHEN 'aa' THEN owner END"),
    ("phones", "mac, model, user_id", "phones", f"{_COLON_MAC}, model, user_id"),
    ("voicemail_index", "id, user_id, received, duration, heard, caller", "voicemail",
     "id, user_id, received, duration, heard, caller"),
    ("call_log", "id, started, caller, callee, duration, disposition", "call_log",
     "id, started, caller, callee, duration, disposition"),
)  # fmt: skip
_PAGED_TABLES = frozenset({"voicemail_index", "call_log"})


@dataclass(frozen=True)
class DbReport:
    """What a rebuild or a migrated copy produced, as verified."""

    counts: dict[str, int]  # records per logical entity (equal in source and result)
    checksum: str  # the logical checksum (equal in source and result)
    seconds: float  # wall time of the whole operation, verification included
    rows: int  # total records


def tmp_path(dst: Path | str) -> Path:
    """Return the path where the new database is built before it replaces ``dst``."""
    return Path(f"{dst}.tmp")


def _discard(tmp: Path) -> None:
    for leftover in (tmp, Path(f"{tmp}-journal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _report(expected: RecordDigest, started: float) -> DbReport:
    return DbReport(
        counts=dict(expected.counts),
        checksum=expected.checksum,
        seconds=time.monotonic() - started,
        rows=expected.rows,
    )


def _verify(expected: RecordDigest, actual: RecordDigest) -> None:
    differing = expected.differences(actual)
    if differing or expected.checksum != actual.checksum:
        detail = ", ".join(
            f"{name} {expected.counts.get(name)}->{actual.counts.get(name)} rows" for name in differing
        )
        raise DatabaseError(
            f"verification failed: records differ after the build ({detail})",
            reason=Reason.DATABASE_VERIFY_FAILED,
        )


def _publish(tmp: Path, dst: Path, disk: Disk) -> None:
    """fsync the verified file, rename it over ``dst`` and fsync the directory (rules DB-1, DB-2)."""
    with translated(f"publishing {dst}"):
        fsync_file(tmp, disk)
        disk.replace(tmp, dst)
        disk.fsync_dir(dst.parent)  # the folder the rename wrote (a link's own, not its target's)


def _export_and_load(conn: sqlite3.Connection, total: int, progress: Progress | None) -> None:
    """Copy every record of ``src`` into the new tables, page by page (rule DB-1)."""
    done = 0
    for load in _LOADS:
        table, columns, entity, select_list = load
        canon = OLD_CANON[entity].format(db="src")
        if table not in _PAGED_TABLES:
            sql = f"INSERT INTO main.{table} ({columns}) SELECT {select_list} FROM ({canon}) ORDER BY k"  # noqa: S608 # reason: fixed identifiers
            done += conn.execute(sql).rowcount
            continue
        sql = (
            f"INSERT INTO main.{table} ({columns}) SELECT {select_list} FROM ({canon})"  # noqa: S608 # reason: fixed identifiers
            f" WHERE k > ? ORDER BY k LIMIT {PAGE_ROWS}"
        )
        last = -(2**63)
        while (copied := conn.execute(sql, (last,)).rowcount) > 0:
            done += copied
            last = conn.execute(f"SELECT max(id) FROM main.{table}").fetchone()[0]  # noqa: S608 # reason: fixed identifiers
            if progress is not None:
                progress(done, total)
    if progress is not None:
        progress(done, total)


FileKey = tuple[str, int, int, int, int]
Read = tuple[bytes, FileKey]  # the SHA-256 of a file's bytes and its :func:`file_key`, as they were read


class DatabaseVerifier(Protocol):
    """What the engine asks about database files: their digests, and whether one is ready."""

    def database_digest(
        self, path: Path, compute: Callable[[], RecordDigest], read: Read | None = None
    ) -> RecordDigest:
        """The digest of the database file at ``path`` as it is now; ``compute()`` computes it.

        ``read``: what :func:`read_stable` gave for the file when the caller just read it whole
        (None: not read, or not stable).
        """

    def database_verified(self, path: Path, verified: RecordDigest, schema: int) -> None:
        """Told that the database just published at ``path`` verified as ``verified`` in ``schema``."""

    def database_ready(self, path: Path, schema: int) -> bool:
        """Whether the database at ``path`` opens in ``schema`` (the check before activation)."""


class Recompute:
    """The durable :class:`DatabaseVerifier`: every digest and every check is done again."""

    def database_digest(
        self, path: Path, compute: Callable[[], RecordDigest], read: Read | None = None
    ) -> RecordDigest:
        """Compute the digest (``compute()``), every time."""
        return compute()

    def database_verified(self, path: Path, verified: RecordDigest, schema: int) -> None:
        """Keep nothing."""

    def database_ready(self, path: Path, schema: int) -> bool:
        """Run the boot check on the file as it is now (:func:`check_opens`)."""
        return check_opens(path, schema)


RECOMPUTE = Recompute()


def file_key(path: Path) -> FileKey | None:
    """Path, device, inode, size and modification time of a file (None when it is missing).

    The path is made absolute, not resolved: two names of one file differ, and a name moved to
    another file changes the device or inode.
    """
    try:
        st = path.stat()
    except OSError:
        return None
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_CHUNK = 1 << 20  # bytes read at a time: a large database is hashed and copied in pieces


def read_stable(path: Path, copy_to: Path | None = None) -> Read | None:
    """The SHA-256 of a database file's bytes and its :func:`file_key` as read, or None when they
    may not be its content; with ``copy_to``, the bytes are also written there as they are read.

    None (and no ``copy_to`` left) when a journal is beside the file (a write was under way:
    SQLite would roll it back on open, so the bytes are not what a connection reads) or the file
    changed while it was read.

    Raises:
        OSError: the file cannot be read, or ``copy_to`` written.
    """
    if any(Path(f"{path}{suffix}").exists() for suffix in ("-journal", "-wal")):
        return None
    before = file_key(path)
    if before is None:
        return None
    sha = hashlib.sha256()
    copy = copy_to.open("wb") if copy_to is not None else contextlib.nullcontext()
    with path.open("rb", buffering=0) as source, copy as out:  # raw reads: no second buffer
        while chunk := source.read(_CHUNK):
            sha.update(chunk)
            if out is not None:
                out.write(chunk)
    if file_key(path) != before:
        if copy_to is not None:
            copy_to.unlink(missing_ok=True)
        return None
    return sha.digest(), before


def _build(
    src: Path, tmp: Path, target_schema: int, progress: Progress | None, verifier: DatabaseVerifier
) -> RecordDigest:
    """Export ``src`` into a new ``target_schema`` database at ``tmp`` and verify it (rule DB-1).

    The source digest is taken on its own read-only connection in a worker thread while this
    thread loads the rows (SQLite releases the GIL while it steps).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-digest") as pool:
        source_digest = pool.submit(verifier.database_digest, src, lambda: digest(src))
        with closing(connect(tmp)) as conn:
            conn.execute("PRAGMA journal_mode = OFF")  # a scratch file: fsynced once, at the end
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("PRAGMA cache_size = -32768")  # 32 MiB
            conn.execute("ATTACH DATABASE ? AS src", (src.resolve().as_uri() + "?mode=ro",))
            hit("db.export")
            tables, indexes = ddl_for(target_schema)
            conn.execute("BEGIN")
            for statement in tables:
                conn.execute(statement)
            stamp(conn, target_schema)
            _export_and_load(conn, count_rows(conn, "src"), progress)
            for statement in indexes:  # after the rows: one sort per index, not a B-tree walk per row
                conn.execute(statement)
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE src")
            hit("db.rebuild")
            expected = source_digest.result()
            built = verifier.database_digest(tmp, lambda: digest_connection(conn))
            _verify(expected, built)  # rule DB-1: counts and checksums
    return expected


def _prepare(src: Path | str, dst: Path | str) -> tuple[Path, Path, Path]:
    source, target = Path(src), Path(dst)
    if not source.is_file():
        raise DatabaseError(f"no database at {source}")
    if source.resolve() == target.resolve():
        raise RuntimeError("the new database must not replace its own source (rules DB-1, DB-2)")
    tmp = tmp_path(target)
    _discard(tmp)
    return source, target, tmp


def rebuild(
    src: Path | str,
    dst: Path | str,
    target_schema: int,
    progress: Progress | None = None,
    *,
    disk: Disk = DURABLE,
    verifier: DatabaseVerifier = RECOMPUTE,
) -> DbReport:
    """Build a new database in ``target_schema`` from every record of ``src`` (the 7.1 rebuild).

    Rule DB-1: ``src`` is opened read-only and never modified; the new database is built at
    ``<dst>.tmp``, verified (counts and checksums of every record), fsynced and renamed to ``dst``.

    Args:
        src: the old database (schema < 20).
        dst: where the new database goes; replaced only once verified.
        target_schema: a schema of the new data model (>= 20).
        progress: optional ``callable(done_rows, total_rows)``, called every page of rows.
        disk: flushes and renames the new database (durable by default).
        verifier: gives the digests and is told of the published database (recomputes by default).

    Returns:
        The verified counts and checksum, the time taken and the number of records.

    Raises:
        ValueError: ``target_schema`` is unknown.
        RuntimeError: misuse: ``src`` is already in the new model, ``target_schema`` is in the old
            one, or ``dst`` is ``src``.
        DatabaseError: ``src`` is unreadable, SQLite failed, or verification did not match
            (reason ``DATABASE_VERIFY_FAILED``); no ``dst`` is left behind and ``src`` is untouched.
    """
    check_known(target_schema)
    if not is_new_model(target_schema):
        raise RuntimeError(f"a rebuild builds the 7.1 data model: target schema must be >= {NEW_MODEL}")
    started = time.monotonic()
    source, target, tmp = _prepare(src, dst)
    with translated(f"reading {source}"), closing(connect(source, readonly=True)) as probe:
        if is_new_model(read_schema(probe)):
            raise RuntimeError("source is already in the 7.1 data model: use migrate_copy (rule DB-2)")
    try:
        with translated(f"rebuilding {source}"):
            expected = _build(source, tmp, target_schema, progress, verifier)
        _publish(tmp, target, disk)
    except Exception:
        _discard(tmp)
        raise
    verifier.database_verified(target, expected, target_schema)
    hit("db.verified")
    return _report(expected, started)


def _check_step(current: int, target: int) -> None:
    """Refuse a migrated copy that is not an in-place step within one data model (rule DB-2).

    Raises:
        RuntimeError: ``target`` is older than ``current``, or the copy would cross the 7.1 model
            change (that is :func:`rebuild`'s job, rule DB-1).
    """
    if target < current:
        raise RuntimeError(f"cannot migrate schema {current} down to {target} (rule DOWN-1)")
    if is_new_model(target) != is_new_model(current):
        raise RuntimeError(
            f"schema {current} -> {target} crosses the 7.1 data model: use rebuild (rule DB-1)"
        )


def _backup(
    source: sqlite3.Connection, out: sqlite3.Connection, total: int, progress: Progress | None
) -> None:
    """Copy ``source`` into ``out`` with SQLite's backup API (consistent even while it is written)."""

    def pages_copied(_status: int, remaining: int, pages: int) -> None:
        if progress is not None and pages:
            progress(total * (pages - remaining) // pages, total)

    source.backup(out, pages=1024, progress=pages_copied)


def _copy_bytes(source: Path, tmp: Path) -> Read | None:
    """Copy the database file byte for byte; return the SHA-256 of the bytes and the source's key.

    Returns None, leaving no copy, when the file cannot be copied that way: a journal beside it (a
    write was under way) or the file changed while it was read; the caller then takes
    :func:`_backup`, which costs far more than a byte copy.
    """
    return read_stable(source, copy_to=tmp)


def _step(out: sqlite3.Connection, target_schema: int) -> None:
    """Apply each schema step to the copy open as ``out``, one transaction a step (rule DB-2)."""
    out.execute("PRAGMA synchronous = OFF")  # fsynced once, before the rename
    for number, statements in steps_between(read_schema(out), target_schema):
        out.execute("BEGIN")  # rule DB-2: one step, one transaction
        for statement in statements:
            out.execute(statement)
        stamp(out, number)
        out.execute("COMMIT")


def _copy_and_verify(
    source: sqlite3.Connection,
    tmp: Path,
    *,
    copied: bytes | None,
    steps: tuple[int, int],
    expected: RecordDigest,
    progress: Progress | None,
    verifier: DatabaseVerifier,
) -> None:
    """Step the schema of the copy at ``tmp`` (``copied``: the SHA-256 of the source bytes it holds;
    None: not copied yet), verify it.

    The verification is the logical digest against the source's whenever the schema changed or
    the copy was not byte for byte (then it is made with the backup API first); a byte copy that
    keeps its schema is read back and its SHA-256 compared with the source's instead (a stronger
    check than the digest, at a fraction of its cost). The copy is opened once for the backup, the
    steps and the digest.
    """
    current, target_schema = steps
    if copied is not None and current == target_schema:
        hit("db.rebuild")
        read_back = read_stable(tmp)
        if read_back is None or read_back[0] != copied:
            raise DatabaseError(
                "verification failed: the copy differs from its source", reason=Reason.DATABASE_VERIFY_FAILED
            )
    else:
        with closing(connect(tmp)) as out:
            if copied is None:
                _backup(source, out, expected.rows, progress)
            if current != target_schema:
                _step(out, target_schema)
            hit("db.rebuild")
            built = verifier.database_digest(tmp, lambda: digest_connection(out))
            _verify(expected, built)  # rule DB-2: same guarantee as DB-1
    if progress is not None:
        progress(expected.rows, expected.rows)


def migrate_copy(
    src: Path | str,
    dst: Path | str,
    target_schema: int,
    progress: Progress | None = None,
    *,
    disk: Disk = DURABLE,
    verifier: DatabaseVerifier = RECOMPUTE,
) -> DbReport:
    """Copy ``src`` to ``dst`` and migrate the copy in place to ``target_schema`` (rule DB-2).

    The copy is byte for byte (SQLite's backup API from a read-only connection when the file is
    mid-write); each schema step runs in one transaction; the result's digest must equal the
    source's. A byte copy whose schema stays is read back and its SHA-256 compared with the source's.

    Args:
        src: the current database (never modified).
        dst: where the migrated copy goes; replaced only once verified.
        target_schema: the schema to reach, in the same data model as ``src``'s.
        progress: optional ``callable(done_rows, total_rows)``, called as the copy advances.
        disk: flushes and renames the new database (durable by default).
        verifier: gives the digests and is told of the published database (recomputes by default).

    Returns:
        The verified counts and checksum, the time taken and the number of records.

    Raises:
        ValueError: ``target_schema`` is unknown.
        RuntimeError: misuse: the step crosses the 7.1 model change (use :func:`rebuild`), goes
            backwards, or ``dst`` is ``src``.
        DatabaseError: ``src`` is unreadable, SQLite failed, or verification did not match
            (reason ``DATABASE_VERIFY_FAILED``); no ``dst`` is left behind and ``src`` is untouched.
    """
    check_known(target_schema)
    started = time.monotonic()
    source_path, target, tmp = _prepare(src, dst)
    try:
        with translated(f"migrating {source_path}"), closing(connect(source_path, readonly=True)) as source:
            current = read_schema(source)
            _check_step(current, target_schema)
            copied = _copy_bytes(source_path, tmp)
            expected = verifier.database_digest(source_path, lambda: digest_connection(source), copied)
            hit("db.export")
            _copy_and_verify(
                source,
                tmp,
                copied=copied[0] if copied is not None else None,
                steps=(current, target_schema),
                expected=expected,
                progress=progress,
                verifier=verifier,
            )
        _publish(tmp, target, disk)
    except Exception:
        _discard(tmp)
        raise
    verifier.database_verified(target, expected, target_schema)
    hit("db.verified")
    return _report(expected, started)


def check_opens(path: Path | str, expected_schema: int) -> bool:
    """Return whether the database at ``path`` passes the boot check.

    The boot check: the file opens, ``PRAGMA quick_check`` reports ``ok`` and its schema number
    (both records of it) equals ``expected_schema``. Never raises for a bad file.
    """
    if not Path(path).is_file():
        return False
    try:
        with closing(connect(path, readonly=True)) as conn:
            healthy = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            return bool(healthy) and read_schema(conn) == expected_schema
    except (sqlite3.Error, DatabaseError, ValueError):
        return False
