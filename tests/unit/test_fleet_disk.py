"""The fleet simulation's disk: no flush to stable storage, exchange renames, files still old or new."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.crashpoints import PowerCut
from agent.events import CommandAnswered
from agent.fileio import read_json, write_atomic, write_json
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
    assert not list(tmp_path.glob(".*.tmp"))
    with Outbox(tmp_path / "outbox", disk=disk) as outbox:
        assert outbox.last_seq == 1


def test_a_write_over_a_file_swaps_the_names_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over an existing file the two names are swapped (``renameat2`` exchange: no ext4 write-out
    forced by the rename) and the old file unlinked; a new name is a plain rename."""
    disk = FastDisk()
    assert disk.exchange is not None, "Linux with glibc 2.28 or later has renameat2"
    swaps: list[str] = []
    real = disk.exchange
    disk.exchange = lambda src, dst: swaps.append(Path(dst).name) or real(src, dst)
    path = tmp_path / "state.json"
    write_atomic(path, b"old", disk=disk)
    write_atomic(path, b"new", disk=disk)
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert swaps == ["state.json", "state.json"]

    tmp = tmp_path / "fresh.tmp"  # a new name: nothing to exchange with, a plain rename
    tmp.write_bytes(b"first")
    inode = tmp.stat().st_ino
    disk.replace(tmp, tmp_path / "fresh.json")
    assert (tmp_path / "fresh.json").read_bytes() == b"first"
    assert (tmp_path / "fresh.json").stat().st_ino == inode
    assert not tmp.exists()


def test_a_kill_between_the_exchange_and_the_unlink_leaves_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old bytes then sit in the temp file, which no reader opens and the next write truncates."""
    disk = FastDisk()
    assert disk.exchange is not None, "Linux with glibc 2.28 or later has renameat2"
    path = tmp_path / "state.json"
    write_atomic(path, b'{"state": "old"}', disk=disk)

    def killed(_path: str) -> None:
        raise PowerCut("between exchange and unlink")

    monkeypatch.setattr(fleet_disk.os, "unlink", killed)
    with pytest.raises(PowerCut):
        write_atomic(path, b'{"state": "new"}', disk=disk)
    monkeypatch.undo()
    assert read_json(path) == {"state": "new"}
    assert (tmp_path / ".state.json.tmp").read_bytes() == b'{"state": "old"}'
    write_atomic(path, b'{"state": "next"}', disk=disk)
    assert read_json(path) == {"state": "next"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
