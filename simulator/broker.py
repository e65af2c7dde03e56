"""Brokers for the simulator and the tests: an embedded amqtt broker and a Mosquitto launcher.

The embedded broker (amqtt, pure Python, MQTT 3.1.1 only) is the zero-set-up default: it runs in
the caller's event loop on a free loopback port. Mosquitto is the real broker: a config file is
generated stating every choice that matters for a fleet (below), and the process is started on a
free loopback port and stopped again.

Invariants: both bind 127.0.0.1 only; Mosquitto runs with persistence off and anonymous access on
(a test and simulation broker — a production broker is configured by its operator, see
docs/mqtt.md); :data:`MOSQUITTO_LIMITS` are written into the config, never left to defaults
(Mosquitto's default ``max_queued_messages 1000`` silently drops QoS 1 messages for a slow
subscriber, which would make a fleet's events look lost; its default size limit is none, so one
publish of hundreds of MB would be taken in and passed on).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from agent.cliutil import fail, guarded
from agent.mqtt.connection import FLEET_MAX_PACKET, LARGEST_MESSAGE

MOSQUITTO_LIMITS = {
    "max_queued_messages": 100_000,  # per slow subscriber: a fleet's events must not be dropped
    "max_inflight_messages": 100,  # QoS 1 messages in flight per client
    "max_keepalive": 65535,  # seconds: any keep-alive the agents ask for is accepted
    # bytes: no publish larger than the fleet's largest message (a campaign's whole state) is
    # taken in; the payload limit, and the whole packet's, which refuses it from its header on
    "message_size_limit": LARGEST_MESSAGE,
    "max_packet_size": FLEET_MAX_PACKET,
}


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """Return whether nothing listens on 127.0.0.1:``port`` (so a broker could bind it now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_broker(url: str, timeout: float = 5.0) -> None:
    """Connect to the broker at ``url`` once (MQTT 3.1.1, which every broker speaks) and leave.

    Raises:
        ValueError: ``url`` is not ``mqtt://host:port`` or ``mqtts://host:port``.
        BrokerError: the broker is unreachable or refused the connection within ``timeout``.
    """
    from agent.mqtt.connection import BrokerSettings, Protocol, connect
    from common.errors import BrokerError

    settings = BrokerSettings(url=url, timeout=timeout, connect_timeout=timeout)

    async def probe() -> None:
        async with asyncio.timeout(timeout), connect(settings, protocol=Protocol.V311):
            pass

    try:
        asyncio.run(probe())
    except TimeoutError:
        raise BrokerError(f"no MQTT answer from {url} within {timeout:g} s") from None


def wait_listening(port: int, timeout: float = 5.0) -> bool:
    """Return whether something accepts TCP connections on 127.0.0.1:``port`` within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


# ------------------------------------------------------------------------------- amqtt


def literal_prefix(a_filter: str) -> str:
    """What every topic a filter matches starts with: its text before the first wildcard, less a
    trailing ``/`` (``a/#`` also matches ``a``)."""
    cut = min((i for i in (a_filter.find("+"), a_filter.find("#")) if i >= 0), default=len(a_filter))
    prefix = a_filter[:cut]
    return prefix[:-1] if cut < len(a_filter) and prefix.endswith("/") else prefix


@functools.cache
def fleet_broker_class() -> Any:
    """amqtt's broker, answering most topic-filter checks with one prefix comparison.

    amqtt compares each message's topic with every subscription's filter, splitting both into
    levels each time; with an agent's own command filter per server, that is most of the
    embedded broker's work in a fleet. A topic that does not start with the filter's
    :func:`literal_prefix` cannot match it; any other is left to amqtt's own check.
    """
    from amqtt.broker import Broker

    class FleetBroker(Broker):  # type: ignore[misc]  # reason: amqtt ships no type information
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.prefixes: dict[str, str] = {}  # filter -> its literal prefix (a few filters per server)

        def _matches(self, topic: str, a_filter: str) -> bool:
            prefix = self.prefixes.get(a_filter)
            if prefix is None:
                prefix = self.prefixes[a_filter] = literal_prefix(a_filter)
            return topic.startswith(prefix) and bool(super()._matches(topic, a_filter))

    return FleetBroker


class EmbeddedBroker:
    """An amqtt broker in the current event loop (``async with EmbeddedBroker() as broker``)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        """The broker's URL for ``--broker``."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start listening.

        Raises:
            RuntimeError: the broker could not start (e.g. the port is taken).
        """
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = fleet_broker_class()(config)
        try:
            await self._broker.start()
        except Exception as exc:  # reason: amqtt raises its own BrokerError and plain OSErrors
            raise RuntimeError(f"the embedded broker could not start on port {self.port}: {exc}") from exc

    async def stop(self) -> None:
        """Stop the broker (idempotent)."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class EmbeddedBrokerThread:
    """An amqtt broker in its own thread and event loop (for synchronous callers and test fixtures)."""

    def __init__(self, port: int | None = None) -> None:
        self.broker = EmbeddedBroker(port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """The broker's URL for ``--broker``."""
        return self.broker.url

    def start(self, timeout: float = 5.0) -> None:
        """Start the thread and wait until the broker listens.

        Raises:
            RuntimeError: the broker did not start listening.
        """
        ready = threading.Event()

        async def serve() -> None:
            self._stop = asyncio.Event()
            async with self.broker:
                ready.set()
                await self._stop.wait()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            finally:
                ready.set()
                self._loop.close()

        self._thread = threading.Thread(target=main, name="embedded-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not wait_listening(self.broker.port, timeout):
            raise RuntimeError(f"the embedded broker did not listen on port {self.broker.port}")

    def stop(self) -> None:
        """Stop the broker and its thread (idempotent)."""
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._thread = None


# ------------------------------------------------------------------------------- mosquitto


def mosquitto_path() -> str | None:
    """Return the Mosquitto executable, if installed (PATH, then /usr/sbin)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def mosquitto_available() -> bool:
    """Return whether Mosquitto is installed."""
    return mosquitto_path() is not None


def mosquitto_config(port: int, persistence: Path | None = None) -> str:
    """Return the Mosquitto configuration the project uses, for a listener on 127.0.0.1:``port``.

    With ``persistence`` (a folder), sessions and queued messages survive a restart.
    """
    lines = [
        "# Generated by simulator/broker.py: a test and simulation broker, loopback only.",
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        *(
            ["persistence true", f"persistence_location {persistence}/"]
            if persistence
            else ["persistence false"]
        ),
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    lines += [f"{name} {value}" for name, value in MOSQUITTO_LIMITS.items()]
    return "\n".join(lines) + "\n"


class Mosquitto:
    """A Mosquitto process on a loopback port; :meth:`stop` and :meth:`start` again keep the port."""

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, *, persistence: bool = False
    ) -> None:
        self.port = port or free_port()
        self._owns_workdir = workdir is None  # a folder of its own goes with :meth:`close`
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="allworx-mosquitto-"))
        self.persistence = persistence
        self.config = self.workdir / "mosquitto.conf"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker's URL for ``--broker``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 5.0) -> None:
        """Start Mosquitto and wait until it accepts connections.

        Raises:
            RuntimeError: Mosquitto is not installed, or did not start listening.
        """
        executable = mosquitto_path()
        if executable is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.config.write_text(mosquitto_config(self.port, self.workdir if self.persistence else None))
        log = (self.workdir / "mosquitto.log").open("ab")
        self._process = subprocess.Popen([executable, "-c", str(self.config)], stdout=log, stderr=log)
        log.close()
        if not wait_listening(self.port, timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on port {self.port}; see {self.workdir}")

    def stop(self) -> None:
        """Stop the process (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the process and remove the folder it made for itself (not one it was given)."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None


# ------------------------------------------------------------------------------- command


@click.group("broker", invoke_without_command=True)
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True,
              help="The loopback port to listen on.")  # fmt: skip
@click.option("--mosquitto", "use_mosquitto", is_flag=True, help="Run Mosquitto instead of the embedded one.")
@click.pass_context
@guarded
def broker_command(ctx: click.Context, port: int, use_mosquitto: bool) -> None:
    """Run a broker on 127.0.0.1 until Ctrl-C (embedded amqtt by default, MQTT 3.1.1).

    Exit 1 (``error: BAD_INPUT``) when the port is taken or the broker cannot start.
    """
    if ctx.invoked_subcommand is not None:  # ``broker config``: write a configuration, run nothing
        return
    if not port_free(port):
        fail("BAD_INPUT", f"port {port} on 127.0.0.1 is in use (or not ours to bind)")
    if use_mosquitto:
        server = Mosquitto(port)
        try:
            server.start()
        except RuntimeError as exc:
            fail("BAD_INPUT", str(exc))
        click.echo(f"mosquitto listening on {server.url} (config {server.config})")
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
        return

    async def serve() -> None:
        async with EmbeddedBroker(port) as embedded:
            click.echo(f"embedded broker listening on {embedded.url}")
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return
    except RuntimeError as exc:  # the embedded broker could not start
        fail("BAD_INPUT", str(exc))
