"""A real agent takes no shortcut: built with its defaults (as ``allworx-agent`` builds it), every
write is flushed through the durable disk and everything is verified again at every use; no module
of the agent keeps a memory between calls."""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import agent
from agent import crypto
from agent.cli import main as agent_cli
from agent.cliutil import open_server
from agent.clock import SimClock
from agent.crashpoints import injecting
from agent.database import tmp_path as build_path
from agent.events import AgentEvent, CommandAnswered, Progress
from agent.fileio import DurableDisk
from agent.journal import Journal
from agent.mqtt.connection import BrokerSettings
from agent.mqtt.daemon import Agent, AgentOptions
from agent.mqtt.messages import EventRecord
from agent.store import ServerDir
from agent.upgrader import Upgrader
from agent.verifier import DurableVerifier
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.fleet.host import HostConfig, host_servers
from simulator.fleet.verifier import RememberingVerifier
from simulator.keyring import VendorKeyring
from tests.helpers import keyed_server

NOW = datetime(2016, 1, 1, tzinfo=UTC)
SOURCE, TARGET = "7.2", "7.3"  # a schema-migrating step (DB-2)


@pytest.fixture
def root(tmp_path: Path, keyring: VendorKeyring) -> Path:
    """A 6x on 7.2 with a maintenance key valid on NOW."""
    return keyed_server(tmp_path / "box", keyring, SOURCE, NOW.date())


def _durable(server: ServerDir) -> None:
    """Assert that ``server`` and the files it writes use the durable disk and verifier."""
    assert type(server.disk) is DurableDisk
    assert type(server.verifier) is DurableVerifier
    assert server.journal.disk is server.disk
    assert server.bootloader.disk is server.disk


def test_a_server_directory_opened_with_its_defaults_is_durable(root: Path) -> None:
    """ServerDir and the CLIs' open_server give the durable disk and the verifier that keeps nothing."""
    _durable(ServerDir(root))
    _durable(open_server(root))


