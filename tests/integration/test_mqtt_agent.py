"""The agent against real brokers: signed commands, ordered events, retained state, outages, kills."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.events import Transition
from agent.mqtt.connection import BrokerSettings, Inbound, Protocol, connect
from agent.mqtt.messages import EventRecord, PlanReport, StateDocument
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from common.errors import BrokerError
from fleet.client import FleetClient
from fleet.operator import default_operator
from simulator.broker import Mosquitto
from tests.integration.conftest import BrokerUnderTest, require_mosquitto, running_agent
from tests.unit.test_messages import validate

pytestmark = pytest.mark.integration

TRANSITIONS = [
    "staging",
    "staged",
    "preparing_db",
    "db_ready",
    "writing_slot",
    "slot_written",
    "switching",
    "trial_boot",
    "committing",
    "committed",
]


def topics_of(server: ServerDir) -> ServerTopics:
    ident = server.identity()
    return ServerTopics(ident.site, ident.serial)


def agent_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from agent.cli import main; main()", *args]


async def test_signed_upgrade_runs_to_its_end(broker: BrokerUnderTest, server: ServerDir) -> None:
    """A signed upgrade command runs to its end, every transition arrives in order, state matches status."""
    topics = topics_of(server)
    events: list[EventRecord] = []
    async with running_agent(server, broker.url, protocol=broker.protocol) as agent:
        async with FleetClient.open(
            BrokerSettings(url=broker.url), default_operator(), broker.protocol
        ) as fleet:
            answer = await fleet.request(
                topics.site, topics.serial, "upgrade", {"to": "7.1"}, wait=20, on_event=events.append
            )
            states = await fleet.states(topics.site)
        assert agent.protocol is (Protocol.V311 if broker.kind == "embedded" else Protocol.V5)
    assert answer.reply.status == "accepted" and answer.reply.client_token
    assert answer.outcome is not None and answer.outcome.outcome == "succeeded"
    assert [e.event.state for e in events if isinstance(e.event, Transition)] == TRANSITIONS
    seqs = [e.seq or 0 for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    command = agent_cli("status", "--server-dir", str(server.root), "--json")
    done = await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True, text=True)
    status = json.loads(done.stdout)
    (parsed,) = states
    state = parsed.wire()
    validate("State", state)
    batch = {"schema": 2, "serial": topics.serial, "site": topics.site, "events": [e.wire() for e in events]}
    validate("Events", batch)
    for field in (
        "serial",
        "model",
        "site",
        "release",
        "build",
        "db_schema",
        "state",
        "keys",
        "phone_firmware",
    ):
        assert state[field] == status[field], field
    assert state["release"] == "7.1" and state["last_result"]["outcome"] == "succeeded"


async def test_state_interval_merges_a_steps_transitions_but_never_delays_a_result(
    broker: BrokerUnderTest, server: ServerDir
) -> None:
    """With a long state interval a step's transitions share publishes; the result does not wait.

    With a lazy outbox cursor, the cursor catches up once the events go quiet.
    """
    topics = topics_of(server)
    interval = 30.0  # far longer than the test: whatever arrives in time was not held back by it
    states: list[dict[str, Any]] = []
    async with (
        connect(BrokerSettings(url=broker.url), protocol=broker.protocol) as watcher,
        running_agent(
            server,
            broker.url,
            protocol=broker.protocol,
            speed=100,
            state_interval=interval,
            cursor_interval=1.0,
        ) as agent,
        FleetClient.open(BrokerSettings(url=broker.url), default_operator(), broker.protocol) as fleet,
    ):
        await watcher.subscribe(topics.state, qos=1)

        async def collect() -> None:
            async for message in watcher.messages():
                states.append(json.loads(message.payload))

        collector = asyncio.create_task(collect())
        events: list[EventRecord] = []
        answer = await fleet.request(
            topics.site, topics.serial, "upgrade", {"to": "7.1"}, wait=20, on_event=events.append
        )
        await _until(lambda: any((s.get("last_result") or {}).get("outcome") for s in states), 10)
        collector.cancel()
        cursor = agent.outbox.cursor_path
        await _until(lambda: json.loads(cursor.read_bytes())["delivered"] == agent.outbox.last_seq, 5)
    assert answer.outcome is not None and answer.outcome.outcome == "succeeded"
    transitions = [e for e in events if isinstance(e.event, Transition)]
    assert len(transitions) == len(TRANSITIONS)
    seen = [s["state"] for s in states]
    assert "trial_boot" not in seen, seen  # the reboot's 0.9 s would show it, were it not merged
    assert states[-1]["release"] == "7.1" and states[-1]["state"] == "idle"
    assert states[-1]["last_result"]["outcome"] == "succeeded"


async def test_a_long_batch_interval_never_delays_a_result(
    broker: BrokerUnderTest, server: ServerDir
) -> None:
    """With a 30 s batch interval the command's answer goes at once, and the step's events wait for
    its result and go with it: two messages, in order."""
    topics = topics_of(server)
    batches: list[dict[str, Any]] = []
    async with (
        connect(BrokerSettings(url=broker.url), protocol=broker.protocol) as watcher,
        running_agent(server, broker.url, protocol=broker.protocol, batch_interval=30.0),
        FleetClient.open(BrokerSettings(url=broker.url), default_operator(), broker.protocol) as fleet,
    ):
        await watcher.subscribe(topics.events, qos=1)

        async def collect() -> None:
            async for message in watcher.messages():
                if message.topic == topics.events:  # amqtt also hands out others' retained messages
                    batches.append(json.loads(message.payload))

        collector = asyncio.create_task(collect())
        started = time.monotonic()
        answer = await fleet.request(topics.site, topics.serial, "upgrade", {"to": "7.1"}, wait=20)
        took = time.monotonic() - started
        await _until(lambda: any(e["type"] == "result" for b in batches for e in b["events"]), 5)
        collector.cancel()
    assert answer.outcome is not None
    assert answer.outcome.outcome == "succeeded"
    assert took < 15  # far less than the interval: the result did not wait for it
    command, step = batches  # the answer (with what was recorded by the time it went), then the rest
    assert command["events"][0]["type"] == "command"
    assert step["events"][-1]["type"] == "result"
    transitions = [e["state"] for b in batches for e in b["events"] if e["type"] == "transition"]
    assert transitions == TRANSITIONS
    seqs = [e["seq"] for b in batches for e in b["events"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_policy_refusal_is_rejected_with_reason(broker: BrokerUnderTest, server: ServerDir) -> None:
    """An upgrade the policy refuses is answered rejected with its reason code and rule."""
    topics = topics_of(server)
    async with (
        running_agent(server, broker.url, protocol=broker.protocol),
        FleetClient.open(BrokerSettings(url=broker.url), default_operator(), broker.protocol) as fleet,
    ):
        reply = (await fleet.request(topics.site, topics.serial, "upgrade", {"to": "6.9"})).reply
        state: StateDocument | None = None
        for _ in range(40):  # the retained state follows within the state publisher's merge delay
            (state,) = await fleet.states(topics.site)
            if state.last_result is not None and state.last_result.outcome == "rejected":
                break
            await asyncio.sleep(0.1)
    assert (reply.status, reply.reason, reply.rule) == ("rejected", "DOWNGRADE_REFUSED", "DOWN-1")
    assert server.committed().version == "7.0"
    last = state.last_result if state is not None else None
    assert last is not None
    assert (last.outcome, last.reason, last.rule) == ("rejected", "DOWNGRADE_REFUSED", "DOWN-1")


async def test_agent_falls_back_to_3_1_1_on_the_embedded_broker(
    embedded_broker: Any, server: ServerDir
) -> None:
    """Left to choose (no --mqtt-version), the agent asks amqtt for MQTT 5, hears nothing, speaks 3.1.1."""
    topics = topics_of(server)
    async with (
        running_agent(server, embedded_broker.url, protocol=None) as agent,
        FleetClient.open(BrokerSettings(url=embedded_broker.url), default_operator(), Protocol.V311) as fleet,
    ):
        assert agent.protocol is Protocol.V311
        reply = (await fleet.request(topics.site, topics.serial, "plan", {"to": "7.1"})).reply
    assert reply.status == "accepted"
    assert isinstance(reply.result, PlanReport)
    assert reply.result.final_release == "7.1"


MALFORMED: list[tuple[str, str, str]] = [  # (case, command topic, expected reason)
    ("not JSON", "upgrade", "COMMAND_MALFORMED"),
    ("not an object", "upgrade", "COMMAND_MALFORMED"),
    ("huge", "upgrade", "COMMAND_TOO_LARGE"),
    ("unknown command", "reboot", "COMMAND_UNKNOWN"),
    ("unsigned", "plan", "COMMAND_UNSIGNED"),
    ("forged", "plan", "COMMAND_SIGNATURE_INVALID"),
    ("wrong type", "plan", "COMMAND_MALFORMED"),
    ("replayed", "plan", "COMMAND_REPLAYED"),
]


def signed_plan(topics: ServerTopics) -> dict[str, Any]:
    from datetime import UTC, datetime

    from agent.mqtt.commands import sign_command

    return sign_command(
        default_operator().private,
        "plan",
        {"to": "7.1"},
        site=topics.site,
        serial=topics.serial,
        now=datetime.now(UTC),
    )


def malformed(case: str, topics: ServerTopics, replayable: bytes) -> bytes:
    doc = signed_plan(topics)
    match case:
        case "not JSON":
            return b"{nope"
        case "not an object":
            return b"[1, 2]"
        case "huge":
            return b'{"pad": "' + b"x" * 70_000 + b'"}'
        case "unsigned":
            doc.pop("signature")
        case "forged":
            doc["args"] = {"to": "7.2"}
        case "wrong type":
            doc["args"] = {"to": 71}
        case "replayed":
            return replayable
    return json.dumps(doc).encode()


async def test_malformed_commands_are_rejected_and_the_agent_keeps_going(
    broker: BrokerUnderTest, server: ServerDir
) -> None:
    """Bad JSON, huge, unknown, unsigned, forged, mistyped and replayed commands get reason codes."""
    topics = topics_of(server)
    before = server.committed()
    async with running_agent(server, broker.url, protocol=broker.protocol) as agent:
        async with FleetClient.open(
            BrokerSettings(url=broker.url), default_operator(), broker.protocol
        ) as fleet:
            good = json.dumps(signed_plan(topics)).encode()
            first = await fleet.send_raw(topics, "plan", good, None)
            assert first.status == "accepted"
            for case, command, reason in MALFORMED:
                reply = await fleet.send_raw(topics, command, malformed(case, topics, good), None)
                assert (reply.status, reply.reason) == ("rejected", reason), case
            report = await fleet.send(topics.site, topics.serial, "report", {})
        assert not agent.upgrading
    assert report["status"] == "accepted" and report["result"]["release"] == before.version
    assert server.committed() == before


async def _watch_events(
    url: str, topics: ServerTopics, into: list[dict[str, Any]], ready: asyncio.Event
) -> None:
    """A persistent-session subscriber that reconnects: the broker queues events while it is away.

    ``into`` gets each events message (a batch) as received."""
    while True:
        try:
            async with connect(
                BrokerSettings(url=url),
                protocol=Protocol.V311,
                clean=False,
                identifier=f"watch-{topics.site}",
            ) as link:
                await link.subscribe(topics.events, qos=1)
                ready.set()
                async for message in link.messages():
                    into.append(json.loads(message.payload))
        except (BrokerError, TimeoutError, OSError):  # the broker is away, or slow to accept again
            await asyncio.sleep(0.05)


async def _until(predicate: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110  # reason: polls a list another task fills
            await asyncio.sleep(0.02)


async def test_broker_restart_mid_upgrade_loses_no_event(server: ServerDir, tmp_path: Path) -> None:
    """Mosquitto stops mid-upgrade and comes back: the upgrade ends, every event arrives, in order, no gap."""
    require_mosquitto()
    broker = Mosquitto(workdir=tmp_path, persistence=True)  # its sessions survive the restart
    broker.start()
    topics, received, ready = topics_of(server), list[dict[str, Any]](), asyncio.Event()

    def arrived() -> list[dict[str, Any]]:
        return [event for batch in received for event in batch["events"]]

    try:
        async with running_agent(server, broker.url, speed=60) as agent:  # a reboot takes 1.5 s
            watcher = asyncio.create_task(_watch_events(broker.url, topics, received, ready))
            await ready.wait()
            async with FleetClient.open(BrokerSettings(url=broker.url), default_operator()) as fleet:
                reply = (await fleet.request(topics.site, topics.serial, "upgrade", {"to": "7.1"})).reply
            assert reply.status == "accepted"
            await _until(lambda: any(e.get("state") == "trial_boot" for e in arrived()), 10)
            before = len(received)
            broker.stop()
            await asyncio.sleep(2.5)  # the reboot ends and the upgrade commits while the broker is away
            offline = [seq for seq, _ in agent.outbox.pending_payloads()]
            broker.start()
            await _until(lambda: any(e["type"] == "result" for e in arrived()), 15)
            watcher.cancel()
    finally:
        broker.stop()
    assert len(offline) >= 3  # committing, committed, result at least
    seqs = [event["seq"] for event in arrived()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order across batches: no gap, no repeat
    assert [e["state"] for e in arrived() if e["type"] == "transition"] == TRANSITIONS
    assert {batch["schema"] for batch in received} == {2}
    replayed = [[event["seq"] for event in batch["events"]] for batch in received[before:]]
    assert replayed == [offline]  # what was recorded offline came back as one batch
    assert server.committed().version == "7.1"


# Mosquitto 2.0.11 checks keep-alives on a coarse timer that lags further under load (seen here:
# 5 s to 9 s late for a 3 s deadline), so a frozen agent is timed against a baseline in the same
# run: a bare MQTT client that connects with the same keep-alive and a will at the moment the
# agent freezes, then never speaks again. Its deadline is the latest the agent's can be, so the
# agent must read offline no later than the baseline does (plus one broker tick).
BROKER_TICK = 1.0
DEATHS = [
    pytest.param(signal.SIGKILL, id="killed (the kernel closes its socket)"),
    pytest.param(signal.SIGSTOP, id="frozen (its socket stays open: keep-alive expiry)"),
]


@pytest.mark.parametrize("how", DEATHS)
async def test_dead_agent_reads_offline_within_one_and_a_half_keepalives(
    mosquitto: Mosquitto, server: ServerDir, how: signal.Signals
) -> None:
    """A killed or frozen agent process reads offline within 1.5 keep-alive periods (its last will)."""
    keepalive = 2
    topics = topics_of(server)
    silent_topic = f"{topics.availability}/baseline"
    argv = agent_cli("run", "--server-dir", str(server.root), "--broker", mosquitto.url)
    argv += ["--keepalive", str(keepalive), "--now", "2010-01-01"]
    process = subprocess.Popen(argv)  # noqa: ASYNC220  # reason: starts at once, never waited on here
    silent: asyncio.StreamWriter | None = None
    try:
        async with connect(BrokerSettings(url=mosquitto.url), protocol=Protocol.V5) as link:
            await link.subscribe(topics.availability, qos=1)
            await link.subscribe(silent_topic, qos=1)
            offline_at: dict[str, float] = {}
            watcher = asyncio.create_task(_offline_times(link, offline_at))
            await _until(lambda: "online" in offline_at, 10)
            await asyncio.sleep(keepalive * 1.2)  # it has been alive a while: pings flowed
            killed_at = time.monotonic()
            os.kill(process.pid, how)
            silent = await _silent_client(mosquitto, silent_topic, keepalive)
            await _until(lambda: {topics.availability, silent_topic} <= offline_at.keys(), 30)
            watcher.cancel()
    finally:
        process.kill()
        process.wait()
        if silent is not None:
            silent.close()
    elapsed = offline_at[topics.availability] - killed_at
    broker_lag = max(0.0, offline_at[silent_topic] - killed_at - 1.5 * keepalive)
    if how is signal.SIGKILL:
        assert elapsed <= 1.5 * keepalive, elapsed  # a closed socket fires the will at once
    assert elapsed <= 1.5 * keepalive + broker_lag + BROKER_TICK, (elapsed, broker_lag)


async def _offline_times(link: Any, seen: dict[str, float]) -> None:
    """Record when each availability topic first reads online (under "online") and offline."""
    message: Inbound
    async for message in link.messages():
        status = message.payload.decode()
        if status == "online":
            seen.setdefault("online", time.monotonic())
        elif status == "offline":
            seen.setdefault(message.topic, time.monotonic())


async def _silent_client(broker: Mosquitto, will_topic: str, keepalive: int) -> asyncio.StreamWriter:
    """Connect a bare MQTT 3.1.1 client with a retained QoS 1 will, then say nothing more."""

    def text(value: bytes) -> bytes:
        return len(value).to_bytes(2, "big") + value

    will = b"offline"
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retained
    body = text(b"MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
    body += text(b"silent-baseline") + text(will_topic.encode()) + text(will)
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(bytes([0x10, len(body)]) + body)
    await writer.drain()
    connack = await reader.readexactly(4)
    assert connack[0] == 0x20 and connack[3] == 0, connack
    return writer


async def _statuses(link: Any) -> Any:
    message: Inbound
    async for message in link.messages():
        yield json.loads(message.payload)["status"]


@pytest.mark.parametrize(("keepalive", "period"), [(2, 1.0), (30, 3.0), (60, 6.0), (600, 10.0)])
def test_link_housekeeping_runs_every_tenth_of_the_keepalive(keepalive: int, period: float) -> None:
    """paho's housekeeping (the PINGREQ) runs every keep-alive / 10 s, between 1 and 10 s."""
    from agent.mqtt.connection import misc_interval

    assert misc_interval(keepalive) == period
    assert period * 1.5 < keepalive or keepalive < 10  # a ping goes out well before the broker's 1.5x


