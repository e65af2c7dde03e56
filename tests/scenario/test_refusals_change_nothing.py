"""Bad input is refused with its own reason code and nothing already on the server changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.clock import SimClock
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.issuer import issue_key, tamper
from simulator.keyring import VendorKeyring
from simulator.portal import DAMAGES, EXPECTED, Damage, damage, private_copy
from simulator.publish import default_repository
from simulator.server import ServerSpec, create_server

NOW = datetime(2016, 1, 1, tzinfo=UTC)


def fingerprint(root: Path) -> dict[str, str]:
    """Content hash of every file on the server that matters (slots, keys, trust, boot env, identity);
    not the release metadata trusted so far (``trust/tuf/``), which every refresh may bring up to date."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(("update/", "journal", "last_result", "trust/tuf/")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def server(tmp_path: Path, keyring: VendorKeyring) -> ServerDir:
    made = create_server(
        tmp_path / "box",
        ServerSpec(model="6x", release="7.2", users=8, call_log_rows=40, shipped=date(2010, 9, 1)),
    )
    key = issue_key(
        keyring, serial=made.identity().serial, kind="maintenance", plan="anytime-1y", start=date(2016, 1, 1)
    )
    assert made.install_key(key, NOW.date()).valid
    return made


@pytest.mark.parametrize("how", DAMAGES)
async def test_damaged_download_is_refused_before_anything_changes(
    tmp_path: Path, server: ServerDir, keyring: VendorKeyring, how: Damage
) -> None:
    """A damaged image or altered release metadata fails with its reason (IMG-1); nothing changes."""
    repo = private_copy(default_repository(keyring), tmp_path / "portal")
    damage(repo, default_catalog().release("7.3").build, how)
    before = fingerprint(server.root)
    upgrader = Upgrader(server, default_catalog(), SimClock(NOW, speed=float("inf")), repo=repo)
    result = await upgrader.upgrade("7.3")
    step = result.steps[-1]
    assert step.outcome == "failed" and step.refusal is not None
    assert step.refusal.reason is EXPECTED[how]
    assert step.refusal.rule == "IMG-1"
    assert result.final_release == "7.2"
    assert fingerprint(server.root) == before
    assert not list(server.update_area.glob("*")), "no partial or rejected image is kept"


def _garbled(text: str, _: ServerDir, __: VendorKeyring) -> str:
    return text[: len(text) // 2] + "\n@@@ garbage @@@\n"


def _other_serial(_: str, __: ServerDir, keyring: VendorKeyring) -> str:
    return issue_key(
        keyring, serial="AWX999999999", kind="maintenance", plan="anytime-1y", start=date(2016, 1, 1)
    )


def _altered(text: str, _: ServerDir, __: VendorKeyring) -> str:
    return tamper(text)


def _expired(_: str, server: ServerDir, keyring: VendorKeyring) -> str:
    return issue_key(
        keyring,
        serial=server.identity().serial,
        kind="maintenance",
        plan="anytime-1y",
        start=date(2013, 1, 1),
    )


KEY_CASES = [
    ("garbled", _garbled, Reason.KEY_FORMAT_INVALID),
    ("other_serial", _other_serial, Reason.KEY_SERIAL_MISMATCH),
    ("altered", _altered, Reason.KEY_SIGNATURE_INVALID),
    ("expired", _expired, Reason.MAINTENANCE_KEY_EXPIRED),
]


@pytest.mark.parametrize(("name", "make", "reason"), KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_bad_key_is_refused_and_installed_keys_are_unchanged(
    server: ServerDir,
    keyring: VendorKeyring,
    name: str,
    make: Callable[[str, ServerDir, VendorKeyring], str],
    reason: Reason,
) -> None:
    """Each bad key gets its own reason code and leaves every installed key byte for byte as it was."""
    good = issue_key(
        keyring, serial=server.identity().serial, kind="feature", feature="Reach", start=date(2016, 1, 1)
    )
    before = server.key_digest()
    check = server.install_key(make(good, server, keyring), NOW.date())
    assert not check.valid and check.reason is reason
    assert server.key_digest() == before


def test_forged_key_signed_by_another_root_is_refused(tmp_path: Path, server: ServerDir) -> None:
    """A key signed by a keyring that is not the vendor's fails its signature chain; keys unchanged."""
    forger = VendorKeyring.load_or_create(tmp_path / "forger")
    forged = issue_key(
        forger, serial=server.identity().serial, kind="maintenance", plan="bundle-5y", start=date(2016, 1, 1)
    )
    before = server.key_digest()
    check = server.install_key(forged, NOW.date())
    assert not check.valid
    assert check.reason in (Reason.KEY_SIGNATURE_INVALID, Reason.KEY_SIGNER_UNTRUSTED)
    assert server.key_digest() == before


def test_revoked_key_is_refused(tmp_path: Path, server: ServerDir) -> None:
    """A key on the vendor's revocation list is refused with KEY_REVOKED once the list is installed."""
    from agent.keys import install_revocation_list, parse_key_text

    vendor = VendorKeyring.load_or_create(tmp_path / "vendor")
    (server.trust_dir / "vendor-root.pub").write_text(vendor.root_public_hex + "\n")
    key = issue_key(
        vendor, serial=server.identity().serial, kind="maintenance", plan="anytime-1y", start=date(2016, 1, 1)
    )
    revoked = vendor.revoke(parse_key_text(key).info.key_id, date(2016, 1, 1))
    install_revocation_list(server.trust_dir, revoked, date(2016, 1, 1))
    before = server.key_digest()
    check = server.install_key(key, NOW.date())
    assert not check.valid and check.reason is Reason.KEY_REVOKED
    assert server.key_digest() == before
