"""Faults beside clean power cuts: torn files, a full disk, a corrupted Update Area, failed boot
checks, repeated failed boots and a crash loop. Each ends committed or rolled back, never bricked,
with every record and key as before (the chaos simulator's audit)."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from agent import crashpoints
from agent.bootloader import MAX_BOOT_ATTEMPTS
from agent.clock import SimClock
from agent.crashpoints import FaultAt, PowerCut
from agent.results import UpgradeResult
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.errors import StoreError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.chaos import CHAOS_LIMITS, Auditor, Snapshot, snapshot
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.publish import default_repository
from simulator.server import ServerSpec, create_server

NOW = datetime(2016, 1, 1, tzinfo=UTC)
SOURCE, TARGET = "7.2", "7.3"  # a schema-migrating step (DB-2)
TARGET_BUILD = default_catalog().release(TARGET).build


@pytest.fixture
def server(tmp_path: Path, keyring: VendorKeyring) -> ServerDir:
    """A 6x on 7.2 with a maintenance key valid on NOW."""
    spec = ServerSpec("6x", SOURCE, users=6, call_log_rows=60, shipped=date(2010, 9, 1))
    made = create_server(tmp_path / "box", spec, keyring=keyring)
    key = issue_key(keyring, serial=made.identity().serial, kind="maintenance", plan="anytime-1y",
                    start=NOW.date())  # fmt: skip
    assert made.install_key(key, NOW.date()).valid
    return made


@pytest.fixture
def before(server: ServerDir) -> Snapshot:
    """Records and keys before the upgrade."""
    return snapshot(server)


@pytest.fixture
def auditor(keyring: VendorKeyring) -> Auditor:
    """Bootable active slot, records and keys as before."""
    return Auditor(default_repository(keyring), keyring.root_public, NOW)


def agent(server: ServerDir) -> Upgrader:
    """A fresh agent (what a power-on starts)."""
    return Upgrader(ServerDir(server.root), default_catalog(), SimClock(NOW, speed=float("inf")),
                    limits=CHAOS_LIMITS)  # fmt: skip


def at(point: str, action: Callable[[], None], nth: int = 1) -> Callable[[str], None]:
    """An injector running ``action`` at the ``nth`` hit of ``point`` (a fault, not a cut)."""
    hits = {"n": 0}

    def inject(reached: str) -> None:
        if reached == point:
            hits["n"] += 1
            if hits["n"] == nth:
                action()

    return inject


def enospc(point: str) -> OSError:
    """The disk is full."""
    return OSError(errno.ENOSPC, "No space left on device", point)


def flip_byte(path: Path) -> None:
    """Corrupt one byte in the middle of ``path``."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def rolled_back(result: UpgradeResult) -> Reason | None:
    """The reason of the request's failed step, or None when it succeeded."""
    if result.outcome == "succeeded":
        return None
    refusal = result.steps[-1].refusal
    assert result.outcome == "failed" and refusal is not None
    return refusal.reason


def assert_intact(server: ServerDir, before: Snapshot, auditor: Auditor, release: str) -> None:
    """Not bricked, on ``release``, every record and key as before, nothing left half-done."""
    assert server.committed().version == release
    assert auditor.problems(server, before, finished=True) == {}


# --- torn writes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("point", "nth", "file", "old"),
    [("journal.write", 1, "journal.json", None), ("boot.switch", 1, "boot.json", {"trial": None})],
    ids=["journal-first-state", "bootloader"],
)
async def test_a_torn_temp_file_is_ignored_and_replaced(
    server: ServerDir, before: Snapshot, auditor: Auditor, point: str, nth: int, file: str,
    old: dict[str, Any] | None,
) -> None:  # fmt: skip
    """A cut mid-write leaves a half-written temp file; readers see the old file (or none, as before
    the step's first state); the restart finishes."""
    with crashpoints.injecting(FaultAt(point, nth)), pytest.raises(PowerCut):
        await agent(server).upgrade(TARGET)
    torn = server.root / f".{file}.tmp"
    with pytest.raises(ValueError):  # half a JSON document
        json.loads(torn.read_bytes())
    if old is None:
        assert not (server.root / file).exists() and server.journal.load() is None
    else:
        assert json.loads((server.root / file).read_bytes()).items() >= old.items()  # the previous one, whole
    assert rolled_back(await agent(server).upgrade(TARGET)) is None
    assert not torn.exists()  # the next write of that file replaced it
    assert_intact(server, before, auditor, TARGET)


async def test_a_torn_journal_append_is_skipped(
    server: ServerDir, before: Snapshot, auditor: Auditor
) -> None:
    """A cut mid-append leaves a torn last line: the journal reads as the state before it, the
    next append starts a line of its own, and the restart finishes the step."""
    with crashpoints.injecting(FaultAt("journal.write", 3)), pytest.raises(PowerCut):
        await agent(server).upgrade(TARGET)
    last = server.journal.path.read_bytes().rsplit(b"\n", 1)[-1]
    assert last.startswith(b'{"') and not last.endswith(b"}")  # half a document, no newline after it
    with pytest.raises(ValueError):
        json.loads(last)
    job = server.journal.load()
    assert job is not None and (job.state, job.persist_count) == ("staged", 2)
    assert rolled_back(await agent(server).upgrade(TARGET)) is None
    assert_intact(server, before, auditor, TARGET)


