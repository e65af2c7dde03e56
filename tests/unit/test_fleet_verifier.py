"""The fleet simulation's remembering verifier: each memory answers exactly as a fresh verification.

Trust and key checks by the fingerprint of their files, signatures by their bytes, release targets
by the repository's metadata and the pinned root, database digests by file and by content, the
ready check by file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pytest

from agent import crypto
from agent.crashpoints import injecting
from agent.database import digest, migrate_copy, rebuild, schema_of
from agent.database import tmp_path as build_path
from agent.keys import KeyCheck, install_revocation_list, parse_key_text
from agent.releasetrust import pin_root
from agent.store import ServerDir
from common.errors import DatabaseError, VerificationError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.fleet.verifier import RememberingVerifier
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.pbxdata import populate
from simulator.portal import damage
from simulator.publish import metadata_path, publish
from simulator.server import ServerSpec, create_server

TODAY = date(2016, 6, 1)


@pytest.fixture
def vendor(tmp_path: Path) -> VendorKeyring:
    """A keyring of this test's own (revoking a key changes it)."""
    return VendorKeyring.load_or_create(tmp_path / "vendor")


@pytest.fixture
def server(tmp_path: Path, vendor: VendorKeyring) -> ServerDir:
    """A 6x on 7.2 that trusts ``vendor`` and holds one valid maintenance key, seen through a
    remembering verifier."""
    made = create_server(tmp_path / "box", ServerSpec(model="6x", release="7.2", shipped=date(2010, 9, 1)))
    (made.trust_dir / "vendor-root.pub").write_text(vendor.root_public_hex + "\n")
    assert made.install_key(maintenance(vendor, made, date(2016, 1, 1)), TODAY).valid
    return ServerDir(made.root, verifier=RememberingVerifier())


def maintenance(vendor: VendorKeyring, server: ServerDir, start: date) -> str:
    """A one-year maintenance key for ``server`` from ``start``."""
    serial = server.identity().serial
    return issue_key(vendor, serial=serial, kind="maintenance", plan="anytime-1y", start=start)


def fresh(server: ServerDir, today: date = TODAY) -> list[KeyCheck]:
    """The checks the agent's own (durable) verifier computes for the same folder."""
    return ServerDir(server.root).key_checks(today)


def test_cached_checks_equal_a_fresh_verification(server: ServerDir) -> None:
    """A second call returns what a fresh verification returns."""
    first = server.key_checks(TODAY)
    assert server.key_checks(TODAY) == first
    assert first == fresh(server)


