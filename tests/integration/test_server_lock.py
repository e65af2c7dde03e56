"""The server directory's lock: one process at a time changes a server (agent/lock.py).

Real CLI processes and real daemons (``allworx-agent run``) against the session's Mosquitto; the
servers are made by ``allworx-sim server create`` and copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.lock import ServerLock
from agent.mqtt.connection import BrokerSettings, Inbound
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from fleet.client import FleetClient
from fleet.operator import default_operator
from simulator.broker import Mosquitto
from simulator.chaos import Auditor, snapshot
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.publish import default_repository
from tests.helpers import tree_hash

pytestmark = pytest.mark.integration

NOW = "2016-01-01"
TARGET = "7.3"  # three committed steps from 7.0: long enough for two upgrades to overlap
BUSY = re.compile(r"^error: SERVER_BUSY: .* process (\d+)")
TOOLS = {"allworx-agent": "agent.cli", "allworx-sim": "simulator.cli"}


async def tool(name: str, *args: str) -> tuple[int, str, str]:
    """Run a console script as a user would; return its exit code, stdout and stderr."""
    code = f"import sys; from {TOOLS[name]} import main; sys.argv[0] = {name!r}; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return proc.returncode, out.decode(), err.decode()


# The race runs a hundred ``allworx-agent`` processes. Each is forked from a server process that
# imported the CLI once (multiprocessing's forkserver), so the race is not spent importing: each
# is still a process of its own, running ``main`` from the start, with its own lock descriptor.
FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(["agent.cli"])


def _agent_main(args: list[str], env: dict[str, str], out: str, err: str) -> None:
    """The body of a forked ``allworx-agent ARGS`` (stdout and stderr into files)."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        with open(path, "wb") as handle:
            os.dup2(handle.fileno(), fd)
    sys.argv = ["allworx-agent", *args]
    from agent.cli import main

    main(args)


