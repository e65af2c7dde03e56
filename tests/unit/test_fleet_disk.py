"""The fleet simulation's disk: no flush to stable storage, exchange renames, temp files used again,
files still old or new."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.crashpoints import FaultAt, PowerCut, injecting
from agent.events import CommandAnswered
from agent.fileio import read_bounded, read_json, write_atomic, write_json
from agent.journal import Job, Journal
from agent.mqtt.messages import EventRecord
from agent.mqtt.outbox import Outbox
from simulator.fleet import disk as fleet_disk
from simulator.fleet.disk import FastDisk


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_the_fast_disk_skips_fsync_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Atomic writes and outbox appends through it never fsync, and keep the rename and the data."""
    disk = FastDisk()
    calls = _count_fsyncs(monkeypatch)
    write_json(tmp_path / "doc.json", {"a": 1}, disk=disk)
    write_json(tmp_path / "doc.json", {"a": 2}, disk=disk)
    with Outbox(tmp_path / "outbox", disk=disk) as outbox:
        answered = CommandAnswered(command="report", client_token="t1", status="accepted")
        at = datetime(2010, 1, 1, tzinfo=UTC)
        outbox.append(EventRecord(at=at, event=answered))
    assert calls == []
    assert read_json(tmp_path / "doc.json") == {"a": 2}
    with Outbox(tmp_path / "outbox", disk=disk) as outbox:
        assert outbox.last_seq == 1


def _job(build: str) -> Job:
    return Job("j1", "staging", "8.0", "8.0", build, "7.1", "7.1.4.7", "a", "b", "2024-03-01T00:00:00")


def _exchanged(disk: FastDisk) -> list[str]:
    """Record the target name of every exchange ``disk`` makes."""
    assert disk.exchange is not None, "Linux with glibc 2.28 or later has renameat2"
    swaps: list[str] = []
    real = disk.exchange
    disk.exchange = lambda src, dst: swaps.append(Path(dst).name) or real(src, dst)
    return swaps


def test_a_write_over_a_file_swaps_the_names_and_keeps_the_old_file_as_the_temp(tmp_path: Path) -> None:
    """Over an existing file the two names are swapped (``renameat2`` exchange: no ext4 write-out
    forced by the rename) and the old file stays under the temp name; a new name is a plain rename."""
    disk = FastDisk()
    swaps = _exchanged(disk)
    path = tmp_path / "state.json"
    write_atomic(path, b"old", disk=disk)
    old_inode = path.stat().st_ino
    write_atomic(path, b"new", disk=disk)
    assert path.read_bytes() == b"new"
    assert (tmp_path / ".state.json.tmp").read_bytes() == b"old"
    assert (tmp_path / ".state.json.tmp").stat().st_ino == old_inode
    assert swaps == ["state.json", "state.json"]


def test_the_kept_temp_is_rewritten_in_place_without_a_stale_tail(tmp_path: Path) -> None:
    """Each write rewrites the kept temp file (the two inodes take turns, no file is created) and
    cuts it to the new length: a shorter document keeps nothing of a longer one."""
    disk = FastDisk()
    path = tmp_path / "state.json"
    write_atomic(path, b'{"state": "a long first document"}', disk=disk)
    write_atomic(path, b'{"state": "second, also long"}', disk=disk)
    inodes = {path.stat().st_ino, (tmp_path / ".state.json.tmp").stat().st_ino}
    for document in (b'{"s": 1}', b'{"state": "longer than the one before"}', b"{}"):
        write_atomic(path, document, disk=disk)
        assert path.read_bytes() == document
        assert {path.stat().st_ino, (tmp_path / ".state.json.tmp").stat().st_ino} == inodes
    assert sorted(p.name for p in tmp_path.iterdir()) == [".state.json.tmp", "state.json"]


