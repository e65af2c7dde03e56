"""The server database: 7.1 rebuild (DB-1), migrated copies (DB-2), boot check, import rules."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.crashpoints import injecting
from agent.database import (
    KNOWN_SCHEMAS,
    NEW_MODEL,
    check_opens,
    create_empty,
    digest,
    import_records,
    migrate_copy,
    rebuild,
    schema_of,
    user_count,
)
from agent.database import (
    tmp_path as build_path,
)
from common.errors import DatabaseError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.pbxdata import Records, populate, write_records

NEW_SCHEMAS = [s for s in KNOWN_SCHEMAS if s >= NEW_MODEL]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def old_db(folder: Path, schema: int = 11, users: int = 12, rows: int = 300) -> Path:
    path = folder / f"old{schema}.db"
    populate(path, schema, users=users, seed=7, call_log_rows=rows)
    return path


def corrupt_tmp_of(dst: Path) -> Callable[[str], None]:
    """Return an injector that deletes one call-log row from the build before it is verified."""

    def inject(point: str) -> None:
        if point == "db.rebuild":
            with closing(sqlite3.connect(build_path(dst))) as conn:
                conn.execute("DELETE FROM call_log WHERE id = (SELECT max(id) FROM call_log)")
                conn.commit()

    return inject


def test_db_1_rebuild_keeps_every_record(tmp_path: Path) -> None:
    """A 7.1 rebuild yields a schema-20 database whose counts and checksums equal the source's."""
    src = old_db(tmp_path)
    report = rebuild(src, tmp_path / "new.db", 20)
    before, after = digest(src), digest(tmp_path / "new.db")
    assert after == before
    assert report.counts == before.counts
    assert report.checksum == before.checksum
    assert report.rows == before.rows
    assert before.counts["call_log"] == 300
    assert schema_of(tmp_path / "new.db") == 20
    assert check_opens(tmp_path / "new.db", 20)


def test_db_1_rebuild_never_modifies_the_source(tmp_path: Path) -> None:
    """The old database's bytes are identical before and after a rebuild."""
    src = old_db(tmp_path)
    before = file_hash(src)
    rebuild(src, tmp_path / "new.db", 20)
    assert file_hash(src) == before


def test_db_1_verification_failure_leaves_source_and_no_dst(tmp_path: Path) -> None:
    """A record lost during the build fails verification, leaving the source intact and no dst."""
    src, dst = old_db(tmp_path), tmp_path / "new.db"
    before = file_hash(src)
    with injecting(corrupt_tmp_of(dst)), pytest.raises(DatabaseError) as caught:
        rebuild(src, dst, 20)
    assert caught.value.reason is Reason.DATABASE_VERIFY_FAILED
    assert "call_log" in caught.value.message
    assert not dst.exists()
    assert not build_path(dst).exists()
    assert file_hash(src) == before


def test_db_1_rebuild_discards_a_stale_tmp_file(tmp_path: Path) -> None:
    """A ``.tmp`` file left by a power cut is discarded, not trusted, by the next rebuild."""
    src, dst = old_db(tmp_path), tmp_path / "new.db"
    build_path(dst).write_bytes(b"half a database")
    rebuild(src, dst, 20)
    assert digest(dst) == digest(src)
    assert not build_path(dst).exists()


