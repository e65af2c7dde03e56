"""The operator's MQTT client: signed requests, their replies, the events that follow, retained state.

Request/response follows the contract (docs/mqtt.md): over MQTT 5 a request names a response
topic private to this client and correlation data; over MQTT 3.1.1 the client listens on
``cmd/{name}/accepted`` and ``cmd/{name}/rejected`` and matches the reply's ``client_token``.

Invariants: the client subscribes before it publishes, so no reply or event it waits for can
slip past; every wait is bounded by a timeout (``TimeoutError``); what it receives is parsed with
the contract's models (:mod:`agent.mqtt.messages`) as it arrives, and a message that does not fit
them is not taken for one (a reply that does not parse is a :class:`~common.errors.BrokerError`).

Retained documents are untrusted: anyone the broker lets publish can leave one. Every server
``state`` and ``availability`` an operator tool reads goes through :func:`check_state` and
:func:`check_availability` here, at the edge: an availability that is not the plain word
``online`` or ``offline``, a state that is not a JSON object of the contract's shape, whose
values are out of range (a release that is not a version, a site outside the topic alphabet), or
whose ``serial`` and ``site`` differ from its topic's is skipped and reported
as :class:`Invalid`, and the tool carries on with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agent.events import ResultEvent
from agent.mqtt.commands import sign_command
from agent.mqtt.connection import FLEET_MAX_PACKET, BrokerSettings, Inbound, Link, Protocol, connect
from agent.mqtt.messages import Availability, EventBatch, EventRecord, Reply, StateDocument
from agent.mqtt.topics import ServerTopics, all_states
from common.errors import BrokerError
from fleet.operator import OperatorKey

Matcher = Callable[[Inbound], bool]
EventSink = Callable[[EventRecord], None]


@dataclass(frozen=True, slots=True)
class Answer:
    """A command's reply and, when the client waited for it, the ``result`` event that ended the job."""

    reply: Reply
    result: EventRecord | None = None

    @property
    def outcome(self) -> ResultEvent | None:
        """The job's result (``succeeded``, ``rejected``, ``failed``, ``cancelled``), if waited for."""
        event = self.result.event if self.result is not None else None
        return event if isinstance(event, ResultEvent) else None


_LEVEL = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a topic level: site, serial, model
_VERSION = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,4}){1,3}$")  # 7.1
_BUILD = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,6}){1,5}$")  # 7.1.4.7
_STATE = re.compile(r"^[a-z_]{1,32}$")  # idle, staging, committed, ...


@dataclass(frozen=True, slots=True)
class Invalid:
    """A retained document skipped: its topic and why it does not validate."""

    topic: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The JSON form (``allworx-fleet status --json``)."""
        return {"topic": self.topic, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RetainedStates:
    """The servers' retained states read: those that validate, by topic order, and those skipped."""

    valid: list[StateDocument]
    invalid: list[Invalid]


