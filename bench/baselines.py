"""Baselines measured against the benchmark's own broker: plain aiomqtt clients and Mosquitto's tools.

- :func:`aiomqtt_baseline`: as many plain aiomqtt connections as the fleet has servers, each
  keeping :data:`WINDOW` QoS 1 publishes in flight; it gives the rate of acknowledged publishes and
  the clients' CPU per publish (the MQTT part of a step's essential work).
- :func:`mosquitto_baseline`: ``mosquitto_pub`` to ``mosquitto_sub`` at QoS 1 (the broker's own pace).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import time
from dataclasses import dataclass

from agent.mqtt.daemon import BATCH
from simulator.broker import MOSQUITTO_LIMITS

WINDOW = BATCH  # QoS 1 publishes each baseline client keeps in flight: as many as the agent's outbox
# mosquitto baseline messages: half the broker's per-subscriber queue, so none is dropped
BASELINE_QUEUE_CAP = int(MOSQUITTO_LIMITS["max_queued_messages"]) // 2


@dataclass(frozen=True, slots=True)
class PlainFigures:
    """What the plain-aiomqtt baseline measured."""

    rate: float  # acknowledged QoS 1 publishes per second
    lost: int  # publishes never acknowledged
    cpu_per_publish: float  # the clients' CPU seconds per acknowledged publish


Share = tuple[int, float, float]  # (publishes acknowledged, seconds, CPU seconds)


def _aiomqtt_share(port: int, clients: int, per_client: int, queue: multiprocessing.Queue[Share]) -> None:
    """One worker of the aiomqtt baseline: put its :data:`Share` on ``queue``, always."""
    import logging

    import aiomqtt

    logging.getLogger("mqtt").setLevel(logging.CRITICAL)  # lost connections are counted, not logged

    async def one(i: int, go: asyncio.Event) -> int:
        window, acked = asyncio.Semaphore(WINDOW), 0

        async def send() -> None:
            nonlocal acked
            async with window:
                await client.publish(f"bench/{i}", b"x" * 200, qos=1)
                acked += 1

        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"b{os.getpid()}-{i}", timeout=120, keepalive=600
        ) as client:
            await go.wait()
            await asyncio.gather(*(send() for _ in range(per_client)), return_exceptions=True)
        return acked

    async def main() -> Share:
        go = asyncio.Event()
        tasks = [asyncio.create_task(one(i, go)) for i in range(clients)]
        await asyncio.sleep(min(60, 1 + clients / 1500))
        began, cpu = time.monotonic(), time.process_time()
        go.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        acked = sum(d for d in done if isinstance(d, int))
        return acked, time.monotonic() - began, time.process_time() - cpu

    try:
        queue.put(asyncio.run(main()))
    except Exception:  # reason: the parent must hear back even from a failed worker
        queue.put((0, 0.0, 0.0))


def aiomqtt_baseline(port: int, connections: int, messages: int, workers: int) -> PlainFigures:
    """Plain aiomqtt clients on ``connections`` connections publishing ``messages`` QoS 1 messages."""
    per_client = max(1, messages // connections)
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[Share] = context.Queue()
    share = max(1, connections // workers)
    procs = [
        context.Process(target=_aiomqtt_share, args=(port, share, per_client, queue)) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    acked = sum(a for a, _, _ in results)
    span = max(s for _, s, _ in results)
    cpu = sum(c for _, _, c in results)
    return PlainFigures(acked / max(span, 1e-9), share * workers * per_client - acked, cpu / max(acked, 1))


def mosquitto_baseline(port: int, messages: int) -> float:
    """Messages per second through the broker, mosquitto_pub to mosquitto_sub at QoS 1 (those that arrive)."""
    messages = min(messages, BASELINE_QUEUE_CAP)
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "mbench/#", "-C", str(messages), "-W", "300"],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.5)
    began = time.monotonic()
    payload = ("x" * 200 + "\n") * messages
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", "mbench/x", "-l"],
        input=payload.encode(),
        check=True,
    )
    out, _ = sub.communicate(timeout=600)
    return out.count(b"\n") / (time.monotonic() - began)