def test_db_1_rebuild_reports_progress(tmp_path: Path) -> None:
    """Progress is reported as non-decreasing (done, total) pairs ending at the total."""
    src = old_db(tmp_path)
    seen: list[tuple[int, int]] = []
    report = rebuild(src, tmp_path / "new.db", 20, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (report.rows, report.rows)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize(
    ("call", "source_schema", "target"),
    [
        pytest.param(migrate_copy, 11, 20, id="migrate_copy-across-7.1"),
        pytest.param(rebuild, 20, 21, id="rebuild-from-new-model"),
        pytest.param(rebuild, 10, 11, id="rebuild-into-old-model"),
        pytest.param(migrate_copy, 22, 21, id="migrate_copy-downgrade"),
    ],
)
def test_db_1_crossing_the_model_change_only_by_rebuild(
    tmp_path: Path, call: Callable[[Path, Path, int], object], source_schema: int, target: int
) -> None:
    """Only rebuild crosses from the old model to the 7.1 model, and nothing goes back (misuse)."""
    src = old_db(tmp_path, source_schema)
    with pytest.raises(RuntimeError):
        call(src, tmp_path / "new.db", target)
    assert not (tmp_path / "new.db").exists()


@pytest.mark.parametrize(
    ("start", "target"),
    [(10, 11), *itertools.pairwise(NEW_SCHEMAS), (20, 40)],
    ids=str,
)
def test_db_2_migrate_copy_steps_keep_every_record(tmp_path: Path, start: int, target: int) -> None:
    """Each schema step of the chain migrates a copy with every record unchanged."""
    src = old_db(tmp_path, start)
    report = migrate_copy(src, tmp_path / "new.db", target)
    assert digest(tmp_path / "new.db") == digest(src)
    assert report.checksum == digest(src).checksum
    assert check_opens(tmp_path / "new.db", target)


def test_db_2_whole_chain_from_7_0_keeps_every_record(tmp_path: Path) -> None:
    """Rebuild at 7.1 then every later step keeps the digest of the original 7.0 database."""
    current = old_db(tmp_path, 11)
    original = digest(current)
    rebuild(current, tmp_path / "s20.db", 20)
    current = tmp_path / "s20.db"
    for schema in NEW_SCHEMAS[1:]:
        migrate_copy(current, tmp_path / f"s{schema}.db", schema)
        current = tmp_path / f"s{schema}.db"
        assert schema_of(current) == schema
    assert digest(current) == original


def test_db_2_same_schema_is_a_verified_copy(tmp_path: Path) -> None:
    """migrate_copy with an unchanged schema produces an equal, verified copy."""
    src = old_db(tmp_path, 30)
    migrate_copy(src, tmp_path / "copy.db", 30)
    assert digest(tmp_path / "copy.db") == digest(src)
    assert schema_of(tmp_path / "copy.db") == 30


def test_db_2_same_schema_copy_is_byte_for_byte_and_compared_by_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that keeps the schema copies the bytes and compares the copy's SHA-256 with the
    source's: only the source is digested (for the report), the copy is not."""
    from agent.database import engine

    rebuild(old_db(tmp_path, 11), tmp_path / "s20.db", 20)
    calls: list[int] = []
    real = engine.digest_connection
    monkeypatch.setattr(engine, "digest_connection", lambda conn: calls.append(1) or real(conn))
    report = migrate_copy(tmp_path / "s20.db", tmp_path / "copy.db", 20)
    assert calls == [1]
    assert file_hash(tmp_path / "copy.db") == file_hash(tmp_path / "s20.db")
    assert report.checksum == digest(tmp_path / "s20.db").checksum


def test_db_2_same_schema_copy_damaged_before_its_check_fails_and_leaves_no_dst(tmp_path: Path) -> None:
    """A byte of the copy changed before it is verified: the copy fails, the source is untouched."""
    src, dst = old_db(tmp_path, 22), tmp_path / "copy.db"
    before = file_hash(src)

    def flip_a_byte(point: str) -> None:
        if point == "db.rebuild":
            data = bytearray(build_path(dst).read_bytes())
            data[len(data) // 2] ^= 0x01
            build_path(dst).write_bytes(bytes(data))

    with injecting(flip_a_byte), pytest.raises(DatabaseError) as caught:
        migrate_copy(src, dst, 22)
    assert caught.value.reason is Reason.DATABASE_VERIFY_FAILED
    assert not dst.exists() and not build_path(dst).exists()
    assert file_hash(src) == before


def test_db_2_same_schema_copy_of_a_file_mid_write_takes_the_backup_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal beside the source (a write under way): the copy goes through SQLite and is digested."""
    from agent.database import engine

    src = old_db(tmp_path, 22)
    Path(f"{src}-journal").write_bytes(b"")  # an empty journal: nothing to roll back, but a writer was there
    calls: list[int] = []
    real = engine.digest_connection
    monkeypatch.setattr(engine, "digest_connection", lambda conn: calls.append(1) or real(conn))
    migrate_copy(src, tmp_path / "copy.db", 22)
    assert len(calls) == 2, "the source and the copy are digested"
    assert digest(tmp_path / "copy.db") == digest(src)


@pytest.mark.parametrize("mid_write", [False, True])
def test_db_2_a_schema_step_starts_from_a_byte_copy_unless_the_file_is_mid_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mid_write: bool
) -> None:
    """The copy a schema step migrates is the source's bytes; SQLite's backup only when a journal
    says a write is under way. Either way the migrated copy is digested against the source."""
    from agent.database import engine

    src = old_db(tmp_path, 22)
    if mid_write:
        Path(f"{src}-journal").write_bytes(b"")
    backups: list[int] = []
    real = engine._backup
    monkeypatch.setattr(engine, "_backup", lambda *a, **k: backups.append(1) or real(*a, **k))
    report = migrate_copy(src, tmp_path / "new.db", 23)
    assert backups == ([1] if mid_write else [])
    assert schema_of(tmp_path / "new.db") == 23
    assert report.checksum == digest(tmp_path / "new.db").checksum == digest(src).checksum


def test_db_2_verification_failure_leaves_source_and_no_dst(tmp_path: Path) -> None:
    """A record lost while migrating fails verification; the source is unchanged and no dst exists."""
    src, dst = old_db(tmp_path, 22), tmp_path / "new.db"
    before = file_hash(src)
    with injecting(corrupt_tmp_of(dst)), pytest.raises(DatabaseError) as caught:
        migrate_copy(src, dst, 23)
    assert caught.value.reason is Reason.DATABASE_VERIFY_FAILED
    assert not dst.exists()
    assert not build_path(dst).exists()
    assert file_hash(src) == before


def test_digest_sees_a_changed_field(tmp_path: Path) -> None:
    """Changing one field of one record changes that entity's checksum and the overall one."""
    src = old_db(tmp_path, 20)
    before = digest(src)
    with closing(sqlite3.connect(src)) as conn:
        conn.execute("UPDATE call_log SET duration = duration + 1 WHERE id = 5")
        conn.commit()
    after = digest(src)
    assert after.counts == before.counts
    assert after.checksum != before.checksum
    assert before.differences(after) == ["call_log"]


def test_digest_survives_a_blob(tmp_path: Path) -> None:
    """A blob (which JSON cannot hold) is hashed, not refused; a copy that keeps it digests equal,
    and the same bytes as text digest differently."""
    src = old_db(tmp_path, 20)
    before = digest(src)
    with closing(sqlite3.connect(src)) as conn:
        conn.execute("UPDATE call_log SET caller = x'00ff' WHERE id = 5")
        conn.commit()
    with_blob = digest(src)  # the plain JSON line cannot hold it: the guarded one is used
    assert with_blob.counts == before.counts
    assert with_blob.differences(before) == ["call_log"]
    report = migrate_copy(src, tmp_path / "copy.db", 23)
    assert report.checksum == with_blob.checksum
    with closing(sqlite3.connect(src)) as conn:
        conn.execute("UPDATE call_log SET caller = '00FF' WHERE id = 5")
        conn.commit()
    assert digest(src).checksum not in (with_blob.checksum, before.checksum)


def test_boot_check_fails_on_wrong_schema_corrupt_or_missing_file(tmp_path: Path) -> None:
    """check_opens is false for another schema, a corrupt file, a missing file; true otherwise."""
    good = old_db(tmp_path, 30)
    assert check_opens(good, 30)
    assert not check_opens(good, 31)
    corrupt = tmp_path / "corrupt.db"
    data = bytearray(good.read_bytes())
    data[4096 : 4096 * 3] = b"\xa5" * (4096 * 2)
    corrupt.write_bytes(bytes(data))
    assert not check_opens(corrupt, 30)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    assert not check_opens(tmp_path / "junk.db", 30)
    assert not check_opens(tmp_path / "missing.db", 30)


def test_schema_number_is_kept_in_meta_and_user_version(tmp_path: Path) -> None:
    """A database whose two schema records disagree is refused by schema_of and the boot check."""
    path = tmp_path / "empty.db"
    create_empty(path, 31)
    assert schema_of(path) == 31
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 32")
    with pytest.raises(DatabaseError):
        schema_of(path)
    assert not check_opens(path, 31)
    assert not check_opens(path, 32)


def test_every_catalog_schema_can_be_built() -> None:
    """Every schema number the release catalogue names is one the engine knows."""
    assert {r.db_schema for r in default_catalog().releases} <= set(KNOWN_SCHEMAS)


# --- import rules (docs/rules.md, "Import rules"; MIG-1) ---


def person(uid: int, login: str, ext: int | None = None, mac: str | None = None) -> Records:
    records = Records(users=[(uid, login, "Ann", f"Last{uid}", 1, 1_300_000_000 + uid)])
    if ext is not None:
        records.extensions.append((ext, "user", uid))
    if mac is not None:
        records.phones.append((mac, "9224", uid))
    return records


def merge(*parts: Records) -> Records:
    out = Records()
    for part in parts:
        for name in ("users", "extensions", "phones", "buttons", "attendants", "voicemail", "calls"):
            getattr(out, name).extend(getattr(part, name))
    return out


def test_import_never_exceeds_user_limit_in_export_order(tmp_path: Path) -> None:
    """Users beyond the target's limit are disabled and not imported, in export order."""
    write_records(tmp_path / "dst.db", 30, merge(person(1, "old1"), person(2, "old2")))
    src = merge(*(person(i, f"new{i}", 100 + i) for i in (4, 1, 3, 2)))
    src.voicemail = [(1, 4, 1_300_000_000, 30, 0, "101"), (2, 3, 1_300_000_100, 20, 1, "102")]
    write_records(tmp_path / "src.db", 30, src)
    report = import_records(tmp_path / "src.db", tmp_path / "dst.db", max_users=4)
    assert report.imported == ("new1", "new2")
    assert report.disabled == ("new3", "new4")
    assert user_count(tmp_path / "dst.db") == 4
    assert report.voicemail == 0


def test_import_conflicting_logins_get_01_02_appended(tmp_path: Path) -> None:
    """A login already present gets the first free 01, 02... suffix."""
    write_records(
        tmp_path / "dst.db", 30, merge(person(1, "jsmith"), person(2, "jsmith01"), person(3, "adoe"))
    )
    write_records(tmp_path / "src.db", 30, merge(person(1, "jsmith"), person(2, "adoe"), person(3, "bkim")))
    report = import_records(tmp_path / "src.db", tmp_path / "dst.db", max_users=100)
    assert report.renamed == (("jsmith", "jsmith02"), ("adoe", "adoe01"))
    assert report.imported == ("jsmith02", "adoe01", "bkim")


def test_import_conflicting_extension_moves_to_lowest_free(tmp_path: Path) -> None:
    """A taken extension moves to the lowest free one; others keep their number."""
    write_records(
        tmp_path / "dst.db", 30, merge(person(1, "a", 100), person(2, "b", 101), person(3, "c", 103))
    )
    write_records(tmp_path / "src.db", 30, merge(person(1, "d", 101), person(2, "e", 105)))
    report = import_records(tmp_path / "src.db", tmp_path / "dst.db", max_users=100)
    assert report.moved_extensions == ((101, 102),)
    with closing(sqlite3.connect(tmp_path / "dst.db")) as conn:
        owners = dict(
            conn.execute("SELECT u.login, e.number FROM extensions e JOIN users u ON u.id = e.user_id")
        )
    assert owners == {"a": 100, "b": 101, "c": 103, "d": 102, "e": 105}


def test_import_conflicting_mac_drops_phone_and_every_reference(tmp_path: Path) -> None:
    """A phone whose MAC is already present is dropped with its buttons; its user is imported."""
    taken, fresh = "000add000001", "000add000002"
    write_records(tmp_path / "dst.db", 30, merge(person(1, "a", 100, taken)))
    src = merge(person(1, "b", 200, taken), person(2, "c", 201, fresh))
    src.buttons = [(taken, 1, 201), (taken, 2, 200), (fresh, 1, 200)]
    write_records(tmp_path / "src.db", 30, src)
    report = import_records(tmp_path / "src.db", tmp_path / "dst.db", max_users=100)
    assert report.dropped_phones == ("00:0a:dd:00:00:01",)
    assert report.imported == ("b", "c")
    with closing(sqlite3.connect(tmp_path / "dst.db")) as conn:
        phones = conn.execute(
            "SELECT p.mac, u.login FROM phones p JOIN users u ON u.id = p.user_id"
        ).fetchall()
        buttons = conn.execute(
            "SELECT p.mac, b.extension FROM phone_buttons b JOIN phones p ON p.id = b.phone_id"
        ).fetchall()
        orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
    assert sorted(phones) == [("00:0a:dd:00:00:01", "a"), ("00:0a:dd:00:00:02", "c")]
    assert buttons == [("00:0a:dd:00:00:02", 200)]
    assert orphans == []


def test_import_refuses_databases_older_than_8_0(tmp_path: Path) -> None:
    """import_records needs schema >= 30 on both sides and leaves the target unchanged otherwise."""
    old, new = old_db(tmp_path, 23), old_db(tmp_path, 30)
    before = file_hash(new)
    with pytest.raises(RuntimeError):
        import_records(old, new, max_users=100)
    assert file_hash(new) == before


# --- simulated data ---


def test_populate_is_deterministic_per_seed(tmp_path: Path) -> None:
    """The same seed gives the same records in either data model; another seed gives others."""
    populate(tmp_path / "a.db", 11, users=40, seed=3)
    populate(tmp_path / "b.db", 20, users=40, seed=3)
    populate(tmp_path / "c.db", 20, users=40, seed=4, model="731")
    assert digest(tmp_path / "a.db") == digest(tmp_path / "b.db")
    assert digest(tmp_path / "c.db").checksum != digest(tmp_path / "b.db").checksum
    assert user_count(tmp_path / "a.db") == 40
    assert digest(tmp_path / "a.db").counts["call_log"] == 5000


# --- property: rebuild and migrations preserve the digest of arbitrary small datasets ---

NAME = st.text(st.characters(codec="utf-8", blacklist_characters=",\x00"), min_size=1, max_size=8)
FREE_TEXT = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=12)
SECONDS = st.integers(min_value=0, max_value=4_000_000_000)


@st.composite
def datasets(draw: st.DrawFn) -> Records:
    """Small random records that fit both data models."""
    logins = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=6), unique=True, max_size=6))
    r = Records()
    exts = iter(draw(st.permutations(range(100, 130))))
    macs = iter(draw(st.lists(st.binary(min_size=6, max_size=6), unique=True, min_size=12, max_size=12)))
    for uid, login in enumerate(logins, start=1):
        r.users.append((uid, login, draw(NAME), draw(NAME), draw(st.integers(0, 1)), draw(SECONDS)))
        if draw(st.booleans()):
            r.extensions.append((next(exts), "user", uid))
        if draw(st.booleans()):
            r.phones.append((next(macs).hex(), draw(NAME), uid))
    for aid in range(1, draw(st.integers(0, 3)) + 1):
        r.attendants.append((aid, draw(NAME), draw(FREE_TEXT)))
        if draw(st.booleans()):
            r.extensions.append((next(exts), "aa", aid))
    if logins:
        for vid in range(1, draw(st.integers(0, 5)) + 1):
            uid = draw(st.integers(1, len(logins)))
            r.voicemail.append(
                (vid, uid, draw(SECONDS), draw(st.integers(0, 999)), draw(st.integers(0, 1)), draw(FREE_TEXT))
            )
    ids = draw(st.lists(st.integers(1, 10**12), unique=True, max_size=8))
    for cid in sorted(ids):
        r.calls.append(
            (
                cid,
                draw(SECONDS),
                draw(FREE_TEXT),
                draw(FREE_TEXT),
                draw(st.integers(0, 10**6)),
                draw(FREE_TEXT),
            )
        )
    return r


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=datasets(), old=st.sampled_from([10, 11]), new=st.sampled_from(NEW_SCHEMAS))
def test_db_1_db_2_rebuild_and_migration_preserve_any_dataset(records: Records, old: int, new: int) -> None:
    """For any small dataset, the rebuild and a migration to the newest schema keep the digest."""
    with tempfile.TemporaryDirectory() as folder:
        src, mid, last = (Path(folder) / name for name in ("src.db", "mid.db", "last.db"))
        write_records(src, old, records)
        expected = digest(src)
        assert expected.counts["users"] == len(records.users)
        rebuild(src, mid, new)
        migrate_copy(mid, last, KNOWN_SCHEMAS[-1])
        assert digest(mid) == expected
        assert digest(last) == expected


def test_a_migrated_copy_never_holds_the_database_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The byte copy, its SHA-256 and the read-back of the copy stream the file in pieces: the
    Python memory a migration takes stays well under the database's size."""
    import importlib
    import tracemalloc

    from agent.database import engine

    digest_module = importlib.import_module("agent.database.digest")  # the module, not the function

    monkeypatch.setattr(engine, "_CHUNK", 64 * 1024)
    monkeypatch.setattr(digest_module, "PAGE_ROWS", 1_000)  # the digest's own pages of rows, small too
    src = old_db(tmp_path, 22, rows=40_000)
    size = src.stat().st_size
    assert size > 2_000_000
    tracemalloc.start()
    try:
        migrate_copy(src, tmp_path / "same.db", 22)  # a byte copy, read back and compared
        migrate_copy(src, tmp_path / "next.db", 23)  # a byte copy, stepped and digested
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 4, f"{peak} bytes of Python memory for a {size}-byte database"
    assert file_hash(tmp_path / "same.db") == file_hash(src)
    assert digest(tmp_path / "next.db") == digest(src)
