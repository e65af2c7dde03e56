"""The server directory's caches (key checks, trust, identity) and the simulation-only fsync setting."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agent import journal
from agent.events import CommandAnswered
from agent.keys import KeyCheck, install_revocation_list, parse_key_text
from agent.mqtt.messages import EventMessage
from agent.mqtt.outbox import Outbox
from agent.store import ServerDir
from common.reasons import Reason
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server

TODAY = date(2016, 6, 1)


@pytest.fixture
def vendor(tmp_path: Path) -> VendorKeyring:
    """A keyring of this test's own (revoking a key changes it)."""
    return VendorKeyring.load_or_create(tmp_path / "vendor")


@pytest.fixture
def server(tmp_path: Path, vendor: VendorKeyring) -> ServerDir:
    """A 6x on 7.2 that trusts ``vendor`` and holds one valid maintenance key."""
    made = create_server(tmp_path / "box", ServerSpec(model="6x", release="7.2", shipped=date(2010, 9, 1)))
    (made.trust_dir / "vendor-root.pub").write_text(vendor.root_public_hex + "\n")
    assert made.install_key(maintenance(vendor, made, date(2016, 1, 1)), TODAY).valid
    return made


def maintenance(vendor: VendorKeyring, server: ServerDir, start: date) -> str:
    """A one-year maintenance key for ``server`` from ``start``."""
    serial = server.identity().serial
    return issue_key(vendor, serial=serial, kind="maintenance", plan="anytime-1y", start=start)


def fresh(server: ServerDir, today: date = TODAY) -> list[KeyCheck]:
    """The checks a new, cache-less view of the same folder computes."""
    return ServerDir(server.root).key_checks(today)


def test_cached_checks_equal_a_fresh_verification(server: ServerDir) -> None:
    """A second call returns what a fresh verification returns."""
    first = server.key_checks(TODAY)
    assert server.key_checks(TODAY) == first == fresh(server)


def test_a_cache_hit_skips_verification(server: ServerDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the files unchanged, no key is parsed or verified again."""
    server.key_checks(TODAY)
    calls: list[object] = []
    monkeypatch.setattr("agent.store.check_key", lambda *args: calls.append(args))
    server.key_checks(TODAY)
    assert calls == []


def test_installing_a_key_invalidates(server: ServerDir, vendor: VendorKeyring) -> None:
    """A newly installed key appears at once."""
    before = server.key_checks(TODAY)
    assert server.install_key(maintenance(vendor, server, date(2016, 5, 1)), TODAY).valid
    after = server.key_checks(TODAY)
    assert len(after) == len(before) + 1 and after == fresh(server)


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
    """The date is part of the cache key: a key past its expiry reads expired."""
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
    """identity.json is cached by content: a changed serial makes the keys mismatch."""
    serial = server.identity().serial
    valid = {c.info.key_id for c in server.key_checks(TODAY) if c.valid and c.info}
    path = server.root / "identity.json"
    path.write_text(path.read_text().replace(serial, "AWX000000000"))
    assert server.identity().serial == "AWX000000000"
    after = {c.info.key_id: c.reason for c in server.key_checks(TODAY) if c.info}
    assert valid and all(after[key_id] is Reason.KEY_SERIAL_MISMATCH for key_id in valid)


def test_callers_get_copies(server: ServerDir) -> None:
    """The cache hands out copies: a caller changing its list does not change the next answer."""
    first = server.key_checks(TODAY)
    first.clear()
    installed = {parse_key_text(p.read_text()).info.key_id for p in server.keys_dir.glob("*.key")}
    assert {c.info.key_id for c in server.key_checks(TODAY) if c.info} == installed


# --- the simulation-only no-fsync setting ---------------------------------------------------------


def _event() -> EventMessage:
    answered = CommandAnswered(command="report", client_token="t1", status="accepted")
    return EventMessage(serial="AWX1", site="lab", at=datetime(2010, 1, 1, tzinfo=UTC), event=answered)


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_durable_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the setting, an atomic write and an outbox append fsync."""
    monkeypatch.delenv(journal.NO_FSYNC_ENV, raising=False)
    calls = _count_fsyncs(monkeypatch)
    assert journal.durable()
    journal.write_json(tmp_path / "doc.json", {"a": 1})
    with Outbox(tmp_path / "outbox") as outbox:
        outbox.append(_event())
    assert len(calls) >= 3  # the file, its folder, the outbox log


def test_the_simulation_setting_skips_fsync_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ALLWORX_SIM_NO_FSYNC=1 skips every fsync but keeps the atomic rename and the data."""
    monkeypatch.setenv(journal.NO_FSYNC_ENV, "1")
    calls = _count_fsyncs(monkeypatch)
    assert not journal.durable()
    journal.write_json(tmp_path / "doc.json", {"a": 1})
    journal.write_json(tmp_path / "doc.json", {"a": 2})
    with Outbox(tmp_path / "outbox") as outbox:
        outbox.append(_event())
    assert calls == []
    assert journal.read_json(tmp_path / "doc.json") == {"a": 2}
    assert not list(tmp_path.glob(".*.tmp"))
    with Outbox(tmp_path / "outbox") as outbox:
        assert outbox.last_seq == 1
