"""The broker link: the one module that touches aiomqtt and paho-mqtt.

Every aiomqtt/paho error is translated to :class:`~common.errors.BrokerError` here
(``raise ... from exc``); callers never import either library. One :func:`connect` call is one
connection attempt: the reconnect loop, backoff and protocol fallback live in the caller.

Invariants: MQTT 5 is asked for first; a broker that refuses it (old brokers, amqtt), or accepts
the socket but never answers the MQTT 5 CONNECT within ``connect_timeout`` (amqtt when the
CONNECT carries a will), raises ``BrokerError(protocol_refused=True)`` so the caller can retry
with 3.1.1. Messages received carry
their MQTT 5 response topic and correlation data when the broker forwarded them.

Size: an MQTT 5 CONNECT carries a Maximum Packet Size (:data:`AGENT_MAX_PACKET` by default, a
command and its headers; the operator side asks :data:`FLEET_MAX_PACKET`), so the broker drops a
larger message for this client instead of sending it: one oversized publish never reaches the
process's memory. Over MQTT 3.1.1 there is no such property: the broker's own limit
(``message_size_limit``, written by ``simulator/broker.py``) is then the only bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttCodeError, MqttConnectError
from paho.mqtt.client import MQTT_ERR_SUCCESS, MQTTv5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.limits import MIB
from agent.mqtt.messages import MAX_COMMAND_BYTES
from common.errors import BrokerError

T = TypeVar("T")
_REFUSED_PROTOCOL = {1, 132}  # CONNACK: 3.1.1 "unacceptable protocol version", MQTT 5 "unsupported"
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with this client id
PACKET_HEADROOM = 16 * 1024  # bytes of an MQTT packet beside its payload: topic, properties, header
AGENT_MAX_PACKET = MAX_COMMAND_BYTES + PACKET_HEADROOM  # an agent receives commands only
LARGEST_MESSAGE = 64 * MIB  # bytes of payload, the largest message of the fleet: a campaign's whole state
FLEET_MAX_PACKET = LARGEST_MESSAGE + PACKET_HEADROOM  # the operator side: states, events, campaign states


class Protocol(StrEnum):
    """The MQTT protocol versions spoken."""

    V5 = "5"
    V311 = "3.1.1"


KEEPALIVE = 30  # seconds, the default keep-alive


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to connect.

    Raises:
        ValueError: on construction, when the URL is not ``mqtt://host[:port]`` or ``mqtts://``.
    """

    url: str = "mqtt://127.0.0.1:1883"
    ca: str | None = None  # a CA bundle file (mqtts)
    cert: str | None = None  # a client certificate file (mqtts, mutual TLS)
    key: str | None = None  # the client certificate's key file
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = KEEPALIVE  # seconds; a dead agent reads offline within 1.5 of these
    timeout: float = 10.0  # seconds for each broker operation
    connect_timeout: float = 3.0  # seconds to wait for the CONNACK

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        try:
            port = parts.port  # raises on a port that is not a number in 0..65535
        except ValueError:
            port = -1
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or port in (0, -1):
            raise ValueError(f"broker URL {self.url!r} must be mqtt://host:port or mqtts://host:port")
        if self.keepalive < 1:
            raise ValueError("keepalive must be at least 1 second")

    @property
    def host(self) -> str:
        """The broker's host name."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The broker's port (1883 for mqtt://, 8883 for mqtts:// unless given)."""
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``mqtts://`` (None for plain ``mqtt://``).

        Raises:
            BrokerError: a CA, certificate or key file cannot be loaded.
        """
        if urlsplit(self.url).scheme != "mqtts":
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert:
                context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(f"cannot load TLS material: {exc}") from exc
        return context


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message received."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


class Link:
    """One live connection: publish, subscribe, receive; every error is a :class:`BrokerError`."""

    def __init__(self, client: aiomqtt.Client, protocol: Protocol) -> None:
        self._client = client
        self.protocol = protocol

    @property
    def taken_over(self) -> bool:
        """Whether the broker ended this session because another client connected with its id
        (MQTT 5 DISCONNECT reason 0x8E "session taken over"; MQTT 3.1.1 cannot say so)."""
        return getattr(self._client, "disconnect_reason", None) == SESSION_TAKEN_OVER

    def bound(self, seconds: float) -> None:
        """Bound every later operation, the closing DISCONNECT included, to ``seconds``.

        For a stop: over TLS the broker's close is sometimes not noticed, and aiomqtt then waits
        the whole operation timeout for a disconnect that already happened.
        """
        self._client.timeout = seconds

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        """Publish and, at QoS 1, wait for the broker's PUBACK.

        Raises:
            BrokerError: the connection failed or the broker did not acknowledge in time.
        """
        props = None
        if self.protocol is Protocol.V5 and (response_topic or correlation_data):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # reason: paho is untyped here
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data:
                props.CorrelationData = correlation_data
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except (aiomqtt.MqttError, OSError, RuntimeError) as exc:
            raise BrokerError(f"publish to {topic} failed: {exc}") from exc

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe to a topic filter.

        Raises:
            BrokerError: the connection failed or the broker refused.
        """
        try:
            await self._client.subscribe(topic, qos=qos)
        except (aiomqtt.MqttError, OSError) as exc:
            raise BrokerError(f"subscribe to {topic} failed: {exc}") from exc

    async def messages(self) -> AsyncIterator[Inbound]:
        """Yield received messages until the connection ends.

        Raises:
            BrokerError: the connection was lost.
        """
        client = self._client
        try:
            async for message in client.messages:
                yield _inbound(message)
                while (ready := _ready(client)) is not None:  # already received: no waiting set up
                    yield _inbound(ready)
        except (aiomqtt.MqttError, OSError) as exc:
            raise BrokerError(f"connection lost: {exc}") from exc


