"""The fleet verifier's folder fingerprints: kept by the files' status only once they settled, and
always equal to a fingerprint read from the bytes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from simulator.fleet import verifier
from simulator.fleet.verifier import Fingerprints, fingerprint

SETTLE = 0.05  # seconds: the tests' own settle time, waited out with a margin


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A keys folder with two key files, settled."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "a.key").write_bytes(b"alpha key")
    (keys / "b.key").write_bytes(b"bravo key")
    time.sleep(3 * SETTLE)
    return keys


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files read for a fingerprint, in order."""
    seen: list[str] = []
    original = verifier._read

    def noted(path: str) -> bytes | None:
        seen.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(verifier, "_read", noted)
    return seen


def test_a_settled_folder_is_not_read_again(folder: Path, reads: list[str]) -> None:
    """A second fingerprint of a settled, unchanged folder reads no file and equals the first."""
    prints = Fingerprints(8, settle=SETTLE)
    first = prints.digest(folder, ".key")
    count = len(reads)
    assert prints.digest(folder, ".key") == first
    assert len(reads) == count


def test_an_edit_keeping_size_inode_and_mtime_is_seen(folder: Path) -> None:
    """A file rewritten in place with the same size and its old modification time put back is read
    again (its change time moved)."""
    prints = Fingerprints(8, settle=SETTLE)
    prints.digest(folder, ".key")
    path = folder / "a.key"
    before = path.stat()
    with path.open("r+b") as handle:  # the same inode
        handle.write(b"ALPHA key")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert prints.digest(folder, ".key") == fingerprint(folder, ".key")


def test_a_new_or_removed_file_is_seen(folder: Path) -> None:
    """A key file added, then one removed, changes the fingerprint each time."""
    prints = Fingerprints(8, settle=SETTLE)
    first = prints.digest(folder, ".key")
    (folder / "c.key").write_bytes(b"charlie key")
    added = prints.digest(folder, ".key")
    assert added == fingerprint(folder, ".key")
    (folder / "a.key").unlink()
    removed = prints.digest(folder, ".key")
    assert removed == fingerprint(folder, ".key")
    assert len({first, added, removed}) == 3


def test_a_file_changed_within_the_settle_time_is_read_on_every_call(folder: Path, reads: list[str]) -> None:
    """A folder whose newest change is younger than the settle time is read again each call."""
    prints = Fingerprints(8, settle=60.0)
    (folder / "a.key").write_bytes(b"alpha key")
    prints.digest(folder, ".key")
    count = len(reads)
    prints.digest(folder, ".key")
    assert len(reads) == count + 2


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders listed for a fingerprint, in order."""
    seen: list[str] = []
    original = verifier._listing

    def noted(folder: Path, suffix: str) -> tuple[verifier.Listing, bool]:
        seen.append(folder.name)
        return original(folder, suffix)

    monkeypatch.setattr(verifier, "_listing", noted)
    return seen


def test_a_settled_unchanged_folder_is_not_listed_again(folder: Path, listings: list[str]) -> None:
    """A second fingerprint of a settled folder whose own status is unchanged takes its files' status
    by name, without listing the folder."""
    prints = Fingerprints(8, settle=SETTLE)
    first = prints.digest(folder, ".key")
    assert listings == ["keys"]
    assert prints.digest(folder, ".key") == first
    assert listings == ["keys"]


def test_a_file_replaced_by_a_rename_is_seen(folder: Path) -> None:
    """A key file replaced atomically (a new file renamed over it, as the agent writes) is read again."""
    prints = Fingerprints(8, settle=SETTLE)
    first = prints.digest(folder, ".key")
    (folder / ".a.key.tmp").write_bytes(b"alpha KEY")
    (folder / ".a.key.tmp").replace(folder / "a.key")
    after = prints.digest(folder, ".key")
    assert after != first
    assert after == fingerprint(folder, ".key")


def test_a_file_added_to_a_kept_folder_is_seen_at_once(folder: Path) -> None:
    """A key file added to a folder whose fingerprint is kept changes the fingerprint on the next call."""
    prints = Fingerprints(8, settle=SETTLE)
    first = prints.digest(folder, ".key")
    (folder / "c.key").write_bytes(b"charlie key")
    assert prints.digest(folder, ".key") != first


def test_a_link_that_comes_to_name_a_file_is_seen(folder: Path, tmp_path: Path) -> None:
    """A key name linking to a file not there yet counts once the file is made elsewhere, though
    that leaves the key folder's own times as they were."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "c.key").symlink_to(elsewhere / "c.key")
    time.sleep(3 * SETTLE)
    prints = Fingerprints(8, settle=SETTLE)
    first = prints.digest(folder, ".key")
    prints.digest(folder, ".key")
    (elsewhere / "c.key").write_bytes(b"charlie key")
    after = prints.digest(folder, ".key")
    assert after != first
    assert after == fingerprint(folder, ".key")
