"""The logical, schema-independent digest of a server database (rules DB-1, DB-2).

Every record is reduced to a canonical row of the fields every schema has, whatever its physical
layout: users ``(id, login, first_name, last_name, enabled, created)``, extensions ``(number,
kind, owner)``, phones ``(mac, model, user_id)``, phone buttons ``(mac, position, extension)``,
auto-attendants ``(id, name, menu)``, voicemail ``(id, user_id, received, duration, heard,
caller)`` and the call log ``(id, started, caller, callee, duration, disposition)``. MAC addresses
are 12 lower-case hex digits, dates integer Unix seconds. An entity a schema lacks is empty.

Invariants: a database before and after the 7.1 rebuild or any migration digests equal exactly
when every record is present and unchanged; rows are hashed in a stable key order; the hashing
streams (SQLite renders each row as one line, a JSON array of its fields, and concatenates a page
of rows; Python only hashes the page).

A row's line is SQLite's ``json_array`` of its fields: text quoted and escaped, integers and reals
bare and told apart (``5`` and ``5.0``), NULL as ``null``: unambiguous, and cheaper than
concatenating ``quote()`` literals.
JSON cannot hold a BLOB, which no field of these schemas should be; an entity whose rows hold one
is hashed again with each field guarded, a blob as ``{"blob": "<hex>"}``. The guarded line of a
row without blobs is the plain line, so both sides of a comparison agree whichever they took.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from agent.database.schema import connect, is_new_model, read_schema, translated

PAGE_ROWS = 50_000
_KEY_FLOOR = -(2**63)

FIELDS: dict[str, tuple[str, ...]] = {
    "users": ("id", "login", "first_name", "last_name", "enabled", "created"),
    "extensions": ("number", "kind", "owner"),
    "phones": ("mac", "model", "user_id"),
    "phone_buttons": ("mac", "position", "extension"),
    "auto_attendants": ("id", "name", "menu"),
    "voicemail": ("id", "user_id", "received", "duration", "heard", "caller"),
    "call_log": ("id", "started", "caller", "callee", "duration", "disposition"),
}
ENTITIES = tuple(FIELDS)
_TEXT = frozenset({"login", "first_name", "last_name", "kind", "mac", "model", "name", "menu"}) | frozenset(
    {"caller", "callee", "disposition"}
)  # every other field is an integer
_PAGED = frozenset({"voicemail", "call_log"})  # integer keys: keyset pagination

# Canonical SELECTs: each yields ``k`` (the stable sort key) and the entity's FIELDS.
OLD_CANON: dict[str, str] = {
    "users": "SELECT id AS k, id, login,"
    " substr(full_name, instr(full_name, ', ') + 2) AS first_name,"
    " substr(full_name, 1, instr(full_name, ', ') - 1) AS last_name, enabled,"
    " CAST(strftime('%s', created) AS INTEGER) AS created FROM {db}.users",
    "extensions": "SELECT * FROM (SELECT CAST(extension AS INTEGER) AS k,"
    " CAST(extension AS INTEGER) AS number, 'user' AS kind, id AS owner FROM {db}.users"
    " WHERE extension IS NOT NULL UNION ALL SELECT CAST(extension AS INTEGER),"
    " CAST(extension AS INTEGER), 'aa', id FROM {db}.attendants WHERE extension IS NOT NULL)",
    "phones": "SELECT lower(phone_mac) AS k, lower(phone_mac) AS mac, phone_model AS model,"
    " id AS user_id FROM {db}.users WHERE phone_mac IS NOT NULL",
    "auto_attendants": "SELECT id AS k, id, name, menu FROM {db}.attendants",
    "voicemail": "SELECT id AS k, id, user_id, CAST(strftime('%s', received) AS INTEGER) AS received,"
    " duration, heard, caller FROM {db}.voicemail",
    "call_log": "SELECT id AS k, id, CAST(strftime('%s', started) AS INTEGER) AS started, caller,"
    " callee, duration, disposition FROM {db}.calls",
}

NEW_CANON: dict[str, str] = {
    "users": "SELECT id AS k, id, login, first_name, last_name, enabled, created FROM {db}.users",
    "extensions": "SELECT number AS k, number,"
    " CASE WHEN user_id IS NOT NULL THEN 'user' ELSE 'aa' END AS kind,"
    " coalesce(user_id, aa_id) AS owner FROM {db}.extensions",
    "phones": "SELECT lower(replace(mac, ':', '')) AS k, lower(replace(mac, ':', '')) AS mac, model,"
    " user_id FROM {db}.phones",
    "phone_buttons": "SELECT lower(replace(p.mac, ':', '')) || printf('/%09d', b.position) AS k,"
    " lower(replace(p.mac, ':', '')) AS mac, b.position AS position, b.extension AS extension"
    " FROM {db}.phone_buttons AS b JOIN {db}.phones AS p ON p.id = b.phone_id",
    "auto_attendants": "SELECT id AS k, id, name, menu FROM {db}.auto_attendants",
    "voicemail": "SELECT id AS k, id, user_id, received, duration, heard, caller FROM {db}.voicemail_index",
    "call_log": "SELECT id AS k, id, started, caller, callee, duration, disposition FROM {db}.call_log",
}


@dataclass(frozen=True)
class RecordDigest:
    """Counts and content checksums of every logical record of a database."""

    counts: dict[str, int]  # rows per logical entity
    checksum: str  # SHA-256 over every entity's count and checksum
    per_entity: dict[str, str]  # SHA-256 of each entity's canonical rows

    @property
    def rows(self) -> int:
        """Return the total number of records."""
        return sum(self.counts.values())

    def differences(self, other: RecordDigest) -> list[str]:
        """Return the names of the entities whose count or content differ from ``other``."""
        return [
            name
            for name in ENTITIES
            if self.counts.get(name) != other.counts.get(name)
            or self.per_entity.get(name) != other.per_entity.get(name)
        ]


def canonical_select(schema: int, entity: str, db: str = "main") -> str | None:
    """Return the canonical SELECT of ``entity`` in a ``schema`` database, or None if it lacks it."""
    table = (NEW_CANON if is_new_model(schema) else OLD_CANON).get(entity)
    if table is None or (entity == "phone_buttons" and schema < 22):
        return None
    return table.format(db=db)


def _line(entity: str, *, guarded: bool = False) -> str:
    if not guarded:
        return f"json_array({', '.join(FIELDS[entity])})"
    guard = "iif(typeof({0}) = 'blob', json_object('blob', hex({0})), {0})"
    return f"json_array({', '.join(guard.format(name) for name in FIELDS[entity])})"


def _hash_entity(conn: sqlite3.Connection, select: str, entity: str) -> tuple[int, str]:
    try:
        return _hash_lines(conn, select, entity, _line(entity))
    except sqlite3.OperationalError as exc:
        if "BLOB" not in str(exc):
            raise
        return _hash_lines(conn, select, entity, _line(entity, guarded=True))


def _hash_lines(conn: sqlite3.Connection, select: str, entity: str, line: str) -> tuple[int, str]:
    sha = hashlib.sha256()
    if entity not in _PAGED:
        sql = f"SELECT count(*), group_concat(line, char(10)) FROM (SELECT {line} AS line FROM ({select}) ORDER BY k)"  # noqa: E501, S608 # reason: fixed identifiers, no user data
        count, text = conn.execute(sql).fetchone()
        if text is not None:
            sha.update(text.encode() + b"\n")
        return int(count), sha.hexdigest()
    sql = (
        f"SELECT count(*), max(k), group_concat(line, char(10)) FROM (SELECT k, {line} AS line"  # noqa: S608 # reason: fixed identifiers
        f" FROM ({select}) WHERE k > ? ORDER BY k LIMIT {PAGE_ROWS})"
    )
    total, last = 0, _KEY_FLOOR
    while True:
        count, last_key, text = conn.execute(sql, (last,)).fetchone()
        if not count:
            return total, sha.hexdigest()
        sha.update(text.encode() + b"\n")
        total, last = total + int(count), int(last_key)


def digest_connection(conn: sqlite3.Connection, db: str = "main") -> RecordDigest:
    """Return the digest of the database attached as ``db`` on ``conn``.

    Raises:
        DatabaseError: inconsistent schema records.
        sqlite3.Error: SQLite failed.
    """
    schema = read_schema(conn, db)
    counts: dict[str, int] = {}
    per_entity: dict[str, str] = {}
    overall = hashlib.sha256()
    for entity in ENTITIES:
        select = canonical_select(schema, entity, db)
        if select is None:
            counts[entity], per_entity[entity] = 0, hashlib.sha256().hexdigest()
        else:
            counts[entity], per_entity[entity] = _hash_entity(conn, select, entity)
        overall.update(f"{entity}\t{counts[entity]}\t{per_entity[entity]}\n".encode())
    return RecordDigest(counts=counts, checksum=overall.hexdigest(), per_entity=per_entity)


def count_rows(conn: sqlite3.Connection, db: str = "main") -> int:
    """Return the number of logical records in the database attached as ``db`` (cheap: no hashing).

    Raises:
        DatabaseError: inconsistent schema records.
        sqlite3.Error: SQLite failed.
    """
    schema = read_schema(conn, db)
    total = 0
    for entity in ENTITIES:
        select = canonical_select(schema, entity, db)
        if select is not None:
            total += int(conn.execute(f"SELECT count(*) FROM ({select})").fetchone()[0])  # noqa: S608 # reason: fixed identifiers
    return total


def digest(path: Path | str) -> RecordDigest:
    """Return the logical digest of the database at ``path`` (opened read-only).

    Raises:
        DatabaseError: missing file, not a database, or SQLite failed.
    """
    with translated(f"digesting {path}"), closing(connect(path, readonly=True)) as conn:
        return digest_connection(conn)