async def test_an_unreadable_journal_rolls_back_a_pending_trial(
    server: ServerDir, before: Snapshot, auditor: Auditor
) -> None:
    """Anything unknown rolls back: a garbled journal with a trial slot pending ends on the old release."""
    with crashpoints.injecting(FaultAt("boot.trial")), pytest.raises(PowerCut):
        await agent(server).upgrade(TARGET)
    assert server.bootloader.env().trial is not None
    server.journal.path.write_bytes(b'{"job_id": "x", "sta')  # not even JSON
    step = await agent(server).recover()
    assert step is not None and step.refusal is not None
    assert (step.outcome, step.refusal.reason) == ("failed", Reason.JOURNAL_UNREADABLE)
    assert_intact(server, before, auditor, SOURCE)


async def test_a_trial_slot_without_a_journal_is_forgotten(
    server: ServerDir, before: Snapshot, auditor: Auditor
) -> None:
    """A trial the journal knows nothing about is unknown: the bootloader forgets it on start."""
    with crashpoints.injecting(FaultAt("boot.trial")), pytest.raises(PowerCut):
        await agent(server).upgrade(TARGET)
    server.journal.clear()
    assert await agent(server).recover() is None
    assert server.bootloader.env().trial is None
    assert_intact(server, before, auditor, SOURCE)


# --- a full disk ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("point", "nth"),
    [("journal.write", 1), ("journal.write", 4), ("journal.write", 9), ("stage.download", 2),
     ("stage.promote", 1), ("stage.verified", 1), ("db.export", 1), ("db.rebuild", 1), ("db.verified", 1),
     ("slot.write", 1), ("slot.written", 1), ("boot.switch", 1), ("boot.attempt", 1), ("boot.trial", 1),
     ("commit", 1)],
)  # fmt: skip
async def test_a_full_disk_rolls_back_with_no_space(
    server: ServerDir, before: Snapshot, auditor: Auditor, point: str, nth: int
) -> None:
    """ENOSPC anywhere in the step ends it rolled back with NO_SPACE and the server as it was."""
    injector = FaultAt(point, nth, enospc)
    with crashpoints.injecting(injector):
        result = await agent(server).upgrade(TARGET)
    assert injector.fired
    assert rolled_back(result) is Reason.NO_SPACE
    assert_intact(server, before, auditor, SOURCE)
    assert server.journal.load() is None


async def test_a_full_disk_refuses_a_key_and_keeps_the_others(
    server: ServerDir, keyring: VendorKeyring
) -> None:
    """ENOSPC mid key install: NO_SPACE, the installed keys unchanged."""
    keys = server.key_digest()
    key = issue_key(keyring, serial=server.identity().serial, kind="feature", feature="T1", start=NOW.date())
    with crashpoints.injecting(FaultAt("keys.install", fault=enospc)), pytest.raises(StoreError) as caught:
        server.install_key(key, NOW.date())
    assert caught.value.reason is Reason.NO_SPACE
    assert server.key_digest() == keys


# --- a corrupted Update Area --------------------------------------------------------------------
def staged(server: ServerDir) -> Path:
    """The staged image of the target."""
    return server.update_area / f"{TARGET_BUILD}.img"


async def test_a_staged_image_corrupted_before_activation_is_fetched_again(
    server: ServerDir, before: Snapshot, auditor: Auditor
) -> None:
    """Re-verification before activation catches the flipped byte; the image is downloaded again."""
    with crashpoints.injecting(FaultAt("stage.verified")), pytest.raises(PowerCut):
        await agent(server).upgrade(TARGET)
    flip_byte(staged(server))  # while the power is off
    with crashpoints.injecting(at("journal.write", lambda: flip_byte(staged(server)), nth=2)):
        result = await agent(server).upgrade(TARGET)  # ... and again once staged (persisting "staged")
    assert rolled_back(result) is None
    assert_intact(server, before, auditor, TARGET)


async def test_a_staged_image_corrupted_during_activation_never_reaches_a_slot(
    server: ServerDir, before: Snapshot, auditor: Auditor
) -> None:
    """A byte flipped while the database is prepared: the slot write refuses it and the step rolls back."""
    with crashpoints.injecting(at("db.export", lambda: flip_byte(staged(server)))):
        result = await agent(server).upgrade(TARGET)
    assert rolled_back(result) is Reason.IMAGE_DIGEST_MISMATCH
    assert_intact(server, before, auditor, SOURCE)
    new_slot = server.bootloader.env().inactive
    assert server.slot_info(new_slot) is None
    assert not staged(server).exists()  # a retry downloads it again
    assert rolled_back(await agent(server).upgrade(TARGET)) is None