def test_a_reader_sees_the_old_document_or_the_new_never_a_torn_one(tmp_path: Path) -> None:
    """A reader that opened the file before a write reads the old document whole; one that opens
    it after reads the new one whole, whatever the lengths."""
    disk = FastDisk()
    path = tmp_path / "doc.json"
    documents = [b"x" * n for n in (300, 20, 301, 1, 299, 5000, 7)]
    write_atomic(path, documents[0], disk=disk)
    write_atomic(path, documents[1], disk=disk)
    for before, after in itertools.pairwise(documents[1:]):
        with path.open("rb") as held:
            write_atomic(path, after, disk=disk)
            assert held.read() == before
        assert read_bounded(path) == after


def test_a_cut_mid_write_leaves_the_target_whole_and_the_temp_torn(tmp_path: Path) -> None:
    """The crash point fires mid-write of the kept temp (its first half new bytes, the rest old):
    the target stays the old document, and the next write replaces it whole."""
    disk = FastDisk()
    path = tmp_path / "journal.json"
    kept = b'{"state": "one", "pad": "the kept temp file holds this"}'
    write_atomic(path, kept, disk=disk)
    write_atomic(path, b'{"state": "two"}', disk=disk)
    fault = FaultAt("journal.write")
    cut = b'{"state": "three", "pad": "cut"}'
    with injecting(fault), pytest.raises(PowerCut):
        write_atomic(path, cut, point="journal.write", disk=disk)
    assert fault.fired
    assert read_json(path) == {"state": "two"}
    half = len(cut) // 2
    assert (tmp_path / ".journal.json.tmp").read_bytes() == cut[:half] + kept[half:]
    write_atomic(path, b'{"state": "four"}', disk=disk)
    assert read_json(path) == {"state": "four"}


def test_a_removed_file_becomes_the_temp_of_the_next_write(tmp_path: Path) -> None:
    """Removing renames the file to its temp name, which the next write of that name rewrites in
    place (no file created or unlinked); a missing file is no error."""
    disk = FastDisk()
    journal = Journal(tmp_path / "journal.json", disk=disk)
    journal.save(_job("8.0.1.1"))
    inode = journal.path.stat().st_ino
    journal.clear()
    assert journal.load() is None
    assert (tmp_path / ".journal.json.tmp").stat().st_ino == inode
    journal.clear()
    journal.save(_job("8.0.2.2"))
    assert journal.path.stat().st_ino == inode
    loaded = journal.load()
    assert loaded is not None
    assert loaded.build == "8.0.2.2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.json"]


def test_removing_a_file_beside_a_kept_temp_leaves_one_temp(tmp_path: Path) -> None:
    """When a temp file is already there, the removed file takes its name and the older one goes."""
    disk = FastDisk()
    path = tmp_path / "release.json"
    write_atomic(path, b"first", disk=disk)
    write_atomic(path, b"second", disk=disk)
    disk.remove(path)
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".release.json.tmp"]
    assert (tmp_path / ".release.json.tmp").read_bytes() == b"second"


def test_a_kill_between_the_exchange_and_the_unlink_leaves_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain replace (a staged image, a database) unlinks the old file after the exchange; a kill
    between the two leaves the new file in place and the old bytes under the temp name."""
    disk = FastDisk()
    swaps = _exchanged(disk)
    path, tmp = tmp_path / "image.img", tmp_path / ".image.img.tmp"
    path.write_bytes(b"old image")
    tmp.write_bytes(b"new image")

    def killed(_path: str) -> None:
        raise PowerCut("between exchange and unlink")

    monkeypatch.setattr(fleet_disk.os, "unlink", killed)
    with pytest.raises(PowerCut):
        disk.replace(tmp, path)
    monkeypatch.undo()
    assert path.read_bytes() == b"new image"
    assert tmp.read_bytes() == b"old image"
    tmp.write_bytes(b"next image")
    disk.replace(tmp, path)
    assert path.read_bytes() == b"next image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.img"]
    assert swaps == ["image.img", "image.img"]

    fresh = tmp_path / "fresh.tmp"  # a new name: nothing to exchange with, a plain rename
    fresh.write_bytes(b"first")
    inode = fresh.stat().st_ino
    disk.replace(fresh, tmp_path / "fresh.json")
    assert (tmp_path / "fresh.json").stat().st_ino == inode
    assert not fresh.exists()
