"""The server database's schemas: DDL per schema number, in-place steps, and low-level opening.

Two data models exist (docs/rules.md, "The 7.1 data model": the data model changed at 7.1):

- the *old model* (schemas 10, 11; releases before 7.1): one ``users`` table carrying the
  extension and the phone inline, a combined ``full_name`` ("Last, First"), MAC addresses as 12
  upper-case hex digits, dates as ``YYYY-MM-DD HH:MM:SS`` text (UTC);
- the *new model* (schemas 20 and later; 7.1 onwards): separate ``users`` / ``extensions`` /
  ``phones`` tables with foreign keys, ``auto_attendants``, ``voicemail_index``, ``call_log``;
  MAC addresses as ``aa:bb:cc:dd:ee:ff``, dates as integer Unix seconds.

Invariants: the schema number is stored twice, in ``meta('schema')`` and ``PRAGMA user_version``,
and the two always agree; each later schema number is reached from the previous one by one small
DDL step (a column with a default, a new table, an index); no step ever crosses from the old
model to the new one (that is the 7.1 rebuild, rule DB-1).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from common.errors import DatabaseError
from common.reasons import Reason

NEW_MODEL = 20  # rule DB-1: the first schema of the data model introduced by 7.1
KNOWN_SCHEMAS = (10, 11, 20, 21, 22, 23, 30, 31, 32, 40)

_OLD_BASE = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT NOT NULL UNIQUE,"
    " full_name TEXT NOT NULL, extension TEXT UNIQUE, phone_mac TEXT UNIQUE, phone_model TEXT,"
    " enabled INTEGER NOT NULL DEFAULT 1, created TEXT NOT NULL)",
    "CREATE TABLE attendants (id INTEGER PRIMARY KEY, name TEXT NOT NULL, extension TEXT UNIQUE,"
    " menu TEXT NOT NULL)",
    "CREATE TABLE voicemail (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
    " received TEXT NOT NULL, duration INTEGER NOT NULL, heard INTEGER NOT NULL,"
    " caller TEXT NOT NULL)",
    "CREATE TABLE calls (id INTEGER PRIMARY KEY, started TEXT NOT NULL, caller TEXT NOT NULL,"
    " callee TEXT NOT NULL, duration INTEGER NOT NULL, disposition TEXT NOT NULL)",
)

_NEW_BASE = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT NOT NULL UNIQUE,"
    " first_name TEXT NOT NULL, last_name TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,"
    " created INTEGER NOT NULL)",
    "CREATE TABLE auto_attendants (id INTEGER PRIMARY KEY, name TEXT NOT NULL, menu TEXT NOT NULL)",
    "CREATE TABLE extensions (number INTEGER PRIMARY KEY,"
    " user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,"
    " aa_id INTEGER REFERENCES auto_attendants(id) ON DELETE CASCADE,"
    " CHECK ((user_id IS NULL) <> (aa_id IS NULL)))",
    "CREATE TABLE phones (id INTEGER PRIMARY KEY, mac TEXT NOT NULL UNIQUE, model TEXT,"
    " user_id INTEGER REFERENCES users(id) ON DELETE SET NULL)",
    "CREATE TABLE voicemail_index (id INTEGER PRIMARY KEY,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " received INTEGER NOT NULL, duration INTEGER NOT NULL, heard INTEGER NOT NULL,"
    " caller TEXT NOT NULL)",
    "CREATE TABLE call_log (id INTEGER PRIMARY KEY, started INTEGER NOT NULL, caller TEXT NOT NULL,"
    " callee TEXT NOT NULL, duration INTEGER NOT NULL, disposition TEXT NOT NULL)",
    "CREATE INDEX extensions_user ON extensions(user_id)",
    "CREATE INDEX phones_user ON phones(user_id)",
    "CREATE INDEX voicemail_index_user ON voicemail_index(user_id)",
    "CREATE INDEX call_log_started ON call_log(started)",
)

# One small DDL step per schema number (simulated history; rule DB-2 migrates through them).
STEPS: dict[int, tuple[str, ...]] = {
    11: (
        "CREATE INDEX calls_started ON calls(started)",
        "CREATE INDEX voicemail_user ON voicemail(user_id)",
    ),
    21: ("ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT ''",),  # Interact Professional
    22: (  # busy-lamp-field buttons on a phone: the reference an import drops with its phone
        "CREATE TABLE phone_buttons (id INTEGER PRIMARY KEY,"
        " phone_id INTEGER NOT NULL REFERENCES phones(id) ON DELETE CASCADE,"
        " position INTEGER NOT NULL, extension INTEGER NOT NULL, UNIQUE (phone_id, position))",
    ),
    23: ("ALTER TABLE users ADD COLUMN mobile TEXT NOT NULL DEFAULT ''",),  # Reach twinning
    30: (
        "ALTER TABLE phones ADD COLUMN firmware TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX call_log_caller ON call_log(caller)",
    ),
    31: ("ALTER TABLE voicemail_index ADD COLUMN transcript TEXT",),  # Interact Mobile
    32: ("CREATE INDEX voicemail_index_heard ON voicemail_index(user_id, heard)",),
    40: ("ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user'",),  # Allworx View
}


def is_new_model(schema: int) -> bool:
    """Return whether ``schema`` belongs to the data model introduced by 7.1 (rule DB-1)."""
    return schema >= NEW_MODEL


def check_known(schema: int) -> None:
    """Check that ``schema`` is one this engine can build.

    Raises:
        ValueError: ``schema`` is not in :data:`KNOWN_SCHEMAS`.
    """
    if schema not in KNOWN_SCHEMAS:
        raise ValueError(f"unknown database schema {schema}; known: {KNOWN_SCHEMAS}")


def steps_between(current: int, target: int) -> list[tuple[int, tuple[str, ...]]]:
    """Return the DDL steps that take schema ``current`` to ``target``, in order."""
    return [(n, STEPS[n]) for n in sorted(STEPS) if current < n <= target]


def ddl_for(schema: int) -> tuple[list[str], list[str]]:
    """Return ``(tables, indexes)``: the DDL that creates ``schema`` from nothing.

    Indexes are returned apart so a bulk load can create them after the rows are in.

    Raises:
        ValueError: unknown schema.
    """
    check_known(schema)
    base = _NEW_BASE if is_new_model(schema) else _OLD_BASE
    floor = NEW_MODEL if is_new_model(schema) else 10
    statements = list(base)
    for _, step in steps_between(floor, schema):
        statements.extend(step)
    tables = [s for s in statements if not s.startswith("CREATE INDEX")]
    indexes = [s for s in statements if s.startswith("CREATE INDEX")]
    return tables, indexes


def stamp(conn: sqlite3.Connection, schema: int) -> None:
    """Record ``schema`` in ``meta`` and ``PRAGMA user_version`` (inside the caller's transaction)."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(schema),))
    conn.execute(f"PRAGMA user_version = {int(schema)}")


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (explicit BEGIN/COMMIT); read-only via a ``mode=ro`` URI.

    Raises:
        sqlite3.Error: the file cannot be opened.
    """
    uri = Path(os.path.abspath(path)).as_uri() + ("?mode=ro" if readonly else "")  # links: SQLite follows
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def read_schema(conn: sqlite3.Connection, db: str = "main") -> int:
    """Return the schema number of the attached database ``db``.

    Raises:
        DatabaseError: the two records of the schema number disagree or are missing.
        sqlite3.Error: the file is not a database.
    """
    version = int(conn.execute(f"PRAGMA {db}.user_version").fetchone()[0])
    try:
        sql = f"SELECT value FROM {db}.meta WHERE key = 'schema'"  # noqa: S608 # reason: db is a schema name
        row = conn.execute(sql).fetchone()
    except sqlite3.OperationalError as exc:
        raise DatabaseError(f"no meta table: {exc}") from exc
    if row is None or int(row[0]) != version:
        raise DatabaseError(f"schema number disagrees: meta {row!r}, user_version {version}")
    return version


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate ``sqlite3`` and OS errors into :class:`DatabaseError` (the one boundary).

    Raises:
        DatabaseError: on any ``sqlite3.Error`` or ``OSError`` raised in the block.
    """
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        code = getattr(exc, "sqlite_errorcode", None)  # a full disk is not bad data
        full = getattr(exc, "errno", None) == errno.ENOSPC or code == sqlite3.SQLITE_FULL
        raise DatabaseError(f"{what}: {exc}", reason=Reason.NO_SPACE if full else None) from exc


def schema_of(path: Path | str) -> int:
    """Return the schema number of the database at ``path`` (opened read-only).

    Raises:
        DatabaseError: missing file, not a database, or inconsistent schema records.
    """
    if not Path(path).is_file():
        raise DatabaseError(f"no database at {path}")
    with translated(f"reading schema of {path}"), closing(connect(path, readonly=True)) as conn:
        return read_schema(conn)


def create_empty(path: Path | str, schema: int) -> None:
    """Create an empty database in ``schema`` at ``path`` (which must not exist).

    Raises:
        ValueError: unknown schema.
        FileExistsError: ``path`` already exists.
        DatabaseError: SQLite failed.
    """
    tables, indexes = ddl_for(schema)
    if Path(path).exists():
        raise FileExistsError(path)
    with translated(f"creating {path}"), closing(connect(path)) as conn:
        conn.execute("BEGIN")
        for statement in tables + indexes:
            conn.execute(statement)
        stamp(conn, schema)
        conn.execute("COMMIT")