def _ready(client: aiomqtt.Client) -> aiomqtt.Message | None:
    """The next message already received, if any (a :class:`_Client`'s queue, read without waiting)."""
    return client.take_ready() if isinstance(client, _Client) else None


def _inbound(message: aiomqtt.Message) -> Inbound:
    props: Any = message.properties
    response = getattr(props, "ResponseTopic", None) if props is not None else None
    correlation = getattr(props, "CorrelationData", None) if props is not None else None
    payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
    return Inbound(str(message.topic), payload, bool(message.retain), response, correlation)


PENDING_CALLS_WARNING = 20_000  # unacknowledged publishes on one link before aiomqtt logs a warning


class _Client(aiomqtt.Client):
    """aiomqtt's client with a cheaper QoS 1 publish, and paho's housekeeping every ``misc_interval`` s.

    A publish waits for its PUBACK on a plain future that paho's ``on_publish`` resolves, bounded by
    a timer, instead of aiomqtt's event, ``asyncio.wait_for`` and the task it starts for each wait;
    a plain future never loses a cancellation. The errors are aiomqtt's: ``MqttCodeError`` when paho
    refuses the publish (not connected), ``MqttError("Operation timed out")`` past the timeout. A
    publish still waiting when the connection ends fails at once (aiomqtt would wait the timeout).
    A PUBACK of success (two bytes: no reason code, no properties) reaches ``on_publish`` with shared
    reason and properties objects instead of new ones for each (:func:`_fast_puback`).

    The housekeeping (``loop_misc``) sends the keep-alive PINGREQ and notices a silent broker; a
    tenth of the keep-alive is precise enough for both, and costs a process hosting many idle
    sessions far less than aiomqtt's fixed 1 s.
    """

    misc_interval = 1.0
    disconnect_reason: int | None = None  # the reason code of the broker's DISCONNECT (MQTT 5), if any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[None]] = {}  # message id -> the publish waiting for it
        _fast_puback(self._client)

    async def publish(  # type: ignore[override]  # reason: aiomqtt's decorated signature, narrowed
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109  # reason: aiomqtt's keyword, applied by a timer
    ) -> None:
        """Publish; at QoS 1 and 2 wait for the broker's acknowledgement (aiomqtt's errors).

        Raises:
            MqttCodeError: paho refused the publish (the client is not connected).
            MqttError: no acknowledgement within ``timeout`` (the client's by default), or the
                connection ended first.
        """
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != MQTT_ERR_SUCCESS:
            cause = self._disconnected.exception() if self._disconnected.done() else None
            raise MqttCodeError(info.rc, "Could not publish message") from cause
        if info.is_published():  # QoS 0 written at once
            return
        mid, ack = info.mid, self._loop.create_future()
        self._acks[mid] = ack
        seconds = self.timeout if timeout is None else timeout
        timer = self._loop.call_later(seconds, _expire, ack) if seconds != math.inf else None
        try:
            await ack
        finally:
            if self._acks.get(mid) is ack:
                del self._acks[mid]
            if timer is not None:
                timer.cancel()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        ack = self._acks.pop(mid, None)
        if ack is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not ack.done():
            ack.set_result(None)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        if isinstance(reason_code, ReasonCode) and self.disconnect_reason is None:
            self.disconnect_reason = (
                reason_code.value
            )  # the first: paho may report the socket's close after it
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        acks, self._acks = self._acks, {}
        for ack in acks.values():  # no PUBACK comes on a connection that ended
            if not ack.done():
                ack.set_exception(aiomqtt.MqttError("Disconnected before the broker acknowledged"))

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        """paho has bytes to send: on the event loop's thread they are written on the loop's next turn.

        aiomqtt registers a writer for each publish (two epoll changes, and a wake-up of the loop
        through its self-pipe, to write what the socket would have taken at once); the socket is
        registered only when it cannot take everything. paho calls this from the connect executor's
        thread too: that call goes to aiomqtt's thread-safe registration.
        """
        if asyncio._get_running_loop() is not self._loop:  # the connect executor's thread
            super()._on_socket_register_write(client, userdata, sock)
            return
        self._loop.call_soon(self._write_now, client, sock)

    def _write_now(self, client: Any, sock: Any) -> None:
        try:
            client.loop_write()
        except Exception as exc:  # as aiomqtt's writer: any error ends the link
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
            return
        if client.want_write() and client.socket() is sock:  # the socket is full: write when it drains
            super()._on_socket_register_write(client, None, sock)

    def take_ready(self) -> aiomqtt.Message | None:
        """A message already received, or None: a flood is read in one pass, without aiomqtt setting
        up a task and a wait for each message (most of the cost of one it would reject at once)."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _misc_loop(self) -> None:  # aiomqtt 2.x's housekeeping task, same loop, its own period
        while self._client.loop_misc() == MQTT_ERR_SUCCESS:  # noqa: ASYNC110  # reason: a periodic task, as aiomqtt's
            await asyncio.sleep(self.misc_interval)

    async def _wait_for(  # aiomqtt's own signature, overridden
        self,
        fut: Awaitable[T],
        timeout: float | None,  # noqa: ASYNC109  # reason: aiomqtt's signature; its wait applies it
    ) -> T:
        """aiomqtt's bounded wait for a reply (CONNACK, SUBACK), never losing a cancellation.

        Python 3.11's ``asyncio.wait_for`` returns the result, and drops the cancellation, when a task
        is cancelled just as the reply arrives (measured: about one QoS 1 publish in a thousand
        cancelled mid-flight). A stopping agent then kept serving and a fleet's shutdown waited for
        it forever. A cancellation requested while waiting is raised here once the wait returns.
        """
        task = asyncio.current_task()
        requested = task.cancelling() if task is not None else 0
        result = await super()._wait_for(fut, timeout)
        if task is not None and task.cancelling() > requested:
            raise asyncio.CancelledError
        return result


def _expire(ack: asyncio.Future[None]) -> None:
    """A publish's timer: no acknowledgement in time (aiomqtt's error and words)."""
    if not ack.done():
        ack.set_exception(aiomqtt.MqttError("Operation timed out"))


_PUBACK_REASONS = {  # the successes a broker answers a publish with, decoded once
    code: ReasonCode(PacketTypes.PUBACK, identifier=code)
    for code in (0x00, 0x10)  # success; success, but no subscriber matched (Mosquitto says so)
}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]  # reason: paho is untyped here


def _fast_puback(paho: Any) -> None:
    """Have ``paho`` hand a PUBACK of success to ``on_publish`` without decoding objects for it.

    paho 2.x decodes every PUBACK into a new ``ReasonCode`` and MQTT 5 ``Properties`` (most of the
    cost of reading it). A PUBACK without properties (the message id, then a reason code when it
    is not 0, then a properties length of 0 when given) whose reason is one of
    :data:`_PUBACK_REASONS` means the same each time: the shared reason and :data:`_NO_PROPERTIES`
    go to ``on_publish`` instead. Any other acknowledgement goes to paho's own handler.

    This replaces paho's private ``_handle_pubackcomp`` on the instance, and reads its
    ``_in_packet``, ``_out_message_mutex``, ``_out_messages`` and ``_do_on_publish``; a test
    against Mosquitto checks that the PUBACKs take this way and that paho's bookkeeping ends as its
    own handler leaves it.
    """
    original = paho._handle_pubackcomp  # the one paho hook for a PUBACK
    longest = 4 if paho._protocol == MQTTv5 else 2  # 3.1.1: the message id alone

    def handle(cmd: str) -> Any:  # paho's MQTTErrorCode
        packet = paho._in_packet["packet"]  # the packet being handled
        size = len(packet)
        reason = _PUBACK_REASONS.get(packet[2] if size > 2 else 0)
        if cmd != "PUBACK" or not 2 <= size <= longest or (size == 4 and packet[3]) or reason is None:
            return original(cmd)
        mid = (packet[0] << 8) | packet[1]
        with paho._out_message_mutex:
            if mid in paho._out_messages:
                return paho._do_on_publish(mid, reason, _NO_PROPERTIES)
        return MQTT_ERR_SUCCESS

    paho._handle_pubackcomp = handle


def misc_interval(keepalive: int) -> float:
    """How often a link does paho's housekeeping: a tenth of the keep-alive, between 1 and 10 s."""
    return min(10.0, max(1.0, keepalive / 10))


