"""The attack suite: each attack from TUF's threat list, mounted against a real agent on a virtual
server, is refused with its own reason code and leaves the server byte for byte as it was."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from tuf.api.metadata import Metadata

from agent.releasetrust import METADATA_DIR
from agent.store import ServerDir
from releases.catalog import default_catalog
from simulator.attack import Outcome, attack_command, mount
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server
from tests.helpers import tree_hash

NOW = datetime(2016, 1, 1, tzinfo=UTC)
# what a refused download may change: the metadata the agent trusts, its Update Area, its last result
MAY_CHANGE = ("trust/tuf/", "update/", "last_result.json")


@pytest.fixture
def server(tmp_path: Path, keyring: VendorKeyring) -> ServerDir:
    """A 6x on 7.0 (its next step, 7.1, needs no key) whose repository is the keyring's."""
    return create_server(tmp_path / "box", ServerSpec(model="6x", release="7.0", shipped=date(2009, 6, 1)))


def attacked(name: str, server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> Outcome:
    """Mount ``name``; assert it was refused and nothing the agent keeps beyond a download changed."""
    before = tree_hash(server.root, skip=MAY_CHANGE)
    outcome = asyncio.run(mount(name, server, tmp_path / "work", NOW, keyring))
    assert outcome.refused
    assert outcome.server_unchanged
    assert tree_hash(server.root, skip=MAY_CHANGE) == before
    assert server.committed().version == "7.0"
    return outcome


def test_arbitrary_image(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """Image bytes that do not match the signed target are refused: IMAGE_DIGEST_MISMATCH."""
    assert attacked("arbitrary-image", server, tmp_path, keyring).reason == "IMAGE_DIGEST_MISMATCH"


def test_bad_signature(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """Metadata signed by a key the role does not name is refused: RELEASE_METADATA_UNSIGNED."""
    assert attacked("bad-signature", server, tmp_path, keyring).reason == "RELEASE_METADATA_UNSIGNED"


def test_threshold(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """Targets signed by one compromised key of a two-key threshold: RELEASE_METADATA_THRESHOLD."""
    assert attacked("threshold", server, tmp_path, keyring).reason == "RELEASE_METADATA_THRESHOLD"


def test_rollback_metadata(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """Older metadata than the agent already trusts is refused: RELEASE_METADATA_ROLLBACK."""
    assert attacked("rollback-metadata", server, tmp_path, keyring).reason == "RELEASE_METADATA_ROLLBACK"


def test_freeze(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """An expired timestamp (a frozen mirror) is refused: RELEASE_METADATA_EXPIRED."""
    assert attacked("freeze", server, tmp_path, keyring).reason == "RELEASE_METADATA_EXPIRED"


def test_mix_and_match(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """A targets file of another time than the snapshot is refused: RELEASE_METADATA_MISMATCH."""
    assert attacked("mix-and-match", server, tmp_path, keyring).reason == "RELEASE_METADATA_MISMATCH"


def test_endless_data(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """A metadata file longer than its limit is refused: RELEASE_METADATA_TOO_LARGE."""
    assert attacked("endless-data", server, tmp_path, keyring).reason == "RELEASE_METADATA_TOO_LARGE"


def test_wrong_target(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """An image validly signed for other models than the server's is refused: IMAGE_WRONG_TARGET."""
    assert attacked("wrong-target", server, tmp_path, keyring).reason == "IMAGE_WRONG_TARGET"


def test_rollback_release(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """A validly signed older release offered for install is refused: DOWNGRADE_REFUSED (DOWN-1)."""
    assert attacked("rollback-release", server, tmp_path, keyring).reason == "DOWNGRADE_REFUSED"


def test_root_rotation(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """A root signed by the trusted root is followed; one signed only by an intruder is refused:
    RELEASE_ROOT_UNSIGNED."""
    assert attacked("root-rotation", server, tmp_path, keyring).reason == "RELEASE_ROOT_UNSIGNED"
    trusted = Metadata.from_bytes((server.trust_dir / METADATA_DIR / "root.json").read_bytes()).signed
    assert trusted.version == 2  # the vendor's rotation was accepted


def test_the_attack_command_prints_the_outcome(server: ServerDir) -> None:
    """`allworx-sim attack freeze --server-dir DIR --json` prints the outcome and exits 0."""
    result = CliRunner().invoke(
        attack_command, ["freeze", "--server-dir", str(server.root), "--now", "2016-01-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert document == {
        "attack": "freeze",
        "refused": True,
        "reason": "RELEASE_METADATA_EXPIRED",
        "server_unchanged": True,
    }


def test_slow_retrieval(server: ServerDir, tmp_path: Path, keyring: VendorKeyring) -> None:
    """A trickled image is given up in bounded time (IMAGE_TOO_SLOW), the bytes that arrived are kept
    for a resume, and the agent's event loop kept running meanwhile."""
    started = time.monotonic()
    outcome = attacked("slow-retrieval", server, tmp_path, keyring)
    assert outcome.reason == "IMAGE_TOO_SLOW"
    assert time.monotonic() - started < 30
    part = server.update_area / f"{default_catalog().release('7.1').build}.img.part"
    assert part.stat().st_size > 0
    assert outcome.notes["longest_loop_wait"] < 0.5  # a byte comes every 0.8 s: reads do not block the loop