def server_topic(topic: str) -> tuple[str, str, str] | None:
    """``(site, serial, kind)`` of ``allworx/{site}/{serial}/{kind}`` with valid levels, else None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "allworx" or parts[1] == "campaigns":
        return None
    if not (_LEVEL.match(parts[1]) and _LEVEL.match(parts[2])):
        return None
    return parts[1], parts[2], parts[3]


def _document(payload: bytes) -> dict[str, Any] | str:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return "not JSON"
    return document if isinstance(document, dict) else "not a JSON object"


def _matches(value: Any, pattern: re.Pattern[str]) -> bool:
    return isinstance(value, str) and pattern.match(value) is not None


def check_state(topic: str, payload: bytes) -> StateDocument | Invalid:
    """A retained ``state`` document if it validates against the contract and its topic, else why not."""
    where = server_topic(topic)
    document = _document(payload)
    if where is None or where[2] != "state":
        return Invalid(topic, "not a server's state topic (allworx/{site}/{serial}/state)")
    if isinstance(document, str):
        return Invalid(topic, document)
    problem = _state_problem(document, site=where[0], serial=where[1])
    if problem is not None:
        return Invalid(topic, problem)
    try:
        return StateDocument.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where_in = ".".join(str(part) for part in first["loc"]) or "(document)"
        return Invalid(topic, f"{where_in}: {first['msg']}"[:200])


def _state_problem(document: dict[str, Any], *, site: str, serial: str) -> str | None:
    """Why a state's identity or ranges do not hold (its topic's serial and site, the value patterns)."""
    for name, expected in (("serial", serial), ("site", site)):
        if document.get(name) != expected:
            return f"{name} {str(document.get(name))[:64]!r} is not the topic's {expected!r}"
    for name, pattern in (("model", _LEVEL), ("release", _VERSION), ("build", _BUILD), ("state", _STATE)):
        if not _matches(document.get(name), pattern):
            return f"{name} {str(document.get(name))[:64]!r} is out of range"
    schema = document.get("db_schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 0:
        return f"db_schema {str(schema)[:64]!r} is not a whole number"
    last = document.get("last_result")
    if isinstance(last, dict):
        for name in ("at", "outcome", "reason", "rule", "message"):
            if last.get(name) is not None and not isinstance(last.get(name), str):
                return f"last_result.{name} is not text"
    return None


def check_availability(topic: str, payload: bytes) -> bool | Invalid:
    """Whether a retained ``availability`` says online (an empty one: offline), or why it is invalid.

    The payload is the plain word ``online`` or ``offline``; anything else (JSON included) is invalid.
    """
    where = server_topic(topic)
    if where is None or where[2] != "availability":
        return Invalid(topic, "not a server's availability topic")
    if not payload:
        return False
    try:
        return Availability.parse(payload).root == "online"
    except ValueError as exc:
        return Invalid(topic, str(exc)[:200])


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
    def watch(self, matches: Matcher) -> Iterator[asyncio.Queue[Inbound]]:
        """Collect, while the block runs, every message ``matches`` accepts (an ``asyncio.Queue``)."""
        entry: tuple[Matcher, asyncio.Queue[Inbound]] = (matches, asyncio.Queue())
        self._queues.append(entry)
        try:
            yield entry[1]
        finally:
            self._queues.remove(entry)

    async def request(
        self,
        site: str,
        serial: str,
        name: str,
        args: Mapping[str, Any],  # the JSON edge: the arguments as signed
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  # reason: a reply deadline, not a cancellation scope
        wait: float | None = None,
        on_event: EventSink | None = None,
    ) -> Answer:
        """Sign and send one command; return the agent's reply.

        With ``wait`` (seconds), an accepted command's answer also holds the first ``result``
        event after the reply (the upgrade's end); ``on_event`` sees every event meanwhile.

        Raises:
            RuntimeError: no operator key was given.
            BrokerError: the connection failed, or the reply is not one of the contract.
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
            return Answer(await self.send_raw(topics, name, payload, token, timeout=timeout))
        with self.watch(lambda m: m.topic == topics.events) as events:
            await self.link.subscribe(topics.events, qos=1)
            reply = await self.send_raw(topics, name, payload, token, timeout=timeout)
            if reply.status != "accepted":
                return Answer(reply)
            async with asyncio.timeout(wait):
                return Answer(reply, await _until_result(events, reply.seq or 0, on_event))

    async def send(
        self,
        site: str,
        serial: str,
        name: str,
        args: Mapping[str, Any],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  # reason: a reply deadline, not a cancellation scope
    ) -> dict[str, Any]:
        """Like :meth:`request` without waiting, but return the reply's JSON form (the JSON edge
        for callers that read replies by key).

        Raises:
            RuntimeError: no operator key was given.
            BrokerError: the connection failed, or the reply is not one of the contract.
            TimeoutError: no reply within ``timeout`` seconds.
        """
        answer = await self.request(site, serial, name, args, timeout=timeout)
        return answer.reply.wire()

    async def send_raw(
        self,
        topics: ServerTopics,
        name: str,
        payload: bytes,
        token: str | None,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  # reason: a reply deadline, not a cancellation scope
    ) -> Reply:
        """Publish ``payload`` on ``cmd/{name}`` and return the reply (tests send malformed ones).

        Raises:
            BrokerError: the connection failed, or the reply is not one of the contract.
            TimeoutError: no reply within ``timeout`` seconds.
        """
        correlation = secrets.token_bytes(8)
        v5 = self.link.protocol is Protocol.V5
        reply_topic = f"allworx-fleet/{self.identifier}/reply"
        watched = reply_topic if v5 else f"{topics.command(name)}/+"

        def mine(message: Inbound) -> bool:
            if v5:
                return message.topic == reply_topic and message.correlation_data == correlation
            if message.topic not in (topics.accepted(name), topics.rejected(name)):
                return False
            reply = _reply(message)
            return reply is not None and (token is None or reply.client_token == token)

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
        try:
            return Reply.model_validate_json(message.payload)
        except ValidationError as exc:
            raise BrokerError(f"the reply on {message.topic} is not a reply of the contract: {exc}") from exc

    async def states(self, site: str | None = None, settle: float = 0.5) -> list[StateDocument]:
        """Return every server's retained state that validates (of one site, or all).

        A retained message that is not a state of the contract is left out.

        Raises:
            BrokerError: the connection failed.
        """
        return (await self.read_states(site, settle)).valid

    async def retained(self, topics: str, matches: Matcher, settle: float) -> dict[str, bytes]:
        """Every message on ``topics`` (a filter) that ``matches`` accepts, the last by topic, read
        until ``settle`` s of silence; an empty one clears its topic.

        Raises:
            BrokerError: the connection failed.
        """
        found: dict[str, bytes] = {}
        with self.watch(matches) as queue:
            await self.link.subscribe(topics, qos=1)
            while True:
                try:
                    async with asyncio.timeout(settle):
                        message = await queue.get()
                except TimeoutError:
                    break
                if message.payload:
                    found[message.topic] = message.payload
                else:
                    found.pop(message.topic, None)
        return found

    async def read_states(self, site: str | None = None, settle: float = 0.5) -> RetainedStates:
        """Read every server's retained state (of one site, or all) until ``settle`` s of quiet;
        each is checked (:func:`check_state`), and those that do not validate are set apart.

        Raises:
            BrokerError: the connection failed.
        """
        read = await self.retained(
            all_states(site), lambda m: m.topic.endswith("/state") and m.topic.startswith("allworx/"), settle
        )
        found = {topic: check_state(topic, payload) for topic, payload in read.items()}
        checked = [found[t] for t in sorted(found)]
        return RetainedStates(
            [doc for doc in checked if not isinstance(doc, Invalid)],
            [doc for doc in checked if isinstance(doc, Invalid)],
        )


def _reply(message: Inbound) -> Reply | None:
    """The reply ``message`` carries, or None when it is not one of the contract."""
    try:
        return Reply.model_validate_json(message.payload)
    except ValidationError:
        return None


async def _until_result(
    events: asyncio.Queue[Inbound], after: int, on_event: EventSink | None
) -> EventRecord:
    """The first ``result`` event numbered after ``after``; every new event goes to ``on_event``.

    Each message is a batch: its events are taken in order, and a ``seq`` seen before (a
    redelivered batch) is dropped.
    """
    seen: set[int] = set()
    while True:
        message = await events.get()
        try:
            batch = EventBatch.model_validate_json(message.payload)
        except ValidationError:  # not an events message of the contract
            continue
        for record in batch.events:
            seq = record.seq
            if seq is None or seq <= after or seq in seen:  # older, or a redelivery
                continue
            seen.add(seq)
            if on_event is not None:
                on_event(record)
            if isinstance(record.event, ResultEvent):
                return record