class Forked:
    """``allworx-agent ARGS`` in a forked process."""

    count = 0

    def __init__(self, folder: Path, *args: str) -> None:
        Forked.count += 1
        self.out, self.err = folder / f"{Forked.count}.out", folder / f"{Forked.count}.err"
        self.process = FORKS.Process(
            target=_agent_main, args=(list(args), dict(os.environ), str(self.out), str(self.err))
        )
        self.process.start()

    @property
    def running(self) -> bool:
        return self.process.exitcode is None

    def terminate(self) -> None:
        self.process.terminate()

    async def result(self) -> tuple[int, str]:
        """Wait for the end; return the exit code and stderr."""
        loop, sentinel = asyncio.get_running_loop(), self.process.sentinel
        ended = loop.create_future()
        loop.add_reader(sentinel, lambda: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            loop.remove_reader(sentinel)
        self.process.join()
        err = self.err.read_text()
        assert "Traceback" not in err, err
        return self.process.exitcode, err


@pytest.fixture
async def template(tmp_path: Path, keyring: VendorKeyring) -> ServerDir:
    """A 6x on 7.0 made by ``allworx-sim server create``, with a maintenance key valid at NOW."""
    root = tmp_path / "template"
    code, _, err = await tool(
        "allworx-sim", "server", "create", str(root), "--model", "6x", "--release", "7.0",
        "--shipped", "2009-06-01", "--users", "12", "--call-log-rows", "120",
    )  # fmt: skip
    assert code == 0, err
    server = ServerDir(root)
    key = issue_key(
        keyring,
        serial=server.identity().serial,
        kind="maintenance",
        plan="anytime-1y",
        start=date(2016, 1, 1),
    )
    assert server.install_key(key, date(2016, 1, 1)).valid
    return server


def copy_of(template: ServerDir, root: Path) -> ServerDir:
    """A copy of the template server (same serial: a daemon on it is given a site of its own)."""
    shutil.copytree(template.root, root, symlinks=True)
    return ServerDir(root)


def upgrade_args(server: ServerDir) -> tuple[str, ...]:
    return ("upgrade", "--server-dir", str(server.root), "--to", TARGET, "--now", NOW, "--json")


async def test_a_held_server_refuses_every_change_and_still_answers_reads(template: ServerDir) -> None:
    """While a server is held, upgrades, keys and the daemon exit SERVER_BUSY; status and plan work."""
    root = str(template.root)
    key_file = template.root.parent / "again.key"
    key_file.write_text(next(template.keys_dir.glob("*.key")).read_text())
    before = tree_hash(template.root)
    with ServerLock(template.root):
        changes = [
            ("allworx-agent", *upgrade_args(template)),
            ("allworx-agent", "install", "--server-dir", root, "--release", "7.1", "--now", NOW),
            ("allworx-agent", "keys", "install", "--server-dir", root, str(key_file), "--now", NOW),
            ("allworx-agent", "keys", "install-revocations", "--server-dir", root, str(key_file)),
            ("allworx-agent", "run", "--server-dir", root, "--broker", "mqtt://127.0.0.1:9", "--now", NOW),
            (
                "allworx-sim",
                "vendor",
                "purchase",
                "--server-dir",
                root,
                "--option",
                "anytime-1y",
                "--now",
                NOW,
            ),
        ]
        for name, *args in changes:
            code, _, err = await tool(name, *args)
            assert code == 1, (args, err)
            match = BUSY.match(err)
            assert match is not None, (args, err)
            assert match.group(1) == str(os.getpid())
        code, out, err = await tool("allworx-agent", "status", "--server-dir", root, "--json", "--now", NOW)
        assert code == 0, err
        assert json.loads(out)["release"] == "7.0"
        code, out, err = await tool(
            "allworx-agent", "plan", "--server-dir", root, "--to", TARGET, "--json", "--now", NOW
        )
        assert code == 0, err
        assert json.loads(out)["final_release"] == TARGET
    assert tree_hash(template.root) == before
    code, _, err = await tool("allworx-agent", *upgrade_args(template))  # released with its holder
    assert code == 0, err


async def cli_pair(server: ServerDir, delay: float) -> list[tuple[int, str]]:
    """Two ``allworx-agent upgrade`` of one server, the second started ``delay`` seconds after the first."""
    first = Forked(server.root.parent, *upgrade_args(server))
    await asyncio.sleep(delay)
    second = Forked(server.root.parent, *upgrade_args(server))
    return [await first.result(), await second.result()]


async def until_online(client: FleetClient, topics: ServerTopics, daemon: Forked) -> bool:
    """Wait until the daemon says it is online (True), or until it exits (False)."""

    def online(message: Inbound) -> bool:
        return message.topic == topics.availability and message.payload == b"online"

    with client.watch(online) as queue:
        await client.link.subscribe(topics.availability, qos=1)
        async with asyncio.timeout(30):
            while daemon.running:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await queue.get()
                        return True
    return False


async def daemon_pair(
    server: ServerDir, site: str, url: str, delay: float, *, daemon_first: bool
) -> list[tuple[int, str]]:
    """A daemon and an ``allworx-agent upgrade`` on one server, started ``delay`` s apart in either order.

    A daemon that came up is sent an ``upgrade`` (waited for), then stopped with SIGTERM.
    """
    folder = server.root.parent
    cli: Forked | None = None
    if not daemon_first:
        cli = Forked(folder, *upgrade_args(server))
        await asyncio.sleep(delay)
    run = ("run", "--server-dir", str(server.root), "--broker", url, "--site", site, "--now", NOW)
    daemon = Forked(folder, *run)
    topics = ServerTopics(site, server.identity().serial)
    try:
        async with FleetClient.open(BrokerSettings(url=url), default_operator()) as client:
            if await until_online(client, topics, daemon):
                asked = asyncio.create_task(
                    client.request(site, topics.serial, "upgrade", {"to": TARGET}, wait=60)
                )
                if cli is None:
                    await asyncio.sleep(delay)
                    cli = Forked(folder, *upgrade_args(server))
                reply = (await asked).reply
                assert reply.status == "accepted" or reply.reason == "ALREADY_INSTALLED", reply
    finally:
        if daemon.running:
            daemon.terminate()
    ended = await daemon.result()
    assert cli is not None
    return [ended, await cli.result()]


@pytest.mark.slow
async def test_racing_upgrades_leave_every_server_committed_with_its_records(
    tmp_path: Path, template: ServerDir, mosquitto: Mosquitto, keyring: VendorKeyring
) -> None:
    """50 pairs of upgrades race on one server each (CLI/CLI, daemon/CLI): every loser exits SERVER_BUSY
    at once, and every server ends committed on the target with every record and key."""
    rng = random.Random(7)
    before = snapshot(template)
    run = f"r{os.getpid()}x{rng.randrange(10**6)}"
    pairs = [("cli", i) for i in range(38)] + [("daemon-first", i) for i in range(6)]
    pairs += [("cli-first", i) for i in range(6)]
    servers = {(kind, i): copy_of(template, tmp_path / f"{kind}-{i}") for kind, i in pairs}
    gate = asyncio.Semaphore(6)

    async def race(kind: str, i: int) -> list[tuple[int, str]]:
        async with gate:
            server, delay = servers[(kind, i)], rng.uniform(0.0, 0.3)  # most pairs overlap
            if kind == "cli":
                return await cli_pair(server, delay)
            site = f"{run}-{kind}-{i}"
            return await daemon_pair(server, site, mosquitto.url, delay, daemon_first=kind == "daemon-first")

    async with asyncio.TaskGroup() as tasks:
        racing = {pair: tasks.create_task(race(*pair)) for pair in pairs}
    busy = 0
    for pair, task in racing.items():
        for code, err in task.result():
            if code == 1:
                assert BUSY.match(err), (pair, err)
                busy += 1
            else:
                assert code in (0, 2), (pair, code, err)  # 2: the other one already reached the target
    assert busy >= 10, "too few pairs overlapped to test anything"
    auditor = Auditor(
        default_repository(keyring), template.trust().root_public, datetime(2016, 1, 1, tzinfo=UTC)
    )
    for pair, server in servers.items():
        assert auditor.problems(server, before, finished=True) == {}, pair
        assert server.committed().version == TARGET, pair
        assert not any(server.update_area.glob("*.part")), pair
