"""A link's QoS 1 publish against a real Mosquitto: its errors, its writes, and the library internals it uses.

The link waits for a PUBACK on a future of its own, writes on the event loop's next turn, and hands
plain PUBACKs to paho's ``on_publish`` without decoding them; these tests pin the aiomqtt and paho
behaviour that relies on, so a library upgrade that changes it fails here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.mqtt.connection import FLEET_MAX_PACKET, BrokerSettings, Link, Protocol, connect
from common.errors import BrokerError
from simulator.broker import Mosquitto
from tests.integration.conftest import require_mosquitto


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    """A Mosquitto of the test's own, free to be stopped or killed."""
    require_mosquitto()
    broker = Mosquitto()
    broker.start()
    yield broker
    _signal(broker, signal.SIGCONT)
    broker.close()


def _signal(broker: Mosquitto, number: signal.Signals) -> None:
    process = broker._process  # the test freezes and kills it
    if process is not None and process.poll() is None:
        os.kill(process.pid, number)


def _paho(link: Link) -> Any:
    return link._client._client


async def test_a_publish_unacknowledged_in_time_raises_broker_error(own_broker: Mosquitto) -> None:
    """A QoS 1 publish to a broker that stopped answering raises BrokerError once the timeout passed."""
    settings = BrokerSettings(url=own_broker.url, timeout=0.5)
    async with connect(settings, protocol=Protocol.V5) as link:
        await link.publish("publish/timeout", b"1", qos=1)
        _signal(own_broker, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(BrokerError, match="timed out"):
            async with asyncio.timeout(10):  # the test's own bound: a publish that never ends fails it
                await link.publish("publish/timeout", b"2", qos=1)
        waited = time.monotonic() - started
        _signal(own_broker, signal.SIGCONT)
    assert waited >= 0.4


async def test_a_publish_in_flight_when_the_broker_dies_raises_broker_error_at_once(
    own_broker: Mosquitto,
) -> None:
    """A QoS 1 publish waiting for its PUBACK when the broker is killed raises BrokerError on the
    disconnect, long before its 30 s timeout."""
    settings = BrokerSettings(url=own_broker.url, timeout=30.0)
    async with connect(settings, protocol=Protocol.V5) as link:
        await link.publish("publish/killed", b"1", qos=1)
        _signal(own_broker, signal.SIGSTOP)  # the PUBLISH is taken in, never acknowledged
        waiting = asyncio.create_task(link.publish("publish/killed", b"2", qos=1))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        killed = time.monotonic()
        _signal(own_broker, signal.SIGKILL)
        with pytest.raises(BrokerError, match="Disconnected"):
            async with asyncio.timeout(10):  # the test's own bound
                await waiting
        failed = time.monotonic() - killed
        with pytest.raises(BrokerError, match="not currently connected"):
            await link.publish("publish/killed", b"3", qos=1)
    assert failed < 5.0


async def test_a_message_larger_than_the_socket_buffer_is_written_whole(own_broker: Mosquitto) -> None:
    """A publish the socket cannot take at once is finished when the socket drains, and acknowledged."""
    payload = os.urandom(8 << 20)  # 8 MiB: far beyond a loopback socket's send buffer
    settings = BrokerSettings(url=own_broker.url, timeout=20.0)
    v5, most = Protocol.V5, FLEET_MAX_PACKET
    async with connect(settings, protocol=v5, identifier="large-reader", max_packet=most) as reader:
        await reader.subscribe("publish/large")
        async with connect(settings, protocol=v5, identifier="large-writer", max_packet=most) as writer:
            await writer.publish("publish/large", payload, qos=1)
            assert not _paho(writer).want_write()
        async with asyncio.timeout(20):
            received = await anext(aiter(reader.messages()))
    assert received.payload == payload


async def test_plain_pubacks_reach_on_publish_undecoded_and_leave_paho_clean(own_broker: Mosquitto) -> None:
    """Every PUBACK of success from Mosquitto (0x00 with a subscriber, 0x10 without) reaches paho's
    on_publish with the link's shared properties, and paho's in-flight bookkeeping ends empty."""
    import aiomqtt
    from paho.mqtt.client import Client as PahoClient

    from agent.mqtt import connection

    for name in ("publish", "_on_publish", "_on_disconnect", "_on_socket_register_write"):
        assert name in vars(aiomqtt.Client), f"aiomqtt renamed {name}, which the link overrides"
    assert "_handle_pubackcomp" in vars(PahoClient), "paho renamed the PUBACK handler the link replaces"
    settings = BrokerSettings(url=own_broker.url)
    async with connect(settings, protocol=Protocol.V5, identifier="puback-reader") as reader:
        await reader.subscribe("publish/heard")
        async with connect(settings, protocol=Protocol.V5, identifier="puback-writer") as link:
            paho = _paho(link)
            seen: list[tuple[int, Any]] = []
            forward = paho.on_publish

            def note(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
                seen.append((reason.value, properties))
                forward(client, userdata, mid, reason, properties)

            paho.on_publish = note
            for _ in range(50):
                await asyncio.gather(
                    link.publish("publish/heard", b"x", qos=1), link.publish("publish/unheard", b"y", qos=1)
                )
            assert paho._out_messages == {}  # paho's bookkeeping, as its handler leaves it
            assert paho._inflight_messages == 0
    assert len(seen) == 100
    assert {reason for reason, _ in seen} == {0x00, 0x10}
    assert all(properties is connection._NO_PROPERTIES for _, properties in seen)