PINGREQ, PINGRESP = 12, 13  # MQTT control packet types


class PacketRelay:
    """A TCP relay in front of a real broker that notes when each MQTT packet type passes, per direction.

    It reads the wire only (the fixed header's type and length); the broker answers everything.
    """

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.seen: dict[str, list[tuple[int, float]]] = {"client": [], "broker": []}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._noted = asyncio.Event()  # set whenever a packet is noted

    async def __aenter__(self) -> PacketRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"mqtt://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def times(self, side: str, kind: int) -> list[float]:
        """When packets of ``kind`` passed from ``side`` ("client" or "broker")."""
        return [at for packet, at in self.seen[side] if packet == kind]

    async def first(self, side: str, kind: int) -> float:
        """Return when the first packet of ``kind`` from ``side`` passed (waits for it)."""
        while not self.times(side, kind):
            self._noted.clear()
            await self._noted.wait()
        return self.times(side, kind)[0]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        for side, reader, writer in (("client", client_r, broker_w), ("broker", broker_r, client_w)):
            task = asyncio.create_task(self._pump(side, reader, writer))
            self._tasks.add(task)

    async def _pump(self, side: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
                buffer = self._note(side, buffer + chunk)
        finally:
            writer.close()

    def _note(self, side: str, buffer: bytes) -> bytes:
        """Record every whole packet at the head of ``buffer``; return the incomplete rest."""
        while len(buffer) >= 2:
            length, shift, at = 0, 0, 1
            while at < len(buffer) and at <= 4:
                length |= (buffer[at] & 0x7F) << shift
                shift += 7
                at += 1
                if not buffer[at - 1] & 0x80:
                    break
            else:
                return buffer  # the length field itself is incomplete
            if len(buffer) < at + length:
                return buffer
            self.seen[side].append((buffer[0] >> 4, time.monotonic()))
            self._noted.set()
            buffer = buffer[at + length :]
        return buffer


async def test_an_idle_link_pings_in_time_and_keeps_its_session(mosquitto: Mosquitto) -> None:
    """An idle link pings after its keep-alive, before the broker's 1.5x limit, and stays usable."""
    keepalive = 4  # housekeeping every second (misc_interval): the ping goes out 4-5 s after CONNECT
    async with PacketRelay(mosquitto.port) as relay:
        settings = BrokerSettings(url=relay.url, keepalive=keepalive)
        async with connect(settings, protocol=Protocol.V5, identifier="housekeeping") as link:
            connected = relay.seen["client"][0][1]
            async with asyncio.timeout(2 * keepalive):  # fails the test when no ping comes
                pinged = await relay.first("client", PINGREQ)
                await relay.first("broker", PINGRESP)
            await link.publish("housekeeping/alive", b"1", qos=1)  # the session is still up
        assert relay.seen["client"][0][0] == 1  # CONNECT opened the relayed connection
        assert pinged - connected >= keepalive * 0.9  # paho pings only once the keep-alive has passed
        assert pinged - connected < 1.5 * keepalive  # ...and before the broker would drop the link


async def test_a_publish_cancelled_as_its_puback_arrives_still_ends_its_task(mosquitto: Mosquitto) -> None:
    """A task cancelled while a QoS 1 publish waits for its PUBACK ends, even when the PUBACK comes at once.

    Python 3.11's ``asyncio.wait_for`` (inside aiomqtt) drops a cancellation that lands as the reply
    arrives; twenty publishers cancelled together, ten times over, hit that window several times.
    """
    import aiomqtt

    assert "_wait_for" in vars(aiomqtt.Client), "aiomqtt renamed the wait this link overrides"
    async with connect(BrokerSettings(url=mosquitto.url), protocol=Protocol.V5) as link:

        async def publish_forever() -> None:
            while True:
                await link.publish("cancel/race", b"x", qos=1)

        stuck = 0
        for spin in range(10):
            publishers = [asyncio.create_task(publish_forever()) for _ in range(20)]
            for _ in range(spin * 5):
                await asyncio.sleep(0)
            for task in publishers:
                task.cancel()
            _, pending = await asyncio.wait(publishers, timeout=5.0)
            stuck += len(pending)
            for task in pending:  # a second request ends what the first one lost
                task.cancel()
            await asyncio.wait(publishers, timeout=5.0)
    assert stuck == 0


async def test_mosquitto_sub_reads_plain_online_then_offline(server: ServerDir) -> None:
    """``mosquitto_sub`` on the availability wildcard prints exactly ``online`` for a running agent,
    and ``offline`` once it stopped."""
    require_mosquitto()
    own = Mosquitto()  # a broker of its own: the wildcard must see this agent's topic only
    own.start()
    command = ["mosquitto_sub", "-p", str(own.port), "-t", "allworx/+/+/availability", "-C", "1", "-W", "10"]
    try:
        async with running_agent(server, own.url):
            done = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=30
            )
        stopped = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=30)
    finally:
        own.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "online\n"
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "offline\n"
