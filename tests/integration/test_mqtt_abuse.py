"""Abuse of the broker link against a real Mosquitto: an oversized message, a client-id takeover
storm, a flood of garbage commands; the agent keeps its memory and keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.mqtt.connection import BrokerSettings, Protocol, connect
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from common.errors import BrokerError
from fleet.client import FleetClient
from fleet.operator import default_operator
from simulator.broker import MOSQUITTO_LIMITS, Mosquitto, mosquitto_config
from tests.integration.conftest import running_agent

pytestmark = pytest.mark.integration
MIB = 1 << 20


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@contextlib.asynccontextmanager
async def daemon(server: ServerDir, url: str, version: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``allworx-agent run`` on ``server`` until the block ends; yield once it says it is online."""
    topics = topics_of(server)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from agent.cli import main; main()", "run", "--server-dir", str(server.root),
        "--broker", url, "--mqtt-version", version, "--now", "2010-01-01",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with FleetClient.open(BrokerSettings(url=url)) as client:
            with client.watch(lambda m: m.topic == topics.availability and b'"online"' in m.payload) as up:
                await client.link.subscribe(topics.availability, qos=1)
                async with asyncio.timeout(30):
                    await up.get()
        yield process
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            await process.wait()


def topics_of(server: ServerDir) -> ServerTopics:
    ident = server.identity()
    return ServerTopics(ident.site, ident.serial)


async def publish_raw(url: str, topic: str, payload: bytes) -> None:
    """Publish once at QoS 0 from a throwaway MQTT 5 client (a broker refusing it drops the client)."""
    with contextlib.suppress(BrokerError):
        async with connect(BrokerSettings(url=url, timeout=5), protocol=Protocol.V5) as link:
            await link.publish(topic, payload, qos=0)


async def report(url: str, server: ServerDir, version: str) -> dict[str, object]:
    """Send ``report`` in the agent's protocol (a 3.1.1 agent answers on cmd/report/accepted)."""
    topics = topics_of(server)
    async with FleetClient.open(BrokerSettings(url=url), default_operator(), Protocol(version)) as client:
        return await client.send(topics.site, topics.serial, "report", {}, timeout=10)


def test_every_mosquitto_configuration_written_limits_the_message_size() -> None:
    """The project's Mosquitto configuration bounds a message's payload and a whole packet."""
    config = mosquitto_config(1883)
    assert f"message_size_limit {MOSQUITTO_LIMITS['message_size_limit']}\n" in config
    assert f"max_packet_size {MOSQUITTO_LIMITS['max_packet_size']}\n" in config
    assert 0 < int(MOSQUITTO_LIMITS["message_size_limit"]) <= 64 * MIB


async def test_the_operator_side_takes_a_large_campaign_state(mosquitto: Mosquitto, unique_site: str) -> None:
    """A fleet tool's session takes a 1 MiB message (a campaign's state is the fleet's largest),
    which an agent's session would not be sent."""
    topic = f"allworx/campaigns/{unique_site}/status"
    async with FleetClient.open(BrokerSettings(url=mosquitto.url), protocol=Protocol.V5) as client:
        with client.watch(lambda m: m.topic == topic) as queue:
            await client.link.subscribe(topic, qos=1)
            await publish_raw(mosquitto.url, topic, b"{" + b" " * MIB + b"}")
            async with asyncio.timeout(10):
                message = await queue.get()
    assert len(message.payload) == MIB + 2


@pytest.mark.parametrize(
    ("version", "sizes"),
    [("5", (20 * MIB, 100 * MIB)), ("3.1.1", (100 * MIB,))],
    ids=["mqtt5", "mqtt311"],
)
async def test_an_oversized_command_never_reaches_the_agent(
    mosquitto: Mosquitto, server: ServerDir, version: str, sizes: tuple[int, ...]
) -> None:
    """A 100 MB publish on the agent's command topic (and, over MQTT 5, one of 20 MB the broker would
    take) raises the agent's peak memory by under 8 MiB, and it answers the next command."""
    command = topics_of(server).command("report")
    async with daemon(server, mosquitto.url, version) as process:
        before = peak_rss_mib(process.pid)
        for size in sizes:
            await publish_raw(mosquitto.url, command, b"x" * size)
            reply = await report(mosquitto.url, server, version)
            assert reply["status"] == "accepted"
            assert peak_rss_mib(process.pid) - before < 8, size


async def squat(url: str, identifier: str, until: float) -> int:
    """Connect with ``identifier`` every 50 ms (each CONNECT ends the session holding it) until
    ``until`` (loop time); return how many connections were made."""
    loop, made = asyncio.get_running_loop(), 0
    while loop.time() < until:
        with contextlib.suppress(BrokerError):
            async with connect(
                BrokerSettings(url=url, timeout=2), protocol=Protocol.V5, identifier=identifier
            ):
                made += 1
                await asyncio.sleep(0.05)
    return made


async def test_a_takeover_storm_is_noticed_and_the_agent_keeps_answering(
    mosquitto: Mosquitto, server: ServerDir
) -> None:
    """Another client taking the agent's client id every 50 ms: the agent logs and counts the storm,
    then answers every command while the storm goes on."""
    topics = topics_of(server)
    loop = asyncio.get_running_loop()
    answered: list[tuple[float, bool]] = []
    with capture_logs() as logs:
        async with running_agent(server, mosquitto.url) as agent:
            usual = agent.takeovers.usual
            assert usual == f"allworx-agent-{topics.site}-{topics.serial}"
            end = loop.time() + 8.0
            squatter = asyncio.create_task(squat(mosquitto.url, usual, end))
            async with FleetClient.open(BrokerSettings(url=mosquitto.url), default_operator()) as client:
                while loop.time() < end:
                    sent = loop.time()
                    try:
                        reply = await client.send(topics.site, topics.serial, "report", {}, timeout=2)
                        answered.append((sent, reply["status"] == "accepted"))
                    except TimeoutError:
                        answered.append((sent, False))
                    await asyncio.sleep(0.2)
            made = await squatter
            assert agent.takeovers.storms >= 1
            assert agent.takeovers.takeovers <= 2 * 3  # backed off, not pushed off 20 times
    assert made > 50
    storm = [e for e in logs if e["event"] == "session_takeover_storm"]
    assert storm
    assert storm[0]["usual_client_id"] == usual
    assert storm[0]["client_id"] != usual
    late = [ok for sent, ok in answered if sent > end - 4.0]  # the storm is on, and noticed by then
    assert late
    assert all(late), answered
