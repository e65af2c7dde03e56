"""Fail closed on persisted state: a value out of range in boot.json, a slot descriptor,
identity.json or the journal's last whole state is an error (STATE_INVALID, the file and the field),
never a default, and nothing on the server is written (agent/persisted.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.clock import SimClock
from agent.journal import Job
from agent.status import status_document
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.errors import StoreError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server
from tests.helpers import tree_hash

NOW = datetime(2016, 1, 1, tzinfo=UTC)
COMMITTED, NEXT = "7.3", "7.4"  # the template is committed on 7.3 in slot b
CATALOG = default_catalog()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, keyring: VendorKeyring) -> ServerDir:
    """A 6x upgraded from 7.2 to 7.3 (so committed in slot b), with a maintenance key valid on NOW."""
    spec = ServerSpec("6x", "7.2", users=6, call_log_rows=60, shipped=date(2010, 9, 1))
    made = create_server(tmp_path_factory.mktemp("fail-closed") / "box", spec, keyring=keyring)
    key = issue_key(keyring, serial=made.identity().serial, kind="maintenance", plan="anytime-1y",
                    start=NOW.date())  # fmt: skip
    assert made.install_key(key, NOW.date()).valid
    result = asyncio.run(upgrader(made).upgrade(COMMITTED))
    assert result.outcome == "succeeded"
    assert made.active_slot() == "b"
    return made


def upgrader(server: ServerDir) -> Upgrader:
    return Upgrader(server, CATALOG, SimClock(NOW, speed=float("inf")))


def edit_json(relative: str, **changes: Any) -> Callable[[Path], None]:
    """A damage: set fields of a JSON file (``...`` as the value removes the field)."""

    def damage(root: Path) -> None:
        path = root / relative
        document = json.loads(path.read_bytes())
        for name, value in changes.items():
            if value is ...:
                document.pop(name)
            else:
                document[name] = value
        path.write_text(json.dumps(document))

    return damage


def garble(relative: str) -> Callable[[Path], None]:
    """A damage: bytes that are not JSON over the whole file."""

    def damage(root: Path) -> None:
        (root / relative).write_bytes(b"\x00\xff{not json")

    return damage


def journal_line(**changes: Any) -> Callable[[Path], None]:
    """A damage: a journal whose one whole state is a step 7.3 -> 7.4 in trial, with ``changes``."""

    def damage(root: Path) -> None:
        step = CATALOG.release(NEXT)
        job = Job("a1b2c3d4e5f6", "trial_boot", NEXT, NEXT, step.build, COMMITTED,
                  CATALOG.release(COMMITTED).build, "b", "a", NOW.isoformat(), persist_count=9,
                  db_schema=step.db_schema, phone_firmware=step.phone_firmware)  # fmt: skip
        document = {**asdict(job), **changes}
        (root / "journal.json").write_text(json.dumps(document) + "\n")

    return damage


BOOT, SLOT, IDENTITY, JOURNAL = "boot.json", "slots/b/release.json", "identity.json", "journal.json"
CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # the review's case: a committed 7.3 in slot b must not read as 7.2 in slot a
    "boot-active-upper-case": (edit_json(BOOT, active="B"), BOOT, "'active'"),
    "boot-active-missing": (edit_json(BOOT, active=...), BOOT, "'active'"),
    "boot-trial-no-slot": (edit_json(BOOT, trial="c"), BOOT, "'trial'"),
    "boot-trial-is-active": (edit_json(BOOT, trial="b"), BOOT, "'trial'"),
    "boot-attempts-past-max": (edit_json(BOOT, attempts=7), BOOT, "'attempts'"),
    "boot-attempts-text": (edit_json(BOOT, attempts="1"), BOOT, "'attempts'"),
    "boot-max-attempts-zero": (edit_json(BOOT, max_attempts=0), BOOT, "'max_attempts'"),
    "boot-alien-field": (edit_json(BOOT, debug=True), BOOT, "'debug'"),
    "boot-not-json": (garble(BOOT), BOOT, "not JSON"),
    "slot-version": (edit_json(SLOT, version="7.x"), SLOT, "'version'"),
    "slot-build-path": (edit_json(SLOT, build="../../7"), SLOT, "'build'"),
    "slot-schema-negative": (edit_json(SLOT, db_schema=-1), SLOT, "'db_schema'"),
    "slot-schema-text": (edit_json(SLOT, db_schema="12"), SLOT, "'db_schema'"),
    "slot-not-json": (garble(SLOT), SLOT, "not JSON"),
    "identity-serial": (edit_json(IDENTITY, serial="AWX 1/2"), IDENTITY, "'serial'"),
    "identity-site": (edit_json(IDENTITY, site="hq/+"), IDENTITY, "'site'"),
    "identity-mac": (edit_json(IDENTITY, mac="not-a-mac"), IDENTITY, "'mac'"),
    "journal-state": (journal_line(state="comitted"), JOURNAL, "'state'"),
    "journal-new-slot": (journal_line(new_slot="c"), JOURNAL, "'new_slot'"),
    "journal-same-slots": (journal_line(new_slot="b"), JOURNAL, "'new_slot'"),
    "journal-build-path": (journal_line(build="../../x"), JOURNAL, "'build'"),
    "journal-count": (journal_line(persist_count=-5), JOURNAL, "'persist_count'"),
    "journal-error-reason": (
        journal_line(error={"reason": "NOPE", "message": "m"}),
        JOURNAL,
        "'error.reason'",
    ),
}


@pytest.fixture
def copy(template: ServerDir, tmp_path: Path) -> ServerDir:
    shutil.copytree(template.root, tmp_path / "box", symlinks=True)
    return ServerDir(tmp_path / "box")


@pytest.mark.parametrize("case", list(CASES))
async def test_a_value_out_of_range_is_state_invalid_and_nothing_is_written(
    copy: ServerDir, case: str
) -> None:
    """Status and upgrade both fail with STATE_INVALID naming the file and the field; no byte changes."""
    damage, file, field = CASES[case]
    damage(copy.root)
    before = tree_hash(copy.root)
    with pytest.raises(StoreError) as status_error:
        status_document(ServerDir(copy.root), NOW)
    with pytest.raises(StoreError) as upgrade_error:
        await upgrader(ServerDir(copy.root)).upgrade(NEXT)
    for error in (status_error.value, upgrade_error.value):
        assert error.reason is Reason.STATE_INVALID
        assert file in str(error)
        assert field in str(error)
    assert tree_hash(copy.root) == before


async def test_the_same_journal_state_in_range_is_resumed(copy: ServerDir) -> None:
    """The control of the journal cases: the undamaged state is read and the step finishes."""
    journal_line()(copy.root)
    job = copy.check_state()
    assert job is not None
    assert job.state == "trial_boot"
    step = await upgrader(copy).recover()
    assert step is not None
    assert step.outcome == "failed"  # slot a was never switched to: the trial boot fails, rolled back
    assert copy.journal.load() is None


async def test_a_torn_last_journal_line_still_reads_as_the_state_before(copy: ServerDir) -> None:
    """The power-cut artefact keeps working: a torn last line after a whole state is skipped."""
    journal_line()(copy.root)
    with (copy.root / JOURNAL).open("ab") as handle:
        handle.write(b'\n{"job_id": "a1b2c3d4e5f6", "state": "commi')
    job = copy.check_state()
    assert job is not None
    assert job.state == "trial_boot"
