"""``allworx-agent run`` without ``--now`` judges everything at the real current instant."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.mqtt.connection import BrokerSettings
from agent.mqtt.messages import StateDocument
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from fleet.client import FleetClient
from fleet.operator import default_operator
from simulator.server import ServerSpec, create_server
from tests.integration.conftest import Mosquitto, require_mosquitto

pytestmark = pytest.mark.integration


def _agent(server: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", "from agent.cli import main; main()", "run", "--server-dir", str(server)]
    return subprocess.Popen([*argv, "--broker", url, "--keepalive", "5", *extra])


async def _online(client: FleetClient, server: ServerDir) -> None:
    """Wait until the agent's retained availability says it is online."""
    ident = server.identity()
    topic = ServerTopics(ident.site, ident.serial).availability
    with client.watch(lambda m: m.topic == topic) as messages:
        await client.link.subscribe(topic, qos=1)
        async with asyncio.timeout(30):
            while b"online" not in (await messages.get()).payload:
                pass


async def _report(client: FleetClient, server: ServerDir) -> StateDocument:
    ident = server.identity()
    answer = await client.request(ident.site, ident.serial, "report", {}, timeout=20)
    assert answer.reply.status == "accepted", answer.reply
    assert isinstance(answer.reply.result, StateDocument), answer.reply.result
    return answer.reply.result


async def test_states_carry_the_real_time_and_advance(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Two reports a few seconds apart carry two real instants, not the start time twice."""
    require_mosquitto()
    server = create_server(
        tmp_path / "server", ServerSpec(model="6x", release="7.0", users=5, call_log_rows=10)
    )
    process = _agent(server.root, mosquitto.url)
    try:
        async with FleetClient.open(BrokerSettings(url=mosquitto.url), default_operator()) as client:
            await _online(client, server)
            first = await _report(client, server)
            await asyncio.sleep(2.5)
            second = await _report(client, server)
            now = datetime.now(UTC)
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert (second.updated_at - first.updated_at).total_seconds() >= 2.0
    assert abs((now - second.updated_at).total_seconds()) < 5
