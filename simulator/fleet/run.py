"""A running simulation: a broker (embedded unless one is given), the fleet's agents, the shared clock.

``async with simulate(fleet, ...) as sim`` starts the embedded broker when no URL is given, the
agents of every server not marked offline (in ``workers`` processes, or in this loop when
``workers`` is 0), publishes what powered-off servers left retained, and stops it all on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as daytime

from agent.clock import SimClock
from agent.limits import DEFAULT_LIMITS, Limits
from agent.mqtt.connection import BrokerSettings, Protocol, connect
from simulator.broker import EmbeddedBroker
from simulator.fleet.build import Fleet
from simulator.fleet.host import HostConfig, Workers, anchored_clock, host_agents, publish_ghosts


@dataclass(frozen=True, slots=True)
class Simulation:
    """What a running simulation offers its operator side."""

    fleet: Fleet
    settings: BrokerSettings
    protocol: Protocol | None  # what the operator side should speak (None: MQTT 5, falling back)
    config: HostConfig
    running: int  # agents started

    def clock(self) -> SimClock:
        """The fleet's simulated clock, read in this process."""
        return anchored_clock(self.config.start, self.config.speed, self.config.epoch)


def fleet_start(fleet: Fleet) -> datetime:
    """The simulated instant a fleet's run starts: 09:00 UTC on the fleet's date."""
    return datetime.combine(fleet.spec.now, daytime(9, 0), UTC)


@contextlib.asynccontextmanager
async def simulate(
    fleet: Fleet,
    *,
    broker: str | None = None,
    speed: float = 600.0,
    workers: int = 1,
    protocol: Protocol | None = None,
    ready_timeout: float = 120.0,
    limits: Limits = DEFAULT_LIMITS,
    fast: bool = True,
) -> AsyncIterator[Simulation]:
    """Run the fleet's agents against ``broker`` (the embedded one when None).

    ``limits`` go to every agent (the link's bandwidth paces downloads on the simulated clock).
    ``fast`` gives the agents the simulation's disk (no fsync, docs/power-cuts.md), remembering
    verifier and inline blocking work (:mod:`simulator.fleet.host`); ``fast=False`` the agent's
    durable ones and its worker threads.

    Raises:
        RuntimeError: the embedded broker could not start, or the agents did not connect in time.
        BrokerError: the broker is unreachable.
    """
    async with contextlib.AsyncExitStack() as stack:
        if broker is None:
            embedded = await stack.enter_async_context(EmbeddedBroker())
            broker, protocol = embedded.url, Protocol.V311  # amqtt speaks MQTT 3.1.1 only
        config = HostConfig(
            broker=broker,
            start=fleet_start(fleet),
            speed=speed,
            epoch=time.time(),
            protocol=protocol.value if protocol else None,
            limits=limits,
            fast=fast,
        )
        settings = BrokerSettings(url=broker, timeout=60.0)
        running = [fleet.server_dir(p) for p in fleet.plans if not p.offline]
        ghosts = [fleet.server_dir(p) for p in fleet.plans if p.offline]
        if ghosts:
            async with connect(settings, protocol=protocol or Protocol.V311) as link:
                await publish_ghosts(link, ghosts, config.start)
        if workers > 0:
            pool = Workers(running, config, workers)
            pool.start()
            stack.push_async_callback(_stop_workers, pool)
            if not await asyncio.to_thread(pool.wait_ready, ready_timeout):
                raise RuntimeError(f"the fleet's agents did not all connect within {ready_timeout:g} s")
        elif running:
            up = asyncio.Event()
            task = asyncio.get_running_loop().create_task(
                host_agents(running, config, up.set), name="fleet-host"
            )
            stack.push_async_callback(_stop, task)
            async with asyncio.timeout(ready_timeout):
                await up.wait()
        yield Simulation(fleet, settings, protocol, config, len(running))


async def _stop_workers(pool: Workers) -> None:
    """Stop the workers from a thread while this loop runs on: the embedded broker lives in it.

    Each agent says ``offline`` and disconnects as its worker stops; a loop blocked in the join
    would leave those goodbyes unanswered until each agent's stop timeout. A cancellation during
    the wait still waits for the workers to end (blocking), so none is left behind.
    """
    executor = ThreadPoolExecutor(1, thread_name_prefix="fleet-workers-stop")
    stopping = executor.submit(pool.stop)
    try:
        await asyncio.wrap_future(stopping)
    finally:
        executor.shutdown(wait=True)
        if stopping.cancelled():  # cancelled before its thread took it up
            pool.stop()


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel the agents' host and wait for it; a cancellation of the caller (a timeout) still ends the wait.

    ``suppress(CancelledError)`` around ``await task`` would also swallow the caller's own
    cancellation, which ``await`` passes on to ``task``: a host that never ended would then hang the
    caller past any timeout.
    """
    task.cancel()
    await asyncio.wait({task})
    error = None if task.cancelled() else task.exception()
    if error is not None:
        raise error
