"""Importing one server's records into another's database: the vendor's import rules.

Rules (docs/rules.md, "Import rules"; Migrate follows them, MIG-1):

- an import never exceeds the target's user limit: source users are taken in the order of the
  export (by user id) and, once the target holds ``max_users`` users (every user row counts,
  enabled or not), the rest are disabled and not imported, together with their extensions,
  phones and voicemail;
- a login name already present gets ``01``, ``02``... appended (the first free one);
- an extension already taken moves to the lowest free extension (from 100 up); extensions that do
  not conflict keep their number, and buttons that pointed at a moved extension follow it;
- a phone whose MAC address is already present is dropped with every reference to it (its
  busy-lamp-field buttons).

Invariants: the source is opened read-only; the whole import is one transaction on the target,
so it applies completely or not at all; columns are copied by name where both schemas have them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.database.schema import connect, read_schema, translated
from common.errors import DatabaseError

MIN_IMPORT_SCHEMA = 30  # both sides run 8.0 or newer (the caller checks MIG-1)
FIRST_EXTENSION = 100
LAST_EXTENSION = 9999

Row = Mapping[str, Any]  # one SQLite row by column name (the schema, not Python, types its values)


@dataclass(frozen=True)
class ImportReport:
    """What an import did, in export order."""

    imported: tuple[str, ...]  # logins as imported (after any renaming)
    disabled: tuple[str, ...]  # source logins beyond the user limit: disabled, not imported
    renamed: tuple[tuple[str, str], ...]  # (source login, imported login)
    moved_extensions: tuple[tuple[int, int], ...]  # (source number, new number)
    dropped_phones: tuple[str, ...]  # source MAC addresses already present in the target
    attendants: int = 0  # auto-attendants imported
    voicemail: int = 0  # voicemail index entries imported
    call_log: int = 0  # call-log rows imported


@dataclass
class _Target:
    """What the target already holds, updated as records are imported."""

    users: int
    logins: set[str]
    extensions: set[int]
    macs: set[str]
    user_map: dict[int, int] = field(default_factory=dict)  # source id -> target id
    aa_map: dict[int, int] = field(default_factory=dict)
    phone_map: dict[int, int] = field(default_factory=dict)
    moved: dict[int, int] = field(default_factory=dict)


def _norm_mac(mac: str) -> str:
    return mac.replace(":", "").replace("-", "").lower()


def _columns(conn: sqlite3.Connection, db: str, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA {db}.table_info({table})")]


def _rows(conn: sqlite3.Connection, sql: str) -> list[Row]:
    cursor = conn.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def _insert(conn: sqlite3.Connection, table: str, row: Row, columns: list[str]) -> int:
    names = [c for c in columns if c in row and c != "id"]
    sql = f"INSERT INTO main.{table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608 # reason: names come from table_info
    rowid = conn.execute(sql, [row[c] for c in names]).lastrowid
    if rowid is None:  # an INSERT always yields a rowid: None is a bug, not bad data
        raise RuntimeError(f"INSERT into {table} returned no rowid")
    return rowid


def _free_login(login: str, taken: set[str]) -> str:
    if login not in taken:
        return login
    n = 1
    while f"{login}{n:02d}" in taken:
        n += 1
    return f"{login}{n:02d}"


def _import_users(
    conn: sqlite3.Connection, target: _Target, max_users: int
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    imported: list[str] = []
    disabled: list[str] = []
    renamed: list[tuple[str, str]] = []
    columns = _columns(conn, "main", "users")
    for row in _rows(conn, "SELECT * FROM src.users ORDER BY id"):
        if target.users >= max_users:  # rule: never exceed the target's user limit
            disabled.append(row["login"])
            continue
        login = _free_login(row["login"], target.logins)  # rule: 01, 02... appended
        if login != row["login"]:
            renamed.append((row["login"], login))
        target.user_map[row["id"]] = _insert(conn, "users", {**row, "login": login}, columns)
        target.logins.add(login)
        target.users += 1
        imported.append(login)
    return imported, disabled, renamed


def _import_attendants(conn: sqlite3.Connection, target: _Target) -> None:
    columns = _columns(conn, "main", "auto_attendants")
    for row in _rows(conn, "SELECT * FROM src.auto_attendants ORDER BY id"):
        target.aa_map[row["id"]] = _insert(conn, "auto_attendants", row, columns)


def _lowest_free(taken: set[int]) -> int:
    for number in range(FIRST_EXTENSION, LAST_EXTENSION + 1):
        if number not in taken:
            return number
    raise DatabaseError(f"no free extension between {FIRST_EXTENSION} and {LAST_EXTENSION}")


def _import_extensions(conn: sqlite3.Connection, target: _Target) -> None:
    wanted: list[tuple[int, int | None, int | None]] = []
    for row in _rows(conn, "SELECT number, user_id, aa_id FROM src.extensions ORDER BY number"):
        user = target.user_map.get(row["user_id"]) if row["user_id"] is not None else None
        aa = target.aa_map.get(row["aa_id"]) if row["aa_id"] is not None else None
        if user is not None or aa is not None:  # extensions of users not imported stay behind
            wanted.append((row["number"], user, aa))
    conflicting = [w for w in wanted if w[0] in target.extensions]
    kept = [w for w in wanted if w[0] not in target.extensions]
    target.extensions.update(number for number, _, _ in kept)
    placed = list(kept)
    for number, user, aa in conflicting:  # rule: a conflicting extension moves to the lowest free one
        new = _lowest_free(target.extensions)
        target.extensions.add(new)
        target.moved[number] = new
        placed.append((new, user, aa))
    conn.executemany("INSERT INTO main.extensions (number, user_id, aa_id) VALUES (?, ?, ?)", placed)


def _import_phones(conn: sqlite3.Connection, target: _Target) -> list[str]:
    dropped: list[str] = []
    columns = _columns(conn, "main", "phones")
    for row in _rows(conn, "SELECT * FROM src.phones ORDER BY id"):
        owner = row["user_id"]
        if owner is not None and owner not in target.user_map:
            continue  # its user was not imported
        if _norm_mac(row["mac"]) in target.macs:  # rule: dropped with every reference to it
            dropped.append(row["mac"])
            continue
        user = target.user_map.get(owner) if owner is not None else None
        target.phone_map[row["id"]] = _insert(conn, "phones", {**row, "user_id": user}, columns)
        target.macs.add(_norm_mac(row["mac"]))
    buttons = [
        (
            target.phone_map[row["phone_id"]],
            row["position"],
            target.moved.get(row["extension"], row["extension"]),
        )
        for row in _rows(conn, "SELECT phone_id, position, extension FROM src.phone_buttons ORDER BY id")
        if row["phone_id"] in target.phone_map  # a dropped phone's buttons go with it
    ]
    conn.executemany(
        "INSERT INTO main.phone_buttons (phone_id, position, extension) VALUES (?, ?, ?)", buttons
    )
    return dropped


def _import_history(conn: sqlite3.Connection, target: _Target) -> tuple[int, int]:
    columns = _columns(conn, "main", "voicemail_index")
    voicemail = 0
    for row in _rows(conn, "SELECT * FROM src.voicemail_index ORDER BY id"):
        if row["user_id"] in target.user_map:
            _insert(conn, "voicemail_index", {**row, "user_id": target.user_map[row["user_id"]]}, columns)
            voicemail += 1
    shared = [
        c for c in _columns(conn, "src", "call_log") if c != "id" and c in _columns(conn, "main", "call_log")
    ]
    names = ", ".join(shared)
    sql = f"INSERT INTO main.call_log ({names}) SELECT {names} FROM src.call_log ORDER BY id"  # noqa: S608 # reason: names come from table_info
    calls = conn.execute(sql).rowcount
    return voicemail, calls


def _load_target(conn: sqlite3.Connection) -> _Target:
    return _Target(
        users=conn.execute("SELECT count(*) FROM main.users").fetchone()[0],
        logins={row[0] for row in conn.execute("SELECT login FROM main.users")},
        extensions={row[0] for row in conn.execute("SELECT number FROM main.extensions")},
        macs={_norm_mac(row[0]) for row in conn.execute("SELECT mac FROM main.phones")},
    )


def _run(conn: sqlite3.Connection, max_users: int) -> ImportReport:
    target = _load_target(conn)
    imported, disabled, renamed = _import_users(conn, target, max_users)
    _import_attendants(conn, target)
    _import_extensions(conn, target)
    dropped = _import_phones(conn, target)
    voicemail, calls = _import_history(conn, target)
    return ImportReport(
        imported=tuple(imported),
        disabled=tuple(disabled),
        renamed=tuple(renamed),
        moved_extensions=tuple(sorted(target.moved.items())),
        dropped_phones=tuple(dropped),
        attendants=len(target.aa_map),
        voicemail=voicemail,
        call_log=calls,
    )


def import_records(src: Path | str, dst: Path | str, *, max_users: int) -> ImportReport:
    """Import every record of ``src`` into ``dst`` under the vendor's import rules.

    Args:
        src: the exporting server's database (schema >= 30), opened read-only.
        dst: the importing server's database (schema >= 30), changed in one transaction.
        max_users: the importing server's user limit.

    Returns:
        What was imported, disabled, renamed, moved and dropped.

    Raises:
        RuntimeError: either database is older than schema 30 (the caller checks MIG-1 first).
        DatabaseError: a database is missing or unreadable, SQLite failed, or no extension is free;
            ``dst`` is then unchanged.
    """
    for path in (src, dst):
        if not Path(path).is_file():
            raise DatabaseError(f"no database at {path}")
    with translated(f"importing {src} into {dst}"), closing(connect(dst)) as conn:
        conn.execute("ATTACH DATABASE ? AS src", (Path(src).resolve().as_uri() + "?mode=ro",))
        for db in ("src", "main"):
            if read_schema(conn, db) < MIN_IMPORT_SCHEMA:
                raise RuntimeError(f"import needs schema >= {MIN_IMPORT_SCHEMA} on both sides (rule MIG-1)")
        conn.execute("BEGIN IMMEDIATE")
        try:
            report = _run(conn, max_users)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return report


def user_count(path: Path | str) -> int:
    """Return the number of active (enabled) users in the database at ``path``, either data model.

    Raises:
        DatabaseError: missing file, not a database, or SQLite failed.
    """
    if not Path(path).is_file():
        raise DatabaseError(f"no database at {path}")
    with translated(f"counting users in {path}"), closing(connect(path, readonly=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM users WHERE enabled").fetchone()[0])
