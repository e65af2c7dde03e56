"""``allworx-agent run --config FILE`` started the way systemd starts it: no terminal, a notify
socket, a watchdog, against a Mosquitto the test stops and starts."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.events import Transition
from agent.machine import State
from agent.mqtt.connection import BrokerSettings
from agent.mqtt.messages import EventBatch
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from fleet.client import FleetClient
from fleet.operator import default_operator
from simulator.broker import Mosquitto, free_port
from simulator.server import ServerSpec, create_server
from tests.integration.conftest import require_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIGNATURE = re.compile(r"[0-9a-f]{128}")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own (it is stopped and started again)."""
    require_mosquitto()
    server = Mosquitto()
    server.start()
    yield server
    server.close()


class Notifications:
    """The datagram socket standing in for systemd's notify socket, read as datagrams arrive
    (systemd reads its socket all the time: an unread one fills, and the agent drops notifications)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.seen: list[str] = []
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.drain)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.extend(self.sock.recv(4096).decode().splitlines())
            except BlockingIOError:
                return self.seen

    async def until(self, line: str, seconds: float = 30) -> None:
        """Wait (polling the socket) until a notification starting with ``line`` arrived."""
        async with asyncio.timeout(seconds):
            while not any(seen.startswith(line) for seen in self.drain()):  # noqa: ASYNC110  # reason: polls a socket, no event to wait on
                await asyncio.sleep(0.05)


def _start(config: Path, notify: Notifications) -> subprocess.Popen[str]:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000", "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-c", "from agent.cli import main; main()", "run", "--config", str(config)]
    return subprocess.Popen(  # reason: our own CLI
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=5
        ) as answer:  # reason: a loopback URL of the test's own
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as failed:
        return failed.code, failed.read().decode()


async def _until_status(port: int, status: int, seconds: float = 40) -> str:
    async with asyncio.timeout(seconds):
        while True:
            got, body = await asyncio.to_thread(_get, port, "/healthz")
            if got == status:
                return body
            await asyncio.sleep(0.2)


def _write(config: Path, server: Path, url: str, health: int, level: str) -> None:
    config.write_text(
        f'server_dir = "{server}"\nbroker = "{url}"\nnow = "2010-01-01"\nspeed = 30.0\n'
        f'health = "127.0.0.1:{health}"\nhealth_down_after = 2.0\nlog_level = "{level}"\nkeepalive = 5\n'
    )


async def test_a_service_start_reports_heals_reloads_and_stops_mid_upgrade(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """READY, STATUS and watchdog pings; /healthz 200, 503 with the broker down, 200 again;
    SIGHUP applies a new log level; SIGTERM mid-upgrade says STOPPING and exits 0; the next start
    resumes the upgrade, and /metrics counts its step and a refusal; no log line holds a signature."""
    server = create_server(
        tmp_path / "server", ServerSpec(model="6x", release="7.0", users=5, call_log_rows=50)
    )
    ident = server.identity()
    topics = ServerTopics(ident.site, ident.serial)
    config, health = tmp_path / "agent.toml", free_port()
    _write(config, server.root, broker.url, health, "info")
    notify = Notifications(tmp_path / "notify.sock")
    try:
        await _first_run(config, server, broker, health, topics, notify)
        await _resume_and_count(config, server, broker, health, topics, notify)
    finally:
        notify.close()


async def _first_run(
    config: Path,
    server: ServerDir,
    broker: Mosquitto,
    health: int,
    topics: ServerTopics,
    notify: Notifications,
) -> None:
    """Start, report, heal, reload, and stop mid-upgrade."""
    ident = server.identity()
    first = _start(config, notify)
    try:
        await notify.until("READY=1")
        await notify.until("STATUS=connected")
        await asyncio.sleep(2.5)
        assert sum(line == "WATCHDOG=1" for line in notify.drain()) >= 2
        assert json.loads(await _until_status(health, 200))["broker_connected"] is True
        broker.stop()
        assert "broker" in json.loads(await _until_status(health, 503))["reason"]
        broker.start()
        await _until_status(health, 200)
        async with FleetClient.open(BrokerSettings(url=broker.url), default_operator()) as client:
            assert (await client.request(ident.site, ident.serial, "report", {})).reply.status == "accepted"
            _write(config, server.root, broker.url, health, "warning")
            first.send_signal(signal.SIGHUP)
            await asyncio.sleep(1.0)
            assert (await client.request(ident.site, ident.serial, "report", {})).reply.status == "accepted"
            await _stop_mid_upgrade(client, topics, first)
        await notify.until("STOPPING=1")
        out, err = first.communicate(timeout=15)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    reloaded = events.index("config_reloaded")
    assert "command_answered" in events[:reloaded]  # info lines before SIGHUP ...
    assert "command_answered" not in events[reloaded:]  # ... and none at the new level, warning
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)
    assert not SIGNATURE.search(out)
    assert ServerDir(server.root).journal.load() is not None  # stopped mid-upgrade: the journal resumes it


async def _stop_mid_upgrade(
    client: FleetClient, topics: ServerTopics, process: subprocess.Popen[str]
) -> None:
    """Ask for 7.1 and send SIGTERM as soon as the new slot is written (the reboot takes 3 s)."""
    with client.watch(lambda m: m.topic == topics.events) as events:
        await client.link.subscribe(topics.events, qos=1)
        reply = (await client.request(topics.site, topics.serial, "upgrade", {"to": "7.1"})).reply
        assert reply.status == "accepted", reply
        async with asyncio.timeout(60):
            while True:
                batch = EventBatch.model_validate_json((await events.get()).payload)
                if any(
                    isinstance(record.event, Transition) and record.event.state is State.TRIAL_BOOT
                    for record in batch.events
                ):
                    break
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    await asyncio.to_thread(process.wait, 10)
    assert time.monotonic() - stopped < 10


async def _resume_and_count(
    config: Path,
    server: ServerDir,
    broker: Mosquitto,
    health: int,
    topics: ServerTopics,
    notify: Notifications,
) -> None:
    _write(config, server.root, broker.url, health, "info")
    notify.seen.clear()
    second = _start(config, notify)
    try:
        await notify.until("READY=1")
        async with asyncio.timeout(60):
            while ServerDir(server.root).journal.load() is not None:  # noqa: ASYNC110  # reason: polls a file
                await asyncio.sleep(0.2)
        assert ServerDir(server.root).committed().version == "7.1"
        async with FleetClient.open(BrokerSettings(url=broker.url), default_operator()) as client:
            refused = (await client.request(topics.site, topics.serial, "upgrade", {"to": "7.2"})).reply
        assert refused.reason == "NOT_YET_RELEASED"
        status, metrics = await asyncio.to_thread(_get, health, "/metrics")
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=15)
    assert status == 200
    assert 'allworx_upgrade_steps_total{outcome="committed"} 1.0' in metrics
    assert 'allworx_refusals_total{reason="NOT_YET_RELEASED"} 1.0' in metrics
    assert 'allworx_commands_total{name="upgrade",verdict="rejected"} 1.0' in metrics
    assert second.returncode == 0