def _client(  # noqa: PLR0917  # reason: one connection's every setting, passed on to aiomqtt
    settings: BrokerSettings,
    protocol: Protocol,
    identifier: str | None,
    will: tuple[str, bytes] | None,
    clean: bool,
    max_packet: int,
) -> aiomqtt.Client:
    version = aiomqtt.ProtocolVersion.V5 if protocol is Protocol.V5 else aiomqtt.ProtocolVersion.V311
    connect_props = None
    if protocol is Protocol.V5:
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # reason: paho is untyped here
        connect_props.MaximumPacketSize = max_packet  # the broker drops larger messages for us
    client = _Client(
        settings.host,
        settings.port,
        identifier=identifier,
        protocol=version,
        will=aiomqtt.Will(will[0], will[1], qos=1, retain=True) if will else None,
        username=settings.username,
        password=settings.password,
        keepalive=settings.keepalive,
        timeout=settings.connect_timeout,
        tls_context=settings.tls_context(),
        clean_session=clean if protocol is Protocol.V311 else None,
        properties=connect_props,
    )
    # aiomqtt warns on every publish past 10 unacknowledged ones; a campaign controller keeps
    # thousands of commands in flight on purpose (QoS 1 throughput needs publishes in flight).
    client.pending_calls_threshold = PENDING_CALLS_WARNING
    client.misc_interval = misc_interval(settings.keepalive)
    return client


