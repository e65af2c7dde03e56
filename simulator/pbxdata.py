"""Realistic data for a virtual server's database: users, extensions, phones, attendants, history.

SIMULATED data (not vendor facts): names, extension plan (users from 100 up, auto-attendants after
them), MAC addresses under Allworx's OUI ``00:0A:DD``, phone model names, voicemail and call-log
patterns. Everything is configurable through :func:`populate`'s arguments.

Invariants: the same arguments always produce byte-for-byte the same records (deterministic for a
seed); logins, extensions and MAC addresses are unique; the data fits both data models (at most
one extension and one phone per user, every phone owned by a user), so a pre-7.1 database can be
rebuilt (rule DB-1) without loss. The call log is generated inside SQLite, so a default virtual
server builds in a few milliseconds and a million-row call log in about a second.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from agent.database.importer import user_count
from agent.database.schema import connect, ddl_for, is_new_model, stamp, translated

__all__ = ["Records", "generate", "populate", "user_count", "write_records"]

ALLWORX_OUI = 0x000ADD  # the MAC prefix Allworx phones carry
CONNECT_MODELS = frozenset({"320", "324", "530", "536", "731"})
LEGACY_PHONES = ("9212L", "9224", "9112", "9102", "9204")
CONNECT_PHONES = ("9212L", "9224", "9312", "9304", "9308", "9318")
CALLS_PER_USER = 125  # default call-log rows per user (40 users -> 5,000 rows)
_CREATED_FROM = 1_104_537_600  # 2005-01-01T00:00:00Z
_HISTORY_FROM = 1_230_768_000  # 2009-01-01T00:00:00Z: the call log covers the year after
_YEAR = 31_536_000
_FIRST = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
          "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
          "Sarah", "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty",
          "Mark", "Sandra", "Steven", "Ashley", "Paul", "Emily", "Andrew", "Donna", "Kevin",
          "Michelle")  # fmt: skip
_LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
         "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
         "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson",
         "Walker", "Young", "Allen", "King", "Wright", "Scott", "Hill", "Green", "Adams",
         "Baker")  # fmt: skip
_ATTENDANTS = ("Main Menu", "After Hours", "Holiday", "Sales", "Support", "Billing", "Warehouse")


@dataclass
class Records:
    """Logical records, in the canonical shapes of :mod:`agent.database.digest`."""

    users: list[tuple[int, str, str, str, int, int]] = field(default_factory=list)
    # (id, login, first_name, last_name, enabled, created unix seconds)
    extensions: list[tuple[int, str, int]] = field(default_factory=list)  # (number, user|aa, owner)
    phones: list[tuple[str, str, int]] = field(default_factory=list)  # (mac 12 hex, model, user id)
    buttons: list[tuple[str, int, int]] = field(default_factory=list)  # (mac, position, extension)
    attendants: list[tuple[int, str, str]] = field(default_factory=list)  # (id, name, menu)
    voicemail: list[tuple[int, int, int, int, int, str]] = field(default_factory=list)
    # (id, user id, received, duration, heard, caller)
    calls: list[tuple[int, int, str, str, int, str]] = field(default_factory=list)
    # (id, started, caller, callee, duration, disposition)


def _logins(names: Sequence[tuple[str, str]]) -> list[str]:
    seen: dict[str, int] = {}
    logins = []
    for first, last in names:
        base = (first[0] + last).lower()
        seen[base] = seen.get(base, 0) + 1
        logins.append(base if seen[base] == 1 else f"{base}{seen[base]}")
    return logins


def _people(rng: random.Random, users: int, model: str | None) -> Records:
    names = [(rng.choice(_FIRST), rng.choice(_LAST)) for _ in range(users)]
    pool_end = max(400, 100 + users + users // 3)
    numbers = sorted(rng.sample(range(100, pool_end), users))
    phones = CONNECT_PHONES if model in CONNECT_MODELS else LEGACY_PHONES
    mac_base = rng.randrange(0x100000, 0xE00000)
    records = Records()
    for i, ((first, last), login) in enumerate(zip(names, _logins(names), strict=True), start=1):
        records.users.append((i, login, first, last, 1, _CREATED_FROM + rng.randrange(4 * _YEAR)))
        records.extensions.append((numbers[i - 1], "user", i))
        if rng.random() < 0.95:
            mac = ((ALLWORX_OUI << 24) | ((mac_base + 7 * i) % 0x1000000)).to_bytes(6, "big").hex()
            records.phones.append((mac, rng.choice(phones), i))
    aa_count = min(len(_ATTENDANTS), 2 + users // 60 + (2 if model == "731" else 0))
    for j in range(aa_count):
        menu = ";".join(f"{k}:{rng.choice(numbers) if numbers else 0}" for k in range(1, rng.randint(2, 5)))
        records.attendants.append((j + 1, _ATTENDANTS[j], f"{menu};0:operator"))
        records.extensions.append((pool_end + j, "aa", j + 1))
    return records


def _history(rng: random.Random, records: Records) -> None:
    numbers = [number for number, kind, _ in records.extensions if kind == "user"]
    for user_id, *_ in records.users:
        for _ in range(rng.randint(0, 6)):
            caller = str(rng.choice(numbers)) if rng.random() < 0.4 else f"1585{rng.randrange(10**7):07d}"
            received = _HISTORY_FROM + _YEAR - rng.randrange(60 * 86_400)
            records.voicemail.append(
                (
                    len(records.voicemail) + 1,
                    user_id,
                    received,
                    rng.randint(3, 180),
                    rng.randint(0, 1),
                    caller,
                )
            )
    by_user = {user: number for number, kind, user in records.extensions if kind == "user"}
    for mac, _, owner in records.phones:
        others = [n for n in numbers if n != by_user.get(owner)]
        for position in range(1, rng.randint(0, 3) + 1 if others else 1):
            records.buttons.append((mac, position, rng.choice(others)))


def generate(users: int, seed: int, model: str | None = None) -> Records:
    """Return realistic records for ``users`` users (no call log: :func:`populate` makes it in SQL)."""
    rng = random.Random(seed)
    records = _people(rng, users, model)
    _history(rng, records)
    return records


def _text_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _colon_mac(mac: str) -> str:
    return ":".join(mac[i : i + 2] for i in range(0, 12, 2))


def _write_old(conn: sqlite3.Connection, r: Records) -> None:
    """Write ``r`` in the pre-7.1 layout: extension and phone inline in ``users``."""
    ext = {owner: str(n) for n, kind, owner in r.extensions if kind == "user"}
    aa_ext = {owner: str(n) for n, kind, owner in r.extensions if kind == "aa"}
    phone = {owner: (mac.upper(), model) for mac, model, owner in r.phones}
    if r.buttons or len(phone) != len(r.phones) or len(ext) + len(aa_ext) != len(r.extensions):
        raise ValueError("records do not fit the pre-7.1 data model (one extension and phone per user)")
    conn.executemany(
        "INSERT INTO users (id, login, full_name, extension, phone_mac, phone_model, enabled, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (uid, login, f"{last}, {first}", ext.get(uid), *phone.get(uid, (None, None)), on, _text_time(t))
            for uid, login, first, last, on, t in r.users
        ],
    )
    conn.executemany(
        "INSERT INTO attendants (id, name, extension, menu) VALUES (?, ?, ?, ?)",
        [(aid, name, aa_ext.get(aid), menu) for aid, name, menu in r.attendants],
    )
    conn.executemany(
        "INSERT INTO voicemail (id, user_id, received, duration, heard, caller) VALUES (?, ?, ?, ?, ?, ?)",
        [(vid, uid, _text_time(t), d, h, c) for vid, uid, t, d, h, c in r.voicemail],
    )
    conn.executemany(
        "INSERT INTO calls (id, started, caller, callee, duration, disposition) VALUES (?, ?, ?, ?, ?, ?)",
        [(cid, _text_time(t), a, b, d, disp) for cid, t, a, b, d, disp in r.calls],
    )


def _write_new(conn: sqlite3.Connection, r: Records, schema: int) -> None:
    """Write ``r`` in the 7.1 layout: separate users, extensions and phones tables."""
    if r.buttons and schema < 22:
        raise ValueError(f"schema {schema} has no phone buttons (added in schema 22)")
    conn.executemany("INSERT INTO users (id, login, first_name, last_name, enabled, created) VALUES (?, ?, ?, ?, ?, ?)", r.users)  # fmt: skip # noqa: E501
    conn.executemany("INSERT INTO auto_attendants (id, name, menu) VALUES (?, ?, ?)", r.attendants)
    conn.executemany(
        "INSERT INTO extensions (number, user_id, aa_id) VALUES (?, ?, ?)",
        [(n, o if k == "user" else None, o if k == "aa" else None) for n, k, o in r.extensions],
    )
    phone_id = {mac: i for i, (mac, _, _) in enumerate(r.phones, start=1)}
    conn.executemany(
        "INSERT INTO phones (id, mac, model, user_id) VALUES (?, ?, ?, ?)",
        [(phone_id[mac], _colon_mac(mac), model, owner) for mac, model, owner in r.phones],
    )
    if schema >= 22:
        conn.executemany(
            "INSERT INTO phone_buttons (phone_id, position, extension) VALUES (?, ?, ?)",
            [(phone_id[mac], pos, ext) for mac, pos, ext in r.buttons],
        )
    conn.executemany("INSERT INTO voicemail_index (id, user_id, received, duration, heard, caller) VALUES (?, ?, ?, ?, ?, ?)", r.voicemail)  # fmt: skip # noqa: E501
    conn.executemany("INSERT INTO call_log (id, started, caller, callee, duration, disposition) VALUES (?, ?, ?, ?, ?, ?)", r.calls)  # fmt: skip # noqa: E501


def _fill_call_log(conn: sqlite3.Connection, schema: int, rows: int, seed: int, numbers: list[int]) -> None:
    """Generate ``rows`` call-log rows inside SQLite from an integer hash of (row, seed)."""
    conn.execute("CREATE TEMP TABLE _ext (rn INTEGER PRIMARY KEY, number TEXT NOT NULL)")
    conn.executemany("INSERT INTO temp._ext VALUES (?, ?)", enumerate(str(n) for n in numbers or [0]))
    step = max(1, _YEAR // max(rows, 1))
    t = f"({_HISTORY_FROM} + i * {step} + b % {step})"
    table, started = ("call_log", t)
    if not is_new_model(schema):
        table, started = "calls", f"strftime('%Y-%m-%d %H:%M:%S', {t}, 'unixepoch')"
    conn.execute(
        f"INSERT INTO {table} (id, started, caller, callee, duration, disposition)"  # noqa: S608 # reason: fixed identifiers
        " WITH RECURSIVE seq(i) AS"
        " (SELECT 1 WHERE :rows > 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :rows),"
        " mix(i, a) AS (SELECT i, (i * 2654435761 + :seed) % 4294967296 FROM seq),"
        " mix2(i, a, b) AS (SELECT i, a, (a * 1103515245 + 12345) % 2147483648 FROM mix)"
        f" SELECT i, {started},"
        " CASE a % 3 WHEN 0 THEN printf('1585%07d', b % 10000000)"
        "  ELSE (SELECT number FROM temp._ext WHERE rn = a % :n) END,"
        " CASE a % 3 WHEN 1 THEN printf('1585%07d', (b / 7) % 10000000)"
        "  ELSE (SELECT number FROM temp._ext WHERE rn = (b / 3) % :n) END,"
        " CASE WHEN b % 10 >= 8 THEN 0 ELSE 4 + (b / 11) % 900 END,"
        " CASE b % 10 WHEN 7 THEN 'voicemail' WHEN 8 THEN 'no-answer' WHEN 9 THEN 'busy' ELSE 'answered' END"
        " FROM mix2",
        {"rows": rows, "seed": (seed * 40503) % 4294967296, "n": max(len(numbers), 1)},
    )
    conn.execute("DROP TABLE temp._ext")


def _create(path: Path | str, schema: int, records: Records, call_rows: int = 0, seed: int = 0) -> None:
    tables, indexes = ddl_for(schema)
    if Path(path).exists():
        raise FileExistsError(path)
    with translated(f"populating {path}"), closing(connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")  # a fresh file: nothing to roll back to
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        for statement in tables:
            conn.execute(statement)
        stamp(conn, schema)
        (_write_new(conn, records, schema) if is_new_model(schema) else _write_old(conn, records))
        if call_rows:
            numbers = [n for n, kind, _ in records.extensions if kind == "user"]
            _fill_call_log(conn, schema, call_rows, seed, numbers)
        for statement in indexes:
            conn.execute(statement)
        conn.execute("COMMIT")


def write_records(path: Path | str, schema: int, records: Records) -> None:
    """Create a database in ``schema`` at ``path`` holding exactly ``records``.

    Raises:
        ValueError: unknown schema, or records that the schema's data model cannot hold.
        FileExistsError: ``path`` already exists.
        DatabaseError: SQLite failed (e.g. a duplicate login or MAC address).
    """
    _create(path, schema, records)


def populate(
    path: Path | str,
    schema: int,
    *,
    users: int,
    seed: int,
    call_log_rows: int | None = None,
    model: str | None = None,
) -> None:
    """Create the database of a virtual server at ``path`` in ``schema`` with realistic data.

    Args:
        path: the database file to create (must not exist).
        schema: its schema number (pre-7.1 below 20).
        users: how many users (all enabled), each with an extension, most with a phone.
        seed: the seed; the same arguments always give the same records.
        call_log_rows: call-log size; default :data:`CALLS_PER_USER` per user.
        model: the server model; Connect models get Connect phones, a 731 more auto-attendants.

    Raises:
        ValueError: unknown schema or a negative size.
        FileExistsError: ``path`` already exists.
        DatabaseError: SQLite failed.
    """
    if users < 0 or (call_log_rows is not None and call_log_rows < 0):
        raise ValueError("users and call_log_rows must not be negative")
    records = generate(users, seed, model)
    if schema < 22:
        records.buttons = []  # busy-lamp-field buttons arrived with schema 22
    rows = CALLS_PER_USER * users if call_log_rows is None else call_log_rows
    _create(path, schema, records, rows, seed)
