"""The one file-I/O module: atomic writes through a Disk, durable unless the caller gives another."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.crashpoints import FaultAt, PowerCut, injecting
from agent.events import CommandAnswered
from agent.fileio import DURABLE, DurableDisk, write_atomic, write_json
from agent.keys import install_revocation_list
from agent.mqtt.messages import EventRecord
from agent.mqtt.outbox import Outbox
from simulator.keyring import VendorKeyring

TODAY = date(2020, 1, 1)


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every ``os.fsync`` as "file" or "folder" (what the flushed descriptor is)."""
    kinds: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        kinds.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return kinds


def test_the_default_disk_is_durable() -> None:
    """The default every writer falls back on is the durable disk."""
    assert type(DURABLE) is DurableDisk


def test_an_atomic_write_flushes_the_file_then_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write is a temp file flushed, renamed over the target, and the folder flushed."""
    kinds = _record_fsyncs(monkeypatch)
    write_json(tmp_path / "doc.json", {"a": 1})
    write_json(tmp_path / "doc.json", {"a": 2})
    assert kinds == ["file", "folder", "file", "folder"]
    assert (tmp_path / "doc.json").read_text() == '{\n "a": 2\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]


def test_an_outbox_append_is_flushed_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event is flushed to disk before the append returns."""
    with Outbox(tmp_path / "outbox") as outbox:
        kinds = _record_fsyncs(monkeypatch)
        answered = CommandAnswered(command="report", client_token="t1", status="accepted")
        outbox.append(EventRecord(at=datetime(2010, 1, 1, tzinfo=UTC), event=answered))
        assert kinds == ["file"]


def test_installing_a_revocation_list_flushes_the_trust_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revocation list is written like every other file: the file and then its folder flushed."""
    vendor = VendorKeyring.load_or_create(tmp_path / "vendor")
    vendor.write_trust(tmp_path / "trust")
    text = vendor.revoke("MNT-A-00000001", TODAY)
    kinds = _record_fsyncs(monkeypatch)
    install_revocation_list(tmp_path / "trust", text, TODAY)
    assert kinds == ["file", "folder"]


def test_a_shared_write_cut_mid_way_leaves_its_own_temp_and_the_old_file(tmp_path: Path) -> None:
    """A write that other processes may race uses a temp file of its own; a cut leaves the target whole."""
    path = tmp_path / "index.json"
    write_atomic(path, b"old", shared=True)
    with injecting(FaultAt("keys.install")), pytest.raises(PowerCut):
        write_atomic(path, b"new bytes", point="keys.install", shared=True)
    assert path.read_bytes() == b"old"
    (leftover,) = [p.name for p in tmp_path.iterdir() if p != path]
    assert leftover.startswith(".index.json-")
    assert leftover.endswith(".tmp")


def test_a_bounded_read_refuses_a_file_past_its_limit(tmp_path: Path) -> None:
    """A file larger than the limit is refused whole; one at the limit reads."""
    from agent.fileio import read_bounded
    from common.errors import StoreError

    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100) == b"x" * 100
    with pytest.raises(StoreError, match="larger than 99 bytes"):
        read_bounded(path, 99)


def test_a_durable_write_starts_the_temp_anew_and_leaves_none(tmp_path: Path) -> None:
    """A torn temp file left by a cut is truncated by the next write, which leaves no temp behind."""
    path = tmp_path / "boot.json"
    write_atomic(path, b'{"active": "a"}')
    (tmp_path / ".boot.json.tmp").write_bytes(b'{"active": "b", "torn": "and longer than the next"')
    write_atomic(path, b'{"active": "b"}')
    assert path.read_bytes() == b'{"active": "b"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot.json"]


def test_a_durable_write_cut_mid_way_leaves_half_the_new_document_in_the_temp(tmp_path: Path) -> None:
    """The crash point fires with half of the new document in the temp file; the target stays whole."""
    path = tmp_path / "boot.json"
    write_atomic(path, b'{"active": "a", "pad": "an older and longer document"}')
    new = b'{"active": "b", "pad": "the new one"}'
    fault = FaultAt("boot.switch")
    with injecting(fault), pytest.raises(PowerCut):
        write_atomic(path, new, point="boot.switch")
    assert fault.fired
    assert path.read_bytes() == b'{"active": "a", "pad": "an older and longer document"}'
    assert (tmp_path / ".boot.json.tmp").read_bytes() == new[: len(new) // 2]


def test_the_durable_disk_removes_a_file_outright(tmp_path: Path) -> None:
    """Removing unlinks the file and keeps nothing under its temp name; a missing file is no error."""
    path = tmp_path / "journal.json"
    write_atomic(path, b"{}")
    DURABLE.remove(path)
    DURABLE.remove(path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "indented"])
def test_a_json_document_is_written_as_json_dumps_writes_it(tmp_path: Path, compact: bool) -> None:
    """write_json's bytes are ``json.dumps`` of the document, keys sorted at every level (compact, or
    indented by one), and a newline."""
    document = {"z": [1, {"b": None, "a": "é"}], "a": {"y": True, "x": 1.5}}
    write_json(tmp_path / "doc.json", document, compact=compact)
    text = json.dumps(document, sort_keys=True) if compact else json.dumps(document, indent=1, sort_keys=True)
    assert (tmp_path / "doc.json").read_bytes() == text.encode() + b"\n"
