"""Power cut at every crash point of the registry, restart, check: never bricked, nothing lost.

Three kinds of step: a plain step (same schema: a verified copy), the 7.1 rebuild (DB-1) and a
schema-migrating step (DB-2). Each case is a list of cuts, one per power-on: the first power-on
runs ``upgrade``, every later one a fresh agent that runs ``recover`` and then ``upgrade`` again
(the agent's memory is lost in a cut). After every cut the server, exactly as the cut left it,
must boot its committed slot and hold every record and key; at the end it must be committed on the
target (or rolled back on the old release, where the case says so) with every record and key.

A case's cut must really happen (its injector fires), and the table must cut every point declared
in :data:`agent.crashpoints.REGISTRY`: a point added without a case fails
:func:`test_the_table_cuts_every_registered_point`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import crashpoints
from agent.clock import SimClock
from agent.crashpoints import REGISTRY, FaultAt, PowerCut
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.chaos import CHAOS_LIMITS, Auditor, run_chaos, snapshot
from simulator.cli import main as sim_main
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.publish import default_repository
from simulator.server import ServerSpec, create_server

NOW = datetime(2016, 1, 1, tzinfo=UTC)
KINDS: dict[str, tuple[str, str]] = {  # kind -> (from, to)
    "plain": ("7.3", "7.4"),  # schema 21 -> 21: a verified copy of the database
    "rebuild": ("7.0", "7.1"),  # rule DB-1: a complete new build of the database
    "migrate": ("7.2", "7.3"),  # rule DB-2: schema 20 -> 21, migrated in a copy
}
PERSISTED = ("staging", "staged", "preparing_db", "db_ready", "writing_slot", "slot_written",
             "switching", "trial_boot", "committing", "committed")  # fmt: skip


@dataclass(frozen=True)
class Case:
    """Cuts, one per power-on: ``(point, nth hit)``; and how the step must end."""

    name: str
    cuts: tuple[tuple[str, int], ...]
    ends: str = "committed"  # committed | rolled_back
    reason: Reason | None = None  # the rolled-back step's reason
    after_commit: bool = False  # the first cut falls after the commit point


THREE_FAILED_BOOTS = (("boot.trial", 1),) * 3
CASES: tuple[Case, ...] = (
    *(
        Case(f"journal_write_persisting_{state}", (("journal.write", n),), after_commit=state == "committed")
        for n, state in enumerate(PERSISTED, start=1)
    ),
    Case("mid_download", (("stage.download", 2),)),
    Case("last_chunk_downloaded", (("stage.download", 4),)),
    Case("staged_image_not_yet_renamed", (("stage.promote", 1),)),
    Case("image_verified_state_not_persisted", (("stage.verified", 1),)),
    Case("mid_database_export", (("db.export", 1),)),
    Case("mid_rebuild", (("db.rebuild", 1),)),
    Case("database_verified", (("db.verified", 1),)),
    Case("mid_slot_write", (("slot.write", 1),)),
    Case("between_rebuild_and_switch", (("slot.written", 1),)),
    Case("mid_bootloader_switch", (("boot.switch", 1),)),
    Case("mid_boot_attempt_count", (("boot.attempt", 1),)),
    Case("after_switch_before_commit", (("boot.trial", 1),)),
    Case("during_commit", (("commit", 1),)),
    Case("finishing", (("finish", 1),), after_commit=True),
    Case("again_during_recovery", (("db.rebuild", 1), ("recover", 1))),
    Case("three_in_recovery", (("slot.write", 1), ("recover", 1), ("journal.write", 1), ("recover", 1))),
    Case("three_failed_boots_fall_back", THREE_FAILED_BOOTS, "rolled_back", Reason.BOOT_CHECK_FAILED),
    Case("during_rollback", (*THREE_FAILED_BOOTS, ("rollback", 1)), "rolled_back", Reason.BOOT_CHECK_FAILED),
)
KEY_CASES = ("keys.install",)  # cut in test_cut_mid_key_install_keeps_every_key


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory, keyring: VendorKeyring) -> dict[str, Path]:
    """One server per kind, with a maintenance key; each case works on a copy."""
    base = tmp_path_factory.mktemp("templates")
    made = {}
    for kind, (release, _target) in KINDS.items():
        spec = ServerSpec("6x", release, users=6, call_log_rows=60, shipped=date(2009, 6, 1))
        server = create_server(base / kind, spec, keyring=keyring)
        key = issue_key(keyring, serial=server.identity().serial, kind="maintenance", plan="anytime-1y",
                        start=NOW.date())  # fmt: skip
        assert server.install_key(key, NOW.date()).valid
        made[kind] = server.root
    return made


@pytest.fixture(scope="module")
def auditor(keyring: VendorKeyring) -> Auditor:
    """The chaos simulator's audit: bootable active slot, records and keys as before."""
    return Auditor(default_repository(keyring), keyring.root_public, NOW)


def agent(root: Path) -> Upgrader:
    """A fresh agent on ``root`` (what a power-on starts)."""
    clock = SimClock(NOW, speed=float("inf"))
    return Upgrader(ServerDir(root), default_catalog(), clock, limits=CHAOS_LIMITS)


