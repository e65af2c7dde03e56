"""The upgrade journal: JSON Lines, the first state written atomically, later states appended."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import crashpoints
from agent.crashpoints import FaultAt, PowerCut
from agent.journal import MAX_PERSISTS, Job, Journal, StepPosition
from common.errors import StoreError
from common.reasons import Reason


def job(state: str = "idle") -> Job:
    return Job("j1", state, "8.0", "7.1", "7.1.4.7", "7.0", "7.0.0.18", "a", "b", "2024-03-01T00:00:00")


def _with(**fields: object) -> bytes:
    """A whole journal line of a job with ``fields`` changed or added."""
    from dataclasses import asdict

    return json.dumps({**asdict(job("staged")), **fields}).encode() + b"\n"


def test_a_whole_line_reads_back_as_the_job_it_saved(tmp_path: Path) -> None:
    """A saved job, with its step position and error, loads equal (the line is the typed document)."""
    journal, current = Journal(tmp_path / "journal.json"), job("rolling_back")
    current.extra = {"step": 2, "steps": 3}
    current.error = {"reason": "NO_SPACE", "message": "the disk is full"}
    journal.save(current)
    assert journal.load() == current


def test_each_state_after_the_first_is_one_appended_line(tmp_path: Path) -> None:
    """The first save creates the file (a plain JSON document); each later one appends a line."""
    journal, current = Journal(tmp_path / "journal.json"), job()
    journal.save(current)
    assert json.loads(journal.path.read_bytes())["state"] == "idle"  # one state: plain JSON
    inode = journal.path.stat().st_ino
    for state in ("downloading", "staged", "writing_slot"):
        current.state = state
        journal.save(current)
    assert journal.path.stat().st_ino == inode  # appended, never renamed over
    lines = [json.loads(line) for line in journal.path.read_bytes().split(b"\n") if line]
    assert [line["state"] for line in lines] == ["idle", "downloading", "staged", "writing_slot"]
    loaded = journal.load()
    assert loaded is not None and (loaded.state, loaded.persist_count) == ("writing_slot", 4)
    journal.clear()
    assert journal.load() is None and not journal.path.exists()


def test_a_torn_append_reads_as_the_state_before_and_the_next_append_is_whole(tmp_path: Path) -> None:
    """A cut mid-append: load returns the previous state; the next save starts a line of its own."""
    journal, current = Journal(tmp_path / "journal.json"), job()
    journal.save(current)
    current.state = "staged"
    with crashpoints.injecting(FaultAt("journal.write")), pytest.raises(PowerCut):
        journal.save(current)
    assert not journal.path.read_bytes().endswith(b"\n")  # torn
    loaded = journal.load()
    assert loaded is not None and loaded.state == "idle"
    loaded.state = "downloading"
    journal.save(loaded)
    after = journal.load()
    assert after is not None and (after.state, after.persist_count) == ("downloading", 2)


def test_an_append_the_disk_refuses_is_cut_back_off(tmp_path: Path) -> None:
    """ENOSPC mid-append: StoreError(NO_SPACE), and the file is byte for byte as before."""
    journal, current = Journal(tmp_path / "journal.json"), job()
    journal.save(current)
    before = journal.path.read_bytes()

    def full(point: str) -> None:
        if point == "journal.write":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    current.state = "staged"
    with crashpoints.injecting(full), pytest.raises(StoreError) as caught:
        journal.save(current)
    assert caught.value.reason is Reason.NO_SPACE
    assert journal.path.read_bytes() == before


def test_a_long_journal_is_rewritten_with_its_latest_state(tmp_path: Path) -> None:
    """Past COMPACT_BYTES a save rewrites the file atomically with the latest state alone."""
    journal, current = Journal(tmp_path / "journal.json"), job()
    current.phone_firmware = "x" * 2000  # a long line
    saves = Journal.COMPACT_BYTES // 2000 + 2
    for n in range(saves):
        current.state = f"s{n}"
        journal.save(current)
    lines = [line for line in journal.path.read_bytes().split(b"\n") if line]
    assert len(lines) < saves
    loaded = journal.load()
    assert loaded is not None and (loaded.state, loaded.persist_count) == (f"s{saves - 1}", saves)


@pytest.mark.parametrize(
    "content",
    [
        b'{"job_id": "x", "sta',
        b"\x00" * 40,
        b'["a list"]\n',
        b'{"state": 3}\n',
        b'{"job_id": "x", "state": "idle"}\n',
        _with(extra={"step": "one"}),
        _with(error={"reason": 7}),
        _with(unknown_field=1),
    ],
    ids=[
        "torn-only",
        "zeros",
        "not-an-object",
        "wrong-type",
        "missing-fields",
        "mistyped-step",
        "mistyped-error",
        "unknown-field",
    ],
)
def test_a_journal_with_no_whole_state_reads_as_unknown(tmp_path: Path, content: bytes) -> None:
    """Nothing readable (or an alien document): the unknown job, which rolls back."""
    path = tmp_path / "journal.json"
    path.write_bytes(content)
    loaded = Journal(path).load()
    assert loaded is not None and loaded.state == "unknown" and loaded.persist_count == MAX_PERSISTS
    assert loaded.error is not None and loaded.error["reason"] == Reason.JOURNAL_UNREADABLE.value


@settings(max_examples=60, deadline=None)
@given(
    states=st.lists(st.sampled_from(["idle", "staged", "committing"]), min_size=1, max_size=12), cut=st.data()
)
def test_load_returns_the_last_whole_state_wherever_an_append_is_cut(
    states: list[str], cut: st.DataObject
) -> None:
    """Property: after saves and one torn append at any byte, load returns the last saved state."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        journal, current = Journal(Path(folder) / "journal.json"), job()
        for state in states:
            current.state = state
            journal.save(current)
        whole = journal.path.read_bytes()
        current.state = "rolling_back"
        line = b"\n" + json.dumps({"state": "rolling_back", "job_id": "j1"}).encode() + b"\n"
        keep = cut.draw(st.integers(0, len(line) - 2))  # never the whole line
        journal.path.write_bytes(whole + line[:keep])
        loaded = journal.load()
        assert loaded is not None and (loaded.state, loaded.persist_count) == (states[-1], len(states))


