"""A local HTTP listener for health checks and Prometheus metrics (``--health HOST:PORT``).

``GET /healthz`` answers 200 with a small JSON document while the agent is healthy, 503 when its
broker session has been down longer than ``down_after`` seconds or its journal has stayed in one
upgrade state longer than ``stuck_after``. ``GET /metrics`` answers in the Prometheus text format.

The server is asyncio's own ``start_server`` with a minimal HTTP/1.1 reader: two read-only GET
routes on a loopback port need no web framework, and the agent keeps one event loop. Requests are
bounded (8 KiB of head, 5 s to send it) so a slow or hostile client cannot hold the agent.

Metrics live in a registry of their own per agent, so many agents in one process (a simulated
fleet) never mix their counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = structlog.get_logger("agent.service")

MAX_HEAD = 8192  # bytes of request line and headers
HEAD_TIMEOUT = 5.0  # seconds a client has to send them


class Metrics:
    """The agent's counters, gauges and histogram, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.steps = Counter(
            "allworx_upgrade_steps",
            "Upgrade steps ended, by outcome (committed, rolled_back).",
            ["outcome"],
            registry=r,
        )
        self.refusals = Counter("allworx_refusals", "Refusals by reason code.", ["reason"], registry=r)
        self.rollbacks = Counter("allworx_rollbacks", "Rollbacks to the previous release.", registry=r)
        self.reconnects = Counter("allworx_broker_reconnects", "Broker sessions opened again.", registry=r)
        self.commands = Counter(
            "allworx_commands", "Operator commands by name and verdict.", ["name", "verdict"], registry=r
        )
        self.outbox_depth = Gauge("allworx_outbox_depth", "Events not yet acknowledged.", registry=r)
        self.step_seconds = Histogram(
            "allworx_step_duration_seconds",
            "Wall time of one upgrade step.",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class Health:
    """What ``/healthz`` reports."""

    broker_connected: bool
    broker_down_seconds: float  # 0 while connected
    seconds_since_state: float | None  # since the last retained state publish; None before the first
    outbox_depth: int
    journal_state: str | None  # the persisted upgrade state, None when idle
    journal_state_seconds: float  # how long the journal has held that state
    current_job: str | None


class HealthServer:
    """Serves ``/healthz`` and ``/metrics`` until closed."""

    def __init__(
        self,
        health: Callable[[], Health],
        metrics: Metrics,
        *,
        down_after: float = 60.0,
        stuck_after: float = 3600.0,
    ) -> None:
        self._health = health
        self._metrics = metrics
        self.down_after = down_after
        self.stuck_after = stuck_after
        self._server: asyncio.Server | None = None

    def verdict(self, health: Health) -> tuple[bool, str]:
        """Whether ``health`` is healthy, and why not."""
        if not health.broker_connected and health.broker_down_seconds > self.down_after:
            return False, f"broker session down for {health.broker_down_seconds:.0f} s"
        if health.journal_state is not None and health.journal_state_seconds > self.stuck_after:
            return False, f"journal stuck in {health.journal_state} for {health.journal_state_seconds:.0f} s"
        return True, "ok"

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0: any free one); return the bound address.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        bound = self._server.sockets[0].getsockname()
        log.info("health_listening", host=bound[0], port=bound[1])
        return bound[0], bound[1]

    async def close(self) -> None:
        """Stop listening and close the open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, ctype, body = self._route(method, path)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
            status, "Service Unavailable"
        )
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics.render()
        if path == "/healthz":
            health = self._health()
            ok, why = self.verdict(health)
            doc = {"status": "ok" if ok else "unhealthy", "reason": why, **asdict(health)}
            return (200 if ok else 503), "application/json", (json.dumps(doc) + "\n").encode()
        return 404, "text/plain", b"not found\n"
