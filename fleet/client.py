"""The operator's MQTT client: signed requests, their replies, the events that follow, retained state.

Request/response follows the contract (docs/mqtt.md): over MQTT 5 a request names a response
topic private to this client and correlation data; over MQTT 3.1.1 the client listens on
``cmd/{name}/accepted`` and ``cmd/{name}/rejected`` and matches the reply's ``client_token``.

Invariants: the client subscribes before it publishes, so no reply or event it waits for can
slip past; every wait is bounded by a timeout (``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.mqtt.commands import sign_command
from agent.mqtt.connection import FLEET_MAX_PACKET, BrokerSettings, Inbound, Link, Protocol, connect
from agent.mqtt.topics import ServerTopics, all_states
from common.errors import BrokerError
from fleet.operator import OperatorKey

Matcher = Callable[[Inbound], bool]


class FleetClient:
    """One connection of the operator (``async with FleetClient.open(...) as client``)."""

    def __init__(self, link: Link, operator: OperatorKey | None, identifier: str) -> None:
        self.link = link
        self.operator = operator
        self.identifier = identifier
        self._queues: list[tuple[Matcher, asyncio.Queue[Inbound]]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: BrokerSettings, operator: OperatorKey | None = None, protocol: Protocol | None = None
    ) -> AsyncIterator[FleetClient]:
        """Connect (MQTT 5, else 3.1.1) and route messages until the block ends.

        Raises:
            BrokerError: the broker is unreachable or the connection dropped.
        """
        identifier = f"allworx-fleet-{secrets.token_hex(6)}"
        versions = [protocol] if protocol else [Protocol.V5, Protocol.V311]
        for version in versions:
            try:
                async with connect(
                    settings, protocol=version, identifier=identifier, max_packet=FLEET_MAX_PACKET
                ) as link:
                    client = cls(link, operator, identifier)
                    async with asyncio.TaskGroup() as tasks:
                        router = tasks.create_task(client._route(), name="route")
                        try:
                            yield client
                        finally:
                            router.cancel()
                    return
            except BrokerError as exc:
                if not (exc.protocol_refused and version is Protocol.V5 and len(versions) > 1):
                    raise

    async def _route(self) -> None:
        async for message in self.link.messages():
            for matches, queue in self._queues:
                if matches(message):
                    queue.put_nowait(message)

    @contextlib.contextmanager
    def watch(self, matches: Matcher) -> Any:
        """Collect, while the block runs, every message ``matches`` accepts (an ``asyncio.Queue``)."""
        entry: tuple[Matcher, asyncio.Queue[Inbound]] = (matches, asyncio.Queue())
        self._queues.append(entry)
        try:
            yield entry[1]
        finally:
            self._queues.remove(entry)

    async def send(
        self,
        site: str,
        serial: str,
        name: str,
        args: Mapping[str, Any],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  # reason: a reply deadline, not a cancellation scope
        wait: float | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Sign and send one command; return the agent's reply.

        With ``wait`` (seconds), an accepted command's reply also gets ``"result"``: the first
        ``result`` event after it (the upgrade's end); ``on_event`` sees every event meanwhile.

        Raises:
            RuntimeError: no operator key was given.
            BrokerError: the connection failed.
            TimeoutError: no reply within ``timeout`` seconds, or no result within ``wait``.
        """
        if self.operator is None:
            raise RuntimeError("an operator key is needed to send commands")
        topics = ServerTopics(site, serial)
        command = sign_command(
            self.operator.private, name, args, site=site, serial=serial, now=datetime.now(UTC)
        )
        payload, token = json.dumps(command).encode(), command["client_token"]
        if wait is None:
            return await self.send_raw(topics, name, payload, token, timeout=timeout)
        with self.watch(lambda m: m.topic == topics.events) as events:
            await self.link.subscribe(topics.events, qos=1)
            reply = await self.send_raw(topics, name, payload, token, timeout=timeout)
            if reply.get("status") == "accepted":
                async with asyncio.timeout(wait):
                    reply["result"] = await _until_result(events, int(reply.get("seq") or 0), on_event)
        return reply

    async def send_raw(
        self,
        topics: ServerTopics,
        name: str,
        payload: bytes,
        token: str | None,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  # reason: a reply deadline, not a cancellation scope
    ) -> dict[str, Any]:
        """Publish ``payload`` on ``cmd/{name}`` and return the reply (tests send malformed ones).

        Raises:
            BrokerError: the connection failed.
            TimeoutError: no reply within ``timeout`` seconds.
        """
        correlation = secrets.token_bytes(8)
        v5 = self.link.protocol is Protocol.V5
        reply_topic = f"allworx-fleet/{self.identifier}/reply"
        watched = reply_topic if v5 else f"{topics.command(name)}/+"

        def mine(message: Inbound) -> bool:
            if v5:
                return message.topic == reply_topic and message.correlation_data == correlation
            return message.topic in (topics.accepted(name), topics.rejected(name)) and (
                token is None or _field(message, "client_token") == token
            )

        with self.watch(mine) as queue:
            await self.link.subscribe(watched, qos=1)
            await self.link.publish(
                topics.command(name),
                payload,
                qos=1,
                response_topic=reply_topic if v5 else None,
                correlation_data=correlation if v5 else None,
            )
            async with asyncio.timeout(timeout):
                message = await queue.get()
        return dict(json.loads(message.payload))

    async def states(self, site: str | None = None, settle: float = 0.5) -> list[dict[str, Any]]:
        """Return every server's retained state (of one site, or all), read until ``settle`` s of quiet.

        Raises:
            BrokerError: the connection failed.
        """
        found: dict[str, dict[str, Any]] = {}
        with self.watch(lambda m: m.topic.endswith("/state") and m.topic.startswith("allworx/")) as queue:
            await self.link.subscribe(all_states(site), qos=1)
            while True:
                try:
                    async with asyncio.timeout(settle):
                        message = await queue.get()
                except TimeoutError:
                    break
                with contextlib.suppress(ValueError):
                    found[message.topic] = dict(json.loads(message.payload))
        return [found[t] for t in sorted(found)]


def _field(message: Inbound, name: str) -> Any:
    try:
        return json.loads(message.payload).get(name)
    except (ValueError, AttributeError):
        return None


async def _until_result(
    events: asyncio.Queue[Inbound], after: int, on_event: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any]:
    seen: set[int] = set()
    while True:
        message = await events.get()
        try:
            event = dict(json.loads(message.payload))
        except ValueError:
            continue
        seq = event.get("seq")
        if not isinstance(seq, int) or seq <= after or seq in seen:  # older, or a redelivery
            continue
        seen.add(seq)
        if on_event is not None:
            on_event(event)
        if event.get("type") == "result":
            return event