@contextlib.asynccontextmanager
async def connect(
    settings: BrokerSettings,
    *,
    protocol: Protocol,
    identifier: str | None = None,
    will: tuple[str, bytes] | None = None,
    clean: bool = True,
    max_packet: int = AGENT_MAX_PACKET,
) -> AsyncIterator[Link]:
    """Open one connection (the last will, if any, is retained at QoS 1).

    ``clean=False`` asks for a persistent session (MQTT 3.1.1 only): the broker keeps the
    subscriptions and queues QoS 1 messages while this identifier is away. ``max_packet`` (bytes)
    is the MQTT 5 Maximum Packet Size asked for: the broker sends nothing larger.

    Raises:
        BrokerError: the broker is unreachable, refused us, or the protocol (``protocol_refused``).
    """
    client = _client(settings, protocol, identifier, will, clean, max_packet)
    entered, body_error = False, None
    try:
        async with client:
            entered = True
            client.timeout = settings.timeout
            try:
                yield Link(client, protocol)
            except BaseException as exc:  # the caller's own exceptions pass through untranslated
                body_error = exc
                raise
    except MqttConnectError as exc:
        code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        refused = code in _REFUSED_PROTOCOL
        raise BrokerError(f"{settings.url} refused MQTT {protocol}: {exc}", protocol_refused=refused) from exc
    except (aiomqtt.MqttError, OSError) as exc:
        if exc is body_error:
            raise
        if isinstance(body_error, asyncio.CancelledError):
            # a stop (SIGTERM) wins over a disconnect that failed on the way out: turning it into a
            # BrokerError would make the caller reconnect instead of stopping
            raise body_error from exc
        # a broker that accepts the socket but never answers an MQTT 5 CONNECT (amqtt does this when
        # the CONNECT carries a will) is treated as refusing MQTT 5
        silent = (
            not entered
            and protocol is Protocol.V5
            and not isinstance(exc, OSError)
            and "timed out" in str(exc)
        )
        raise BrokerError(f"connection to {settings.url} failed: {exc}", protocol_refused=silent) from exc