class RecordingDisk(DurableDisk):
    """The durable disk, counting its flushes and recording what it removes."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.removed: list[str] = []

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)

    def remove(self, path: Path) -> None:
        self.removed.append(path.relative_to(path.parents[1]).as_posix())
        super().remove(path)


async def test_the_daemon_writes_through_its_server_directorys_disk(root: Path) -> None:
    """The daemon built as ``allworx-agent run`` builds it is durable; its outbox and nonce window
    write through the disk its server directory was given."""
    daemon = Agent(open_server(root), AgentOptions(broker=BrokerSettings()), clock=SimClock(NOW))
    try:
        _durable(daemon.server)
        assert type(daemon.outbox.disk) is DurableDisk
        assert type(daemon.dispatcher.window.disk) is DurableDisk
    finally:
        daemon.close()
    disk = RecordingDisk()
    daemon = Agent(ServerDir(root, disk=disk), AgentOptions(broker=BrokerSettings()), clock=SimClock(NOW))
    try:
        answered = CommandAnswered(command="report", client_token="t1", status="accepted")
        at = datetime(2010, 1, 1, tzinfo=UTC)
        daemon.outbox.append(EventRecord(at=at, event=answered))
        assert disk.fsyncs == 1
        daemon.dispatcher.window.remember("n1", NOW, NOW)
        assert disk.fsyncs == 2
    finally:
        daemon.close()


def test_an_upgrade_by_the_cli_flushes_every_persisted_state(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``allworx-agent upgrade``: each journal save is flushed by the durable disk, and files are
    renamed and their folders flushed by it too."""
    calls: dict[str, int] = {"fsync": 0, "fsync_dir": 0, "replace": 0}
    saves: list[int] = []  # the flushes each journal save made

    def counting(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    def save(journal: Journal, job: Any) -> None:
        before = calls["fsync"]
        real_save(journal, job)
        saves.append(calls["fsync"] - before)

    for name in ("fsync", "fsync_dir", "replace"):
        monkeypatch.setattr(DurableDisk, name, counting(name, getattr(DurableDisk, name)))
    real_save = Journal.save
    monkeypatch.setattr(Journal, "save", save)
    result = CliRunner().invoke(
        agent_cli, ["upgrade", "--server-dir", str(root), "--to", TARGET, "--now", "2016-01-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert ServerDir(root).committed().version == TARGET
    assert len(saves) >= 10
    assert min(saves) >= 1
    assert calls["replace"] >= 1
    assert calls["fsync_dir"] >= calls["replace"]


async def test_an_upgrade_removes_its_files_through_the_server_directorys_disk(root: Path) -> None:
    """The new slot's descriptor (before the database is prepared) and the journal (at the end) are
    removed by the disk the server directory was given, as they are written by it."""
    disk = RecordingDisk()
    upgrader = Upgrader(ServerDir(root, disk=disk), default_catalog(), SimClock(NOW, speed=float("inf")))
    result = await upgrader.upgrade(TARGET)
    assert [step.outcome for step in result.steps] == ["committed"]
    assert disk.removed == ["b/release.json", "box/journal.json"]
    assert not (root / "journal.json").exists()


async def _database_threads(server: ServerDir) -> set[bool]:
    """Upgrade ``server`` to TARGET; for each database progress report, whether it came from the
    event loop's thread (the database is prepared where those reports are made)."""
    loop_thread, on_loop = threading.get_ident(), set()

    def on_event(event: AgentEvent) -> None:
        if isinstance(event, Progress) and event.phase == "database":
            on_loop.add(threading.get_ident() == loop_thread)

    upgrader = Upgrader(server, default_catalog(), SimClock(NOW, speed=float("inf")), on_event=on_event)
    result = await upgrader.upgrade(TARGET)
    assert [step.outcome for step in result.steps] == ["committed"]
    return on_loop


async def test_a_real_agent_prepares_its_database_in_a_worker_thread(root: Path) -> None:
    """With its defaults, a server directory's blocking work runs off the event loop, which stays
    responsive while a database is migrated."""
    assert await _database_threads(ServerDir(root)) == {False}


async def test_a_fleet_hosts_agents_prepare_their_databases_on_the_loop(root: Path) -> None:
    """A fleet host (its fast default) hands its agents an offload that runs the work on the loop:
    thousands of agents share it, and a thread hand-off would only cost CPU."""
    config = HostConfig(broker="mqtt://127.0.0.1:1", start=NOW, speed=3600.0, epoch=0.0)
    (server,) = host_servers([root], config)
    assert await _database_threads(server) == {True}


def _damage_new_database(root: Path) -> Any:
    """An injector that, once the new database is verified and published, zeroes its header
    keeping its size and modification time (the file as a bad sector would leave it)."""
    import os

    def inject(point: str) -> None:
        if point != "db.verified":
            return
        (path,) = [p for p in (root / "slots").glob("*/pbx.db") if not build_path(p).exists()
                   and p.parent.name != ServerDir(root).active_slot()]  # fmt: skip
        before = path.stat()
        with path.open("r+b") as handle:
            handle.write(b"\0" * 100)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    return inject


@pytest.mark.parametrize(
    ("verifier", "caught_by"),
    [(None, Reason.DATABASE_VERIFY_FAILED), (RememberingVerifier(), Reason.BOOT_CHECK_FAILED)],
    ids=["default-verifier", "fleet-verifier"],
)
async def test_a_database_damaged_after_its_verification_is_caught_by_the_ready_check(
    root: Path, verifier: RememberingVerifier | None, caught_by: Reason
) -> None:
    """The default verifier runs the ready check on the file as it is: the damage stops the step
    there; the fleet's verifier, remembering the file it published, lets it on to the boot check."""
    server = ServerDir(root) if verifier is None else ServerDir(root, verifier=verifier)
    upgrader = Upgrader(server, default_catalog(), SimClock(NOW, speed=float("inf")))
    with injecting(_damage_new_database(root)):
        result = await upgrader.upgrade(TARGET)
    (step,) = result.steps
    assert step.outcome == "failed"
    assert step.refusal is not None
    assert step.refusal.reason is caught_by
    assert ServerDir(root).committed().version == SOURCE


def test_the_default_verifier_verifies_every_signature_at_every_use(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking the keys twice verifies their signatures twice."""
    server = ServerDir(root)
    calls: list[bytes] = []
    real = crypto.verify
    monkeypatch.setattr(crypto, "verify", lambda p, m, s: calls.append(s) or real(p, m, s))
    first = server.key_checks(NOW.date())
    once = len(calls)
    assert server.key_checks(NOW.date()) == first
    assert once >= 2  # the key's certificate and the key itself
    assert len(calls) == 2 * once


def test_no_module_of_the_agent_keeps_a_memory() -> None:
    """No function of the agent is a functools cache, and no module of it holds a memory object."""
    found = []
    for info in pkgutil.walk_packages(agent.__path__, "agent."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            cache = hasattr(value, "cache_info") and str(getattr(value, "__module__", "")).startswith(
                "agent."
            )
            if cache or isinstance(value, OrderedDict) or type(value).__name__ == "Memo":
                found.append(f"{info.name}.{name}")
    assert found == []
