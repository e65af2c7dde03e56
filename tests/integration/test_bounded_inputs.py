"""Every file the agent and the tools read is a regular file of bounded size, and nothing is
written through a link out of a server directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from simulator.server import ServerSpec, create_server
from tests.helpers import tree_hash

pytestmark = pytest.mark.integration


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Path:
    """A 6x on 7.0."""
    return create_server(tmp_path / "server", ServerSpec(model="6x", release="7.0", users=5)).root


@pytest.fixture
def hostile(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a link to /dev/zero and /dev/zero itself."""
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo)
    link = tmp_path / "zero.key"
    link.symlink_to("/dev/zero")
    return {"fifo": fifo, "link": link, "zero": Path("/dev/zero")}


@pytest.mark.parametrize("kind", ["fifo", "link", "zero"])
def test_a_key_file_that_is_no_regular_file_is_refused_at_once(
    server: Path, hostile: dict[str, Path], kind: str
) -> None:
    """keys install, install-revocations and fleet send install-key refuse it (exit 1), never block."""
    before = tree_hash(server)
    for argv in (
        ("allworx-agent", "keys", "install", "--server-dir", str(server), str(hostile[kind])),
        ("allworx-agent", "keys", "install-revocations", "--server-dir", str(server), str(hostile[kind])),
        ("allworx-fleet", "send", "install-key", str(hostile[kind]), "--site", "s", "--serial", "x",
         "--broker", "mqtt://127.0.0.1:1"),
    ):  # fmt: skip
        done = _run(*argv)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().endswith("is not a regular file"), done.stderr
    assert tree_hash(server) == before


def test_an_operator_key_that_is_no_regular_file_is_refused(hostile: dict[str, Path]) -> None:
    """--operator-key /dev/zero is an error, not a memory blow-up."""
    done = _run(
        "allworx-fleet", "send", "report", "--site", "s", "--serial", "x", "--broker", "mqtt://127.0.0.1:1",
        "--operator-key", str(hostile["zero"]), "--timeout", "1",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "not a regular file" in done.stderr


@pytest.mark.parametrize("name", ["boot.json", "identity.json", "trust/vendor-root.pub"])
def test_a_server_file_linked_to_a_device_fails_closed(server: Path, name: str) -> None:
    """A server file replaced by a link to /dev/zero stops status and upgrade with one error line."""
    target = server / name
    target.unlink()
    target.symlink_to("/dev/zero")
    before = tree_hash(server)
    for argv in (
        ("allworx-agent", "status", "--server-dir", str(server), "--now", "2010-01-01"),
        ("allworx-agent", "upgrade", "--server-dir", str(server), "--to", "7.1", "--now", "2010-01-01"),
    ):
        done = _run(*argv)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: "), done.stderr
        assert "Traceback" not in done.stderr
    assert tree_hash(server) == before


def test_a_slot_folder_linked_out_of_the_server_is_never_written(server: Path, tmp_path: Path) -> None:
    """slots/b as a link to a folder outside: the upgrade refuses (STATE_INVALID) and writes nothing there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    slot = server / "slots" / "b"
    for child in sorted(slot.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    slot.rmdir()
    slot.symlink_to(outside)
    done = _run("allworx-agent", "upgrade", "--server-dir", str(server), "--to", "7.1", "--now", "2010-01-01")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: STATE_INVALID: "), done.stderr
    assert list(outside.iterdir()) == []
