"""Abuse of the broker link against a real Mosquitto: an oversized message, a client-id takeover
storm, a flood of garbage commands; the agent keeps its memory and keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
    """``allworx-agent run`` on ``server`` until the block ends (its log lines, JSON on stdout, and
    its stderr in ``daemon.log`` beside the server); yield once it says it is online."""
    topics = topics_of(server)
    with (server.root.parent / "daemon.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from agent.cli import main; main()", "run",
            "--server-dir", str(server.root), "--broker", url, "--mqtt-version", version,
            "--now", "2010-01-01",
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        async with FleetClient.open(BrokerSettings(url=url)) as client:
            with client.watch(lambda m: m.topic == topics.availability and m.payload == b"online") as up:
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
            end = loop.time() + 18.0  # long enough for three takeovers and the answers after them, loaded
            squatter = asyncio.create_task(squat(mosquitto.url, usual, end))
            async with FleetClient.open(BrokerSettings(url=mosquitto.url), default_operator()) as client:
                while loop.time() < end:
                    sent = loop.time()
                    try:
                        reply = await client.send(topics.site, topics.serial, "report", {}, timeout=5)
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
    late = [ok for sent, ok in answered if sent > end - 6.0]  # the storm is on, and noticed by then
    assert late
    assert all(late), answered


def mqtt_frame(kind: int, body: bytes) -> bytes:
    """One MQTT packet: the fixed header (type and flags, then the remaining length) and ``body``."""
    length, size = b"", len(body)
    while True:
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return bytes([kind]) + length + body


def flood(port: int, topic: str, count: int) -> None:
    """Publish ``count`` garbage commands on ``topic`` as fast as a socket takes them (MQTT 3.1.1,
    QoS 1, so the broker queues every one for the agent; one write): they reach the broker ahead of
    anything sent after this returns."""
    name = topic.encode()
    connect_body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(b"flooder").to_bytes(2, "big") + b"flooder"
    frames = [mqtt_frame(0x10, connect_body)]
    for i in range(count):
        packet_id = (i % 65535 + 1).to_bytes(2, "big")
        frames.append(
            mqtt_frame(0x32, len(name).to_bytes(2, "big") + name + packet_id + b'{"garbage": %d}' % i)
        )
    frames.append(mqtt_frame(0xE0, b""))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"".join(frames))
        while sock.recv(65536):  # the CONNACK and PUBACKs, until the broker closes after DISCONNECT:
            pass  # closing with them unread would reset the connection, and lose what it had not read


async def test_a_real_command_is_answered_within_2_s_behind_a_flood_of_10000(
    mosquitto: Mosquitto, server: ServerDir
) -> None:
    """10,000 garbage commands land on the agent's command topic, then a real ``report``: it is
    answered within 2 s, and the agent drops the rejections past its budget (and logs it)."""
    topics = topics_of(server)
    loop = asyncio.get_running_loop()
    operator = FleetClient.open(BrokerSettings(url=mosquitto.url), default_operator())
    async with daemon(server, mosquitto.url, "5"), operator as client:
        await asyncio.to_thread(flood, mosquitto.port, topics.command("report"), 10_000)
        sent = loop.time()
        reply = await client.send(topics.site, topics.serial, "report", {}, timeout=30)
        latency = loop.time() - sent
    assert reply["status"] == "accepted"
    assert latency < 2.0
    assert "commands_dropped" in (server.root.parent / "daemon.log").read_text()
