"""The retained state document of a server seen through a fleet host's memories (the server directory's
and the remembering verifier's) equals the one read afresh from the files, across the changes that
alter it: a new or edited key, a new committed release, a rewritten descriptor, a new result."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.documents import LastResult
from agent.mqtt.messages import dump
from agent.mqtt.report import state_document
from agent.store import ServerDir, SlotInfo
from simulator.fleet.verifier import RememberingVerifier
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server

NOW = datetime(2016, 6, 1, 12, tzinfo=UTC)
SITE = "memory-site"


@pytest.fixture
def vendor(tmp_path: Path) -> VendorKeyring:
    """A keyring of this test's own."""
    return VendorKeyring.load_or_create(tmp_path / "vendor")


@pytest.fixture
def server(tmp_path: Path, vendor: VendorKeyring) -> ServerDir:
    """A 6x on 7.2 trusting ``vendor``, seen through a remembering verifier, its memories warm."""
    made = create_server(tmp_path / "box", ServerSpec(model="6x", release="7.2", shipped=date(2010, 9, 1)))
    (made.trust_dir / "vendor-root.pub").write_text(vendor.root_public_hex + "\n")
    seen = ServerDir(made.root, verifier=RememberingVerifier())
    state_document(seen, SITE, NOW)
    return seen


def _document(server: ServerDir) -> bytes:
    return dump(state_document(server, SITE, NOW))


def _fresh(server: ServerDir) -> bytes:
    """The document the agent's own durable verifier and a new directory object read from the files."""
    return _document(ServerDir(server.root))


def _key(vendor: VendorKeyring, server: ServerDir) -> str:
    serial = server.identity().serial
    return issue_key(vendor, serial=serial, kind="maintenance", plan="anytime-1y", start=date(2016, 1, 1))


def test_a_new_key_is_in_the_next_document(server: ServerDir, vendor: VendorKeyring) -> None:
    """A key installed after a document was built is in the next one, as read afresh."""
    before = _document(server)
    assert server.install_key(_key(vendor, server), NOW).valid
    after = _document(server)
    assert after != before
    assert after == _fresh(server)


def test_a_key_edited_in_place_is_in_the_next_document(server: ServerDir, vendor: VendorKeyring) -> None:
    """A key file whose bytes change (same size, same name) is judged again for the next document."""
    check = server.install_key(_key(vendor, server), NOW)
    assert check.info is not None
    valid = _document(server)
    path = server.keys_dir / f"{check.info.key_id}.key"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    after = _document(server)
    assert after != valid
    assert after == _fresh(server)


def test_a_new_committed_release_is_in_the_next_document(server: ServerDir) -> None:
    """A release written to the other slot, tried and committed through the bootloader is the next
    document's release."""
    info = server.committed()
    server.write_slot_info("b", SlotInfo("7.3", info.build + "9", info.db_schema))
    before = _document(server)  # built between the rebuild and the switch, as during an upgrade
    server.bootloader.try_slot("b")
    server.bootloader.boot()
    server.bootloader.commit()
    after = _document(server)
    assert after != before
    assert after == _fresh(server)
    assert server.committed().version == "7.3"


def test_a_rewritten_active_descriptor_is_in_the_next_document(server: ServerDir) -> None:
    """The active slot's descriptor written again (another build) is read again for the next document."""
    info = server.committed()
    server.write_slot_info(server.active_slot(), SlotInfo(info.version, info.build + "1", info.db_schema))
    assert server.committed().build == info.build + "1"
    assert _document(server) == _fresh(server)


def test_a_new_result_is_in_the_next_document(server: ServerDir) -> None:
    """A result recorded after a document was built is the next one's last result."""
    before = _document(server)
    result = LastResult.model_validate(
        {"from": "7.2", "to": "7.3", "final_release": "7.2", "outcome": "failed", "steps": [], "at": NOW}
    )
    server.record_result(result)
    after = _document(server)
    assert after != before
    assert after == _fresh(server)


def test_forget_reads_the_committed_release_again(server: ServerDir) -> None:
    """A descriptor changed behind the directory object's back is read again once it forgets."""
    info = server.committed()
    path = server.slot_dir(server.active_slot()) / "release.json"
    path.write_text(path.read_text().replace(info.build, info.build + "7"))
    server.forget()
    assert server.committed().build == info.build + "7"
    assert _document(server) == _fresh(server)