# --- failed boot checks, repeated failed boots, crash loop ---------------------------------------
def _corrupt_db(server: ServerDir) -> None:
    path = server.db_path(server.bootloader.env().inactive)
    path.write_bytes(b"not a database" * 100)


def _corrupt_image(server: ServerDir) -> None:
    flip_byte(server.slot_dir(server.bootloader.env().inactive) / "image.img")


def _wrong_version(server: ServerDir) -> None:
    slot = server.bootloader.env().inactive
    (server.slot_dir(slot) / "release.json").write_text(json.dumps({"version": "7.4", "build": "7.4.5.2",
                                                                    "db_schema": 21}))  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(_corrupt_db, Reason.BOOT_CHECK_FAILED), (_corrupt_image, Reason.IMAGE_DIGEST_MISMATCH),
     (_wrong_version, Reason.BOOT_CHECK_FAILED)],
    ids=["database_does_not_open", "image_does_not_verify", "version_does_not_match"],
)  # fmt: skip
@pytest.mark.parametrize("cut_rollback", [False, True], ids=["", "cut_mid_rollback"])
async def test_a_failed_boot_check_falls_back_to_the_old_slot(
    server: ServerDir, before: Snapshot, auditor: Auditor,
    damage: Callable[[ServerDir], None], reason: Reason, cut_rollback: bool,
) -> None:  # fmt: skip
    """The new slot is damaged after it was written: the trial boot fails and the old release stays."""
    faults = [at("slot.written", lambda: damage(server))]
    if cut_rollback:  # the power fails again mid-write of the bootloader's rollback
        faults.append(FaultAt("rollback", 2))

    def inject(point: str) -> None:
        for fault in faults:
            fault(point)

    try:
        with crashpoints.injecting(inject):
            result = await agent(server).upgrade(TARGET)
    except PowerCut:
        assert cut_rollback
        assert server.bootloader.env().trial is not None  # the torn write changed nothing yet
        step = await agent(server).recover()
        assert step is not None and step.refusal is not None
        assert step.refusal.reason is reason
    else:
        assert not cut_rollback
        assert rolled_back(result) is reason
    assert_intact(server, before, auditor, SOURCE)


async def test_a_database_damaged_right_after_its_build_fails_the_ready_check(
    server: ServerDir, before: Snapshot, auditor: Auditor
) -> None:
    """The run that built the new database skips re-checking it only while the file is unchanged."""
    with crashpoints.injecting(at("db.verified", lambda: _corrupt_db(server))):
        result = await agent(server).upgrade(TARGET)
    assert rolled_back(result) is Reason.DATABASE_VERIFY_FAILED  # the ready check, not the boot check
    assert_intact(server, before, auditor, SOURCE)


async def test_the_bootloader_falls_back_by_itself_after_max_failed_boots(server: ServerDir) -> None:
    """With no agent at all, power-ons of a trial slot stop after MAX_BOOT_ATTEMPTS: the old slot boots."""
    with crashpoints.injecting(FaultAt("boot.switch")), pytest.raises(PowerCut):
        await agent(server).upgrade(TARGET)  # a new slot written; the switch is done by hand below
    env = server.bootloader.env()
    server.bootloader.try_slot(env.inactive)
    booted = [server.bootloader.boot() for _ in range(MAX_BOOT_ATTEMPTS + 2)]
    assert booted == [env.inactive] * MAX_BOOT_ATTEMPTS + [env.active] * 2
    assert server.bootloader.env().trial is None


async def test_a_crash_loop_ends_rolled_back(server: ServerDir, before: Snapshot, auditor: Auditor) -> None:
    """Power fails mid-rebuild on every start: past 28 persisted steps the step rolls back (CRASH_LOOP)."""
    with crashpoints.injecting(FaultAt("db.rebuild")), pytest.raises(PowerCut):
        await agent(server).upgrade(TARGET)
    cuts, step = 1, None
    while step is None:
        try:
            with crashpoints.injecting(FaultAt("db.rebuild")):
                step = await agent(server).recover()
        except PowerCut:
            cuts += 1
            assert cuts < 40, "the crash-loop breaker never tripped"
    assert step.refusal is not None and step.refusal.reason is Reason.CRASH_LOOP
    assert 20 <= cuts <= 28
    assert_intact(server, before, auditor, SOURCE)


async def test_a_crash_loop_past_the_commit_point_finishes_committed(
    server: ServerDir, before: Snapshot, auditor: Auditor
) -> None:
    """Once the bootloader committed, the breaker finishes forward instead of rolling back."""
    with crashpoints.injecting(FaultAt("journal.write", 10)), pytest.raises(PowerCut):  # persisting committed
        await agent(server).upgrade(TARGET)
    job = server.journal.load()
    assert job is not None and job.state == "committing"
    server.journal.path.write_text(json.dumps({**asdict(job), "persist_count": 40}))
    step = await agent(server).recover()
    assert step is not None and step.outcome == "committed"
    assert server.offered_phone_firmware() == default_catalog().release(TARGET).phone_firmware
    assert_intact(server, before, auditor, TARGET)
