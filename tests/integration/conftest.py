"""Real brokers for the integration tests: Mosquitto (started here) and the embedded amqtt broker.

Mosquitto is started once per session on a free loopback port; when it is not installed the
tests that need it are skipped, except in CI (env ``CI`` set), where its absence fails them.
Every test gets its own site, so tests sharing a broker never see each other's topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.clock import SimClock
from agent.mqtt.connection import BrokerSettings, Protocol
from agent.mqtt.daemon import Agent, AgentOptions
from agent.store import ServerDir
from simulator.broker import Mosquitto, free_port, mosquitto_available, wait_listening
from simulator.server import ServerSpec, create_server

START = datetime(2010, 1, 1, tzinfo=UTC)  # 7.1 is out, 7.2 is not: one step 7.0 -> 7.1 is allowed


@dataclass(frozen=True)
class BrokerUnderTest:
    """A running broker: its kind and URL, and the protocol its clients should speak."""

    kind: str
    url: str
    protocol: Protocol | None  # what clients speak; None: find out (MQTT 5, else 3.1.1)


def run_tool(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a console script (``allworx-agent`` or ``allworx-sim``) as a user would, through the
    interpreter running the tests."""
    tool, *rest = args
    module = {"allworx-agent": "agent.cli", "allworx-sim": "simulator.cli"}[tool]
    code = f"import sys; from {module} import main; sys.argv[0] = {tool!r}; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *rest], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def env(sim_home: Path) -> dict[str, str]:
    """The environment of the user's commands: the session's simulator home."""
    return {**os.environ, "ALLWORX_SIM_HOME": str(sim_home)}


def require_mosquitto() -> None:
    """Skip without Mosquitto, or fail in CI."""
    if not mosquitto_available():
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed, and CI must run the integration tests against it")
        pytest.skip("mosquitto is not installed")


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto process for the whole session."""
    require_mosquitto()
    server = Mosquitto()
    server.start()
    yield server
    server.close()


@dataclass
class EmbeddedProcess:
    """The embedded broker as ``allworx-sim broker`` would run it, in a child process."""

    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedProcess]:
    """The embedded amqtt broker for the whole session, in its own process.

    A process rather than a thread: amqtt leaks the sockets of some closed connections, and their
    ResourceWarnings would surface in whichever test the garbage collector happens to run.
    """
    port = free_port()
    code = "import sys; from simulator.broker import broker_command; broker_command(sys.argv[1:])"
    process = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", code, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_listening(port, 10):
        process.kill()
        pytest.fail("the embedded broker did not start")
    yield EmbeddedProcess(f"mqtt://127.0.0.1:{port}", process)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request: pytest.FixtureRequest) -> BrokerUnderTest:
    """Each test using this runs against Mosquitto and against the embedded broker."""
    if request.param == "mosquitto":
        return BrokerUnderTest("mosquitto", request.getfixturevalue("mosquitto").url, None)
    embedded = request.getfixturevalue("embedded_broker")
    # amqtt leaks the server-side socket of every MQTT 5 CONNECT it refuses (and never answers one
    # carrying a will): clients are told to speak 3.1.1, so the GC never warns mid-suite.
    return BrokerUnderTest("embedded", embedded.url, Protocol.V311)


@pytest.fixture
def unique_site() -> str:
    """A site name no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server(tmp_path: Path, unique_site: str) -> ServerDir:
    """A small virtual 6x on 7.0 in this test's own site."""
    return create_server(
        tmp_path / "server",
        ServerSpec(model="6x", release="7.0", users=5, call_log_rows=50, site=unique_site),
    )


@contextlib.asynccontextmanager
async def running_agent(
    server: ServerDir,
    url: str,
    *,
    speed: float = float("inf"),
    protocol: Protocol | None = None,
    keepalive: int = 5,
    state_interval: float = 0.0,
    cursor_interval: float = 0.0,
    batch_interval: float = 0.25,
) -> AsyncIterator[Agent]:
    """Run the daemon in this event loop until the block ends; yield once it is connected."""
    options = AgentOptions(
        broker=BrokerSettings(url=url, keepalive=keepalive),
        protocol=protocol,
        backoff_base=0.2,
        backoff_cap=1.0,
        progress_interval=0.2,
        state_interval=state_interval,
        cursor_interval=cursor_interval,
        batch_interval=batch_interval,
    )
    agent = Agent(server, options, clock=SimClock(START, speed=speed))
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        async with asyncio.timeout(10):
            await agent.connected.wait()
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