async def run_with_cuts(root: Path, target: str, case: Case, auditor: Auditor) -> tuple[str, Reason | None]:
    """Run ``case``'s power-ons; check the server after each cut; return how the step ended."""
    before = snapshot(ServerDir(root))
    for turn, (point, nth) in enumerate((*case.cuts, ("", 0))):
        injector = FaultAt(point, nth) if point else None
        try:
            with crashpoints.injecting(injector or (lambda _point: None)):
                recovered = await agent(root).recover() if turn else None
                if recovered is not None and recovered.outcome != "committed":
                    assert injector is None, f"cut {point}:{nth} never happened (turn {turn})"
                    return "rolled_back", recovered.refusal.reason if recovered.refusal else None
                result = await agent(root).upgrade(target)
        except PowerCut:
            assert injector is not None and injector.fired
            release = ServerDir(root).committed().version
            first = {target} if case.after_commit else {before.release}
            expected = first if turn == 0 else {before.release, target}
            assert release in expected, f"on {release} after cut {turn}"
            assert auditor.problems(ServerDir(root), before, finished=False) == {}, f"after cut {turn}"
            continue
        assert injector is None, f"cut {point}:{nth} never happened (turn {turn})"
        last = result.steps[-1].refusal if result.steps else None
        return ("committed", None) if result.outcome == "succeeded" else ("rolled_back", last and last.reason)
    raise AssertionError("unreachable: the last power-on has no cut")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_power_cut_then_restart_ends_committed_or_rolled_back_intact(
    tmp_path: Path, templates: dict[str, Path], auditor: Auditor, kind: str, case: Case
) -> None:
    """A cut at this point, restart, finish: the step ends as the case says, nothing lost, never bricked."""
    root = tmp_path / "box"
    shutil.copytree(templates[kind], root)
    before = snapshot(ServerDir(root))
    source, target = KINDS[kind]
    ended, reason = await run_with_cuts(root, target, case, auditor)
    server = ServerDir(root)
    assert (ended, reason) == (case.ends, case.reason)
    assert server.committed().version == (target if case.ends == "committed" else source)
    assert auditor.problems(server, before, finished=True) == {}
    assert server.journal.load() is None


async def test_an_uncut_step_reaches_exactly_the_points_the_table_cuts(
    tmp_path: Path, templates: dict[str, Path]
) -> None:
    """Every point an upgrade step reaches has a case, with the hit counts the cases assume."""
    cut_first = {point for case in CASES for point, _ in case.cuts[:1]}
    for kind, (_source, target) in KINDS.items():
        shutil.copytree(templates[kind], tmp_path / kind)
        recorder = FaultAt("keys.install", nth=10**6)  # never fires: it only counts
        with crashpoints.injecting(recorder):
            result = await agent(tmp_path / kind).upgrade(target)
        assert result.outcome == "succeeded"
        assert set(recorder.hits) == cut_first, kind
        assert recorder.hits["journal.write"] == len(PERSISTED)
        assert recorder.hits["stage.download"] == 4  # 256 KiB image in 64 KiB chunks


def test_the_table_cuts_every_registered_point() -> None:
    """A crash point added to the registry without a case here fails this test."""
    cut = {point for case in CASES for point, _ in case.cuts} | set(KEY_CASES)
    assert cut == set(REGISTRY)


async def test_cut_mid_key_install_keeps_every_key(templates: dict[str, Path], tmp_path: Path,
                                                   keyring: VendorKeyring) -> None:  # fmt: skip
    """A cut mid-install leaves the installed keys exactly as before; installing again works."""
    root = tmp_path / "box"
    shutil.copytree(templates["plain"], root)
    server = ServerDir(root)
    before = server.key_digest()
    key = issue_key(keyring, serial=server.identity().serial, kind="feature", feature="T1", start=NOW.date())
    injector = FaultAt("keys.install")
    with crashpoints.injecting(injector), pytest.raises(PowerCut):
        server.install_key(key, NOW.date())
    assert injector.fired
    assert server.key_digest() == before
    assert any(p.name.endswith(".key.tmp") for p in server.keys_dir.iterdir())  # the torn temp file
    assert server.install_key(key, NOW.date()).valid
    assert server.key_digest() != before
    assert len(server.installed_keys()) == 2


def test_a_small_chaos_run_bricks_nothing_and_loses_nothing() -> None:
    """40 servers, random cuts (several per upgrade, during recovery too): zero bricked, zero lost."""
    report = run_chaos(40, seed=1)
    assert {k: report[k] for k in ("servers", "bricked", "records_lost", "keys_lost", "errors")} == {
        "servers": 40, "bricked": 0, "records_lost": 0, "keys_lost": 0, "errors": 0,
    }  # fmt: skip
    assert report["committed"] + report["rolled_back"] == 40
    assert report["cuts"] > 40 and report["cuts_during_recovery"] > 0 and report["crossed_7_1"] > 0


def test_the_chaos_command_spreads_servers_over_workers() -> None:
    """`allworx-sim chaos --servers N --seed S --workers 2 --json` prints the report and exits 0."""
    outcome = CliRunner().invoke(
        sim_main, ["chaos", "--servers", "16", "--seed", "7", "--workers", "2", "--json"]
    )
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    assert (report["servers"], report["workers"], report["bricked"], report["records_lost"],
            report["keys_lost"]) == (16, 2, 0, 0, 0)  # fmt: skip
    same = run_chaos(16, seed=7)  # in this process: the seed alone decides every server's fate
    assert report == {**same, "seconds": report["seconds"], "workers": 2}