def test_an_earlier_agents_indented_journal_still_loads(tmp_path: Path) -> None:
    """A journal written whole and indented (as agents before JSON Lines did) reads as its state."""
    path = tmp_path / "journal.json"
    document = {**job("staged").__dict__, "persist_count": 3}
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    loaded = Journal(path).load()
    assert loaded is not None and (loaded.state, loaded.persist_count) == ("staged", 3)
    loaded.state = "writing_slot"
    Journal(path).save(loaded)  # appended after the indented document: still read as the last state
    again = Journal(path).load()
    assert again is not None and (again.state, again.persist_count) == ("writing_slot", 4)


def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write may write fewer bytes than asked: the append writes the rest, never a torn line."""
    journal, current = Journal(tmp_path / "journal.json"), job()
    journal.save(current)
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:3])))
    current.state = "staged"
    journal.save(current)
    monkeypatch.undo()
    assert journal.path.read_bytes().endswith(b"}\n")
    loaded = journal.load()
    assert loaded is not None and (loaded.state, loaded.persist_count) == ("staged", 2)


def _fields(current: Job) -> dict[str, object]:
    """The job's fields as the journal line carries them."""
    return {name: getattr(current, name) for name in Job.__dataclass_fields__}


_TEXT = st.text(max_size=12)  # any characters: the encoder escapes them (non-ASCII, quotes, controls)


@settings(max_examples=200, deadline=None)
@given(
    strings=st.lists(_TEXT, min_size=11, max_size=11),
    numbers=st.tuples(st.integers(), st.integers(0, 10**12)),
    rebuilds=st.one_of(st.booleans(), st.integers(0, 1)),
    error=st.one_of(st.none(), st.dictionaries(st.sampled_from(["reason", "message"]), _TEXT)),
    extra=st.one_of(
        st.fixed_dictionaries({"step": st.integers(), "steps": st.integers()}),
        st.fixed_dictionaries({}, optional={"step": st.integers(), "steps": st.booleans()}),
    ),
)
def test_a_saved_line_is_the_encoders_json_of_the_jobs_fields(
    strings: list[str],
    numbers: tuple[int, int],
    rebuilds: bool,
    error: dict[str, str] | None,
    extra: StepPosition,
) -> None:
    """Property: the file holds ``json.dumps`` of the job's fields (keys sorted), byte for byte,
    for the first state written whole and for each appended one."""
    import tempfile

    (job_id, state, target, release, build, from_release, from_build, old, new, started, phones) = strings
    current = Job(job_id, state, target, release, build, from_release, from_build, old, new, started)
    current.persist_count, current.db_schema = numbers
    current.rebuilds_database, current.error, current.extra, current.phone_firmware = (
        rebuilds, error, extra, phones
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(Path(folder) / "journal.json")
        journal.save(current)
        first = json.dumps(_fields(current), sort_keys=True).encode()
        assert journal.path.read_bytes() == first + b"\n"
        current.state = state + "2"
        journal.save(current)
        second = json.dumps(_fields(current), sort_keys=True).encode()
        assert journal.path.read_bytes() == first + b"\n\n" + second + b"\n"


def test_every_save_on_the_default_disk_is_flushed_after_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default (durable) journal fsyncs each state once its whole line is written: the first
    (its temp file, then the folder) and every appended one."""
    journal, current = Journal(tmp_path / "journal.json"), job()
    flushed: list[int] = []  # the size of the flushed file (-1: a folder)
    real = os.fsync

    def recording(fd: int) -> None:
        info = os.fstat(fd)
        flushed.append(-1 if stat.S_ISDIR(info.st_mode) else info.st_size)
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    sizes = []
    for state in ("idle", "downloading", "staged"):
        current.state = state
        journal.save(current)
        sizes.append(journal.path.stat().st_size)
    assert flushed == [sizes[0], -1, sizes[1], sizes[2]]