def test_a_cache_hit_skips_verification(server: ServerDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the files unchanged, no key is parsed or verified again."""
    server.key_checks(TODAY)
    calls: list[object] = []
    monkeypatch.setattr("agent.verifier.check_key", lambda *args, **kwargs: calls.append(args))
    server.key_checks(TODAY)
    assert calls == []


def test_installing_a_key_invalidates(server: ServerDir, vendor: VendorKeyring) -> None:
    """A newly installed key appears at once."""
    before = server.key_checks(TODAY)
    assert server.install_key(maintenance(vendor, server, date(2016, 5, 1)), TODAY).valid
    after = server.key_checks(TODAY)
    assert len(after) == len(before) + 1
    assert after == fresh(server)


def test_a_revocation_list_invalidates(server: ServerDir, vendor: VendorKeyring) -> None:
    """Installing a revocation list that names a key makes it KEY_REVOKED at once."""
    (check,) = [c for c in server.key_checks(TODAY) if c.valid and c.info is not None]
    assert check.info is not None
    revoked = vendor.revoke(check.info.key_id, TODAY)
    install_revocation_list(server.trust_dir, revoked, TODAY)
    after = {c.info.key_id: c for c in server.key_checks(TODAY) if c.info is not None}
    assert after[check.info.key_id].reason is Reason.KEY_REVOKED
    assert list(after.values()) == [c for c in fresh(server) if c.info is not None]


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _remove(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("change", [_flip_middle, _remove], ids=["edited-in-place", "removed"])
def test_any_change_to_a_key_file_invalidates(server: ServerDir, change: Callable[[Path], None]) -> None:
    """A key file edited in place (same size, same inode, within one timestamp tick) or removed is seen."""
    server.key_checks(TODAY)
    (path,) = sorted(server.keys_dir.glob("*.key"))[-1:]
    change(path)
    assert server.key_checks(TODAY) == fresh(server)


def test_a_new_day_is_verified_again(server: ServerDir) -> None:
    """The date is part of the key checks' inputs: a key past its expiry reads expired."""
    assert any(c.valid for c in server.key_checks(TODAY))
    later = TODAY + timedelta(days=800)
    assert not any(c.valid for c in server.key_checks(later))
    assert server.key_checks(later) == fresh(server, later)


def test_a_changed_trust_root_invalidates(server: ServerDir, tmp_path: Path) -> None:
    """Pinning another vendor root makes every key untrusted at once."""
    assert any(c.valid for c in server.key_checks(TODAY))
    other = VendorKeyring.load_or_create(tmp_path / "other")
    (server.trust_dir / "vendor-root.pub").write_text(other.root_public_hex + "\n")
    assert not any(c.valid for c in server.key_checks(TODAY))


def test_a_changed_identity_is_read_again(server: ServerDir) -> None:
    """The serial is part of the key checks' inputs: a changed serial makes the keys mismatch."""
    serial = server.identity().serial
    valid = {c.info.key_id for c in server.key_checks(TODAY) if c.valid and c.info}
    path = server.root / "identity.json"
    path.write_text(path.read_text().replace(serial, "AWX000000000"))
    again = ServerDir(server.root, disk=server.disk, verifier=server.verifier)  # the host's same memory
    assert again.identity().serial == "AWX000000000"
    after = {c.info.key_id: c.reason for c in again.key_checks(TODAY) if c.info}
    assert valid
    assert all(after[key_id] is Reason.KEY_SERIAL_MISMATCH for key_id in valid)


def test_callers_get_copies(server: ServerDir) -> None:
    """The memory hands out copies: a caller changing its list does not change the next answer."""
    first = server.key_checks(TODAY)
    first.clear()
    installed = {parse_key_text(p.read_text()).info.key_id for p in server.keys_dir.glob("*.key")}
    assert {c.info.key_id for c in server.key_checks(TODAY) if c.info} == installed


def test_a_trust_store_is_loaded_again_only_when_its_files_change(
    server: ServerDir, vendor: VendorKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged trust folder is not read and verified again; a new revocation list is."""
    first = server.trust()
    loads: list[Path] = []
    monkeypatch.setattr("agent.verifier.load_trust", lambda folder, **kw: loads.append(folder))
    assert server.trust() is first
    assert loads == []
    monkeypatch.undo()
    (check,) = [c for c in server.key_checks(TODAY) if c.valid and c.info is not None]
    assert check.info is not None
    install_revocation_list(server.trust_dir, vendor.revoke(check.info.key_id, TODAY), TODAY)
    assert check.info.key_id in server.trust().revoked


# --- signatures and release targets ----------------------------------------------------------------


def test_a_valid_signature_is_verified_once_and_an_invalid_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remembered signature costs no Ed25519 verification; a forged one is never remembered."""
    private = crypto.generate_private_key()
    public, message = crypto.public_key(private), b"payload"
    good = crypto.sign(private, message)
    forged = bytes([good[0] ^ 1]) + good[1:]
    memory = RememberingVerifier()
    calls: list[bytes] = []
    real = crypto.verify
    monkeypatch.setattr(crypto, "verify", lambda p, m, s: calls.append(s) or real(p, m, s))
    assert memory.signature(public, message, good)
    assert memory.signature(public, message, good)
    assert not memory.signature(public, message, forged)
    assert not memory.signature(public, message, forged)
    assert not memory.signature(public, b"other payload", good)
    assert calls == [good, forged, forged, good]


def test_a_verified_release_target_is_remembered_only_for_the_same_metadata_and_pinned_root(
    keyring: VendorKeyring, tmp_path: Path
) -> None:
    """The release memory never answers for changed repository metadata or another pinned root."""
    repo = publish(default_catalog(), keyring, tmp_path / "repo", image_size=4096)
    trust = tmp_path / "trust"
    trust.mkdir()
    pin_root(trust, metadata_path(repo, "root").read_bytes())
    memory = RememberingVerifier()
    first = memory.release(trust, str(repo), "7.6.4.1")
    assert memory.release(trust, str(repo), "7.6.4.1") is first  # verified once
    pristine = metadata_path(repo, "targets").read_bytes()
    damage(repo, "7.6.4.1", "metadata")  # altered after a good check
    second = tmp_path / "second"  # a server that never refreshed, as the first was
    second.mkdir()
    pin_root(second, metadata_path(repo, "root").read_bytes())
    with pytest.raises(VerificationError) as caught:
        memory.release(second, str(repo), "7.6.4.1")
    assert caught.value.reason is Reason.RELEASE_METADATA_MISMATCH
    metadata_path(repo, "targets").write_bytes(pristine)
    other = publish(default_catalog(), VendorKeyring.load_or_create(tmp_path / "other"), tmp_path / "o", 4096)
    shutil.rmtree(trust)
    trust.mkdir()
    pin_root(trust, metadata_path(other, "root").read_bytes())  # another vendor's root
    with pytest.raises(VerificationError) as caught:
        memory.release(trust, str(repo), "7.6.4.1")
    assert caught.value.reason is Reason.RELEASE_METADATA_UNSIGNED


# --- database digests ----------------------------------------------------------------------------


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def old_db(folder: Path, schema: int = 11) -> Path:
    path = folder / f"old{schema}.db"
    populate(path, schema, users=12, seed=7, call_log_rows=300)
    return path


def _counting_digests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every full digest the engine computes (of a connection or of a file)."""
    from agent.database import engine

    calls: list[int] = []
    real_connection, real_file = engine.digest_connection, engine.digest
    monkeypatch.setattr(engine, "digest_connection", lambda conn: calls.append(1) or real_connection(conn))
    monkeypatch.setattr(engine, "digest", lambda path: calls.append(1) or real_file(path))
    return calls


def _delete_last_call(path: Path) -> Callable[[str], None]:
    """An injector that deletes one call-log row from the build at ``path`` before it is verified."""

    def inject(point: str) -> None:
        if point == "db.rebuild":
            with closing(sqlite3.connect(build_path(path))) as conn:
                conn.execute("DELETE FROM call_log WHERE id = (SELECT max(id) FROM call_log)")
                conn.commit()

    return inject


def test_a_same_schema_copy_of_a_remembered_database_takes_no_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the source's digest remembered, a step that keeps the schema digests nothing, and the
    copy it published is ready without the boot check."""
    memory = RememberingVerifier()
    rebuild(old_db(tmp_path, 11), tmp_path / "s20.db", 20, verifier=memory)
    calls = _counting_digests(monkeypatch)
    report = migrate_copy(tmp_path / "s20.db", tmp_path / "copy.db", 20, verifier=memory)
    assert calls == []
    assert file_hash(tmp_path / "copy.db") == file_hash(tmp_path / "s20.db")
    assert report.checksum == digest(tmp_path / "s20.db").checksum
    monkeypatch.setattr("agent.database.engine.check_opens", lambda *a: pytest.fail("boot check run"))
    assert memory.database_ready(tmp_path / "copy.db", 20)


def test_a_ready_check_after_a_change_runs_the_boot_check(tmp_path: Path) -> None:
    """A published database changed since (or asked in another schema) gets the boot check."""
    memory = RememberingVerifier()
    rebuild(old_db(tmp_path, 11), tmp_path / "s20.db", 20, verifier=memory)
    assert not memory.database_ready(tmp_path / "s20.db", 21)  # the boot check: schema 20, not 21
    (tmp_path / "s20.db").write_bytes(b"\0" * (tmp_path / "s20.db").stat().st_size)
    assert not memory.database_ready(tmp_path / "s20.db", 20)


def test_a_remembered_digest_saves_the_source_read_and_never_passes_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next step reuses the digest verified at the last publish; a change to the file is noticed."""
    memory = RememberingVerifier()
    calls = _counting_digests(monkeypatch)
    rebuild(old_db(tmp_path, 11), tmp_path / "s20.db", 20, verifier=memory)
    calls.clear()
    migrate_copy(tmp_path / "s20.db", tmp_path / "s21.db", 21, verifier=memory)
    assert len(calls) == 1, "only the copy is digested: the source's digest was remembered"

    with closing(sqlite3.connect(tmp_path / "s21.db")) as conn:  # the PBX records a call meanwhile
        conn.execute("DELETE FROM call_log WHERE id = (SELECT max(id) FROM call_log)")
        conn.commit()
    calls.clear()
    migrate_copy(tmp_path / "s21.db", tmp_path / "s22.db", 22, verifier=memory)
    assert len(calls) == 2, "a changed file is digested again"
    assert digest(tmp_path / "s22.db") == digest(tmp_path / "s21.db")

    stat = (tmp_path / "s22.db").stat()  # a change that even keeps size and mtime: the copy fails, safely
    with closing(sqlite3.connect(tmp_path / "s22.db")) as conn:
        conn.execute("UPDATE users SET last_name = upper(last_name) WHERE id = (SELECT min(id) FROM users)")
        conn.commit()
    os.utime(tmp_path / "s22.db", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (tmp_path / "s22.db").stat().st_size == stat.st_size  # SQLite rewrote a page in place
    with pytest.raises(DatabaseError) as caught:
        migrate_copy(tmp_path / "s22.db", tmp_path / "s23.db", 23, verifier=memory)
    assert caught.value.reason is Reason.DATABASE_VERIFY_FAILED
    assert not (tmp_path / "s23.db").exists()


def test_servers_with_byte_identical_databases_digest_each_content_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers copied from one template: the second one's rebuild and migration digest nothing,
    and each still ends verified, in the right schema, with every record."""
    memory = RememberingVerifier()
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    template = old_db(tmp_path, 11)
    for server in (first, second):
        (server / "pbx.db").write_bytes(template.read_bytes())
    calls = _counting_digests(monkeypatch)

    rebuild(first / "pbx.db", first / "s20.db", 20, verifier=memory)
    migrate_copy(first / "s20.db", first / "s23.db", 23, verifier=memory)
    assert len(calls) == 3, "the source, the rebuilt database, the migrated copy"
    calls.clear()
    report = migrate_copy(second / "pbx.db", second / "s11.db", 11, verifier=memory)  # compared bytes
    rebuild(second / "pbx.db", second / "s20.db", 20, verifier=memory)
    migrated = migrate_copy(second / "s20.db", second / "s23.db", 23, verifier=memory)
    assert calls == [], "every content was digested on the first server"
    assert schema_of(second / "s23.db") == 23
    assert migrated.checksum == report.checksum
    assert report.checksum == digest(template).checksum
    assert file_hash(second / "s23.db") == file_hash(first / "s23.db")


def test_a_copy_that_lost_a_record_fails_even_after_an_identical_one_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory holds the digest of the bytes that were verified: a copy damaged before its check
    has other bytes, is digested in full and fails; the source is untouched."""
    memory = RememberingVerifier()
    template = old_db(tmp_path, 22)
    (tmp_path / "other.db").write_bytes(template.read_bytes())
    migrate_copy(template, tmp_path / "good.db", 23, verifier=memory)
    calls = _counting_digests(monkeypatch)
    dst = tmp_path / "bad.db"
    with injecting(_delete_last_call(dst)), pytest.raises(DatabaseError) as caught:
        migrate_copy(tmp_path / "other.db", dst, 23, verifier=memory)
    assert caught.value.reason is Reason.DATABASE_VERIFY_FAILED
    assert len(calls) == 1, "the source was known by its bytes; the damaged copy was digested"
    assert not dst.exists()
    assert not build_path(dst).exists()
    assert file_hash(tmp_path / "other.db") == file_hash(template)


def test_a_database_mid_write_is_not_remembered_by_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a journal beside it, a file's bytes are not what SQLite reads: its digest is computed
    each time and never filed under those bytes."""
    memory = RememberingVerifier()
    src = old_db(tmp_path, 22)
    Path(f"{src}-journal").write_bytes(b"")
    calls = _counting_digests(monkeypatch)
    migrate_copy(src, tmp_path / "one.db", 23, verifier=memory)
    migrate_copy(src, tmp_path / "two.db", 23, verifier=memory)
    assert len(calls) == 3, "the source twice (mid-write), the migrated copy once (its bytes are known)"


def test_a_new_day_checks_the_remembered_keys_without_parsing_them_again(
    server: ServerDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a new day no key file is parsed again, and the checks equal a fresh verification."""
    import agent.keys

    server.key_checks(TODAY)
    parsed: list[object] = []
    real = agent.keys.parse_key
    monkeypatch.setattr(agent.keys, "parse_key", lambda text: parsed.append(text) or real(text))
    later = TODAY + timedelta(days=1)
    checks = server.key_checks(later)
    assert parsed == []
    assert checks == fresh(server, later)
