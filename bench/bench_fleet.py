"""A fleet campaign benchmark against a Mosquitto it starts, with two baselines from the same run.

    python -m bench.bench_fleet [--servers 10000] [--workers 2] [--in-flight N] [--dir DIR]

It builds (or reuses) the fleet (7.0 and 7.x servers with valid maintenance keys), runs one agent
per server, each with its own MQTT session, in ``--workers`` processes, and runs one campaign to
8.0. It prints the wall time and CPU time of the campaign, the peak RSS (total and per server), the
broker's message rate, and two baselines measured against the same broker: plain aiomqtt clients
(as many connections, as many QoS 1 messages, publishes in flight) and Mosquitto's own
``mosquitto_pub``/``mosquitto_sub`` at QoS 1. Each goal is printed OK or MISS with its figure.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.mqtt.daemon import BATCH
from simulator.broker import MOSQUITTO_LIMITS

if TYPE_CHECKING:
    from simulator.fleet.spec import FleetSpec

GOAL_WALL = 60.0  # seconds for the whole campaign (10,000 servers, 2 cores)
GOAL_RSS_PER_SERVER = 150 * 1024  # bytes
GOAL_RATIO = 0.8  # fleet message rate / plain aiomqtt rate


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Mosquitto with the project's config plus $SYS every second (to count messages)."""
    from simulator.broker import free_port, mosquitto_config, mosquitto_path, wait_listening

    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(mosquitto_config(port) + "sys_interval 1\nmax_connections -1\n")
    exe = mosquitto_path()
    if exe is None:
        raise SystemExit("mosquitto is not installed")
    process = subprocess.Popen([exe, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_listening(port, 10):
        raise SystemExit("mosquitto did not start")
    return process, port


async def broker_counts(port: int) -> tuple[int, int]:
    """Messages received and sent by the broker so far (from $SYS)."""
    import aiomqtt

    found: dict[str, int] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"sys-{os.getpid()}-{time.time_ns()}") as client:
        await client.subscribe("$SYS/broker/messages/+")
        async with asyncio.timeout(5):
            async for message in client.messages:
                found[str(message.topic).rsplit("/", 1)[-1]] = int(bytes(message.payload))  # type: ignore[arg-type]
                if {"received", "sent"} <= set(found):
                    break
    return found["received"], found["sent"]


def peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def run_campaign(
    root: Path, servers: int, workers: int, port: int, in_flight: int | None = None
) -> dict[str, float]:
    """Build (or reuse) the fleet, run the campaign, return its figures (the folder held meanwhile)."""
    from simulator.fleet.build import in_use
    from simulator.fleet.spec import FleetSpec

    spec = FleetSpec(
        servers=servers,
        seed=11,
        sites=("s1", "s2", "s3", "s4"),
        models={"6x": 2, "24x": 1, "48x": 1},
        releases={"7.0": 1, "7.2": 1, "7.4": 1, "7.6": 1, "7.7": 1},
        keys={"anytime": 1},
        multisite=0.0,
        failing=0.0,
        offline=0.0,
    )
    with in_use(root):
        return await _campaign(root, spec, servers, workers, port, in_flight)


async def _campaign(
    root: Path, spec: FleetSpec, servers: int, workers: int, port: int, in_flight: int | None
) -> dict[str, float]:
    """Build (or reuse) the fleet, run it against the broker at ``port``, run the campaign."""
    from fleet.campaign.controller import Controller
    from fleet.campaign.spec import CampaignSpec
    from fleet.client import FleetClient
    from fleet.operator import default_operator
    from simulator.fleet.build import build_fleet
    from simulator.fleet.run import simulate

    began = time.monotonic()
    fleet = build_fleet(root, spec, workers=2)
    print(f"fleet: {servers} servers, {fleet.built} built, rest reused, in {time.monotonic() - began:.1f} s")
    url = f"mqtt://127.0.0.1:{port}"
    async with simulate(  # the simulation's fast disk and verifier (docs/power-cuts.md)
        fleet, broker=url, speed=3600.0, workers=workers, ready_timeout=600
    ) as sim:
        print(f"agents connected after {time.monotonic() - began:.1f} s")
        before = await broker_counts(port)
        cpu0, own0, wall0 = _cpu(), time.process_time(), time.monotonic()
        async with FleetClient.open(sim.settings, default_operator()) as client:
            controller = Controller(client, sim.clock(), command_timeout=120, concurrency=2000)
            async with controller.listening("bench"):
                await controller.settle(expected=servers, quiet=10, limit=600)
                spec = CampaignSpec(campaign_id="bench", target="8.0", max_in_flight=in_flight)
                campaign = await controller.prepare(spec)
                await controller.run(campaign, publish_interval=2.0)
        wall = time.monotonic() - wall0
        after = await broker_counts(port)
        pool = _pool()
        rss = sum(peak_rss(p) for p in pool) + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cpu, own = _cpu() - cpu0, time.process_time() - own0
    counts = campaign.counts()
    print(f"campaign: {counts}")
    messages = (after[0] - before[0]) + (after[1] - before[1])
    return {
        "wall": wall,
        "cpu": cpu,
        "controller_cpu": own,
        "rss": rss,
        "messages": messages,
        "published": after[0] - before[0],
        "succeeded": counts.get("succeeded", 0),
    }


def _pool() -> list[int]:
    return [p.pid for p in multiprocessing.active_children() if p.pid is not None]


def _cpu() -> float:
    """CPU seconds of this process and its live workers."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _pool():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


WINDOW = BATCH  # QoS 1 publishes each baseline client keeps in flight: as many as the agent's outbox
# mosquitto baseline messages: half the broker's per-subscriber queue, so none is dropped
BASELINE_QUEUE_CAP = int(MOSQUITTO_LIMITS["max_queued_messages"]) // 2


def _aiomqtt_share(
    port: int, clients: int, per_client: int, queue: multiprocessing.Queue[tuple[int, float]]
) -> None:
    """One worker of the aiomqtt baseline: put (publishes acknowledged, seconds) on ``queue``, always."""
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

    async def main() -> tuple[int, float]:
        go = asyncio.Event()
        tasks = [asyncio.create_task(one(i, go)) for i in range(clients)]
        await asyncio.sleep(min(60, 1 + clients / 1500))
        began = time.monotonic()
        go.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return sum(d for d in done if isinstance(d, int)), time.monotonic() - began

    try:
        queue.put(asyncio.run(main()))
    except Exception:  # reason: the parent must hear back even from a failed worker
        queue.put((0, 0.0))


def aiomqtt_baseline(port: int, connections: int, messages: int, workers: int) -> tuple[float, int]:
    """Plain aiomqtt clients: QoS 1 publishes acknowledged per second, and how many were lost."""
    per_client = max(1, messages // connections)
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[int, float]] = context.Queue()
    share = connections // workers
    procs = [
        context.Process(target=_aiomqtt_share, args=(port, share, per_client, queue)) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    acked = sum(a for a, _ in results)
    span = max(s for _, s in results)
    return acked / max(span, 1e-9), share * workers * per_client - acked


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


def verdict(ok: bool) -> str:
    """OK or MISS."""
    return "OK  " if ok else "MISS"


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="the campaign's max_in_flight (servers upgrading at once); default: all at once",
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "allworx-bench-fleet")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ALLWORX_SIM_HOME", str(args.dir / "home"))
    from simulator.fleet.host import quiet_logs

    quiet_logs()
    work = Path(tempfile.mkdtemp(prefix="mosq-", dir=args.dir))
    broker, port = start_mosquitto(work)
    try:
        fleet = asyncio.run(
            run_campaign(args.dir / "fleet", args.servers, args.workers, port, args.in_flight)
        )
        report_fleet(fleet, args.servers, args.workers)  # first: a failed baseline then loses nothing
        plain, lost = aiomqtt_baseline(port, args.servers, int(fleet["published"]), args.workers)
        native = mosquitto_baseline(port, int(fleet["published"]))
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)
    report_ratios(fleet, args.servers, plain, lost, native)


def report_fleet(fleet: dict[str, float], servers: int, workers: int) -> None:
    """Print the campaign's own figures."""
    per_server = fleet["rss"] / servers
    print(f"\nfleet campaign, {servers} servers, {workers} worker processes, one MQTT session each")
    print(f"  servers upgraded     {int(fleet['succeeded'])}")
    print(f"  wall time            {fleet['wall']:.1f} s")
    print(
        f"  CPU time             {fleet['cpu']:.1f} s ({fleet['cpu'] - fleet['controller_cpu']:.1f} s the"
        f" agents' processes, {fleet['controller_cpu']:.1f} s the campaign controller's)"
    )
    print(
        f"  peak RSS             {fleet['rss'] / 2**20:.0f} MiB total, {per_server / 1024:.0f} KiB per server"
    )
    rate = fleet["messages"] / fleet["wall"]
    print(f"  MQTT messages        {int(fleet['messages'])} through the broker (in + out), {rate:.0f}/s")
    print(
        f"  published            {int(fleet['published'])}, {fleet['published'] / fleet['wall']:.0f}/s",
        flush=True,
    )


def report_ratios(fleet: dict[str, float], servers: int, plain: float, lost: int, native: float) -> None:
    """Print the baselines, the ratios and each goal's verdict."""
    published = fleet["published"] / fleet["wall"]
    per_server = fleet["rss"] / servers
    print(
        f"  baseline aiomqtt     {plain:.0f} QoS 1 publishes/s acknowledged ({servers} connections, "
        f"{WINDOW} in flight each, {lost} lost); fleet published {published:.0f}/s = {published / plain:.2f}x"
    )
    print(
        f"  baseline mosquitto   {native:.0f} QoS 1 messages/s (mosquitto_pub -> mosquitto_sub); "
        f"fleet = {published / native:.2f}x"
    )
    scale = " (goal is for 10,000 servers)" if servers != 10_000 else ""
    print(f"{verdict(fleet['wall'] < GOAL_WALL)} wall time {fleet['wall']:.1f} s < {GOAL_WALL:.0f} s{scale}")
    print(
        f"{verdict(per_server < GOAL_RSS_PER_SERVER)} memory {per_server / 1024:.0f} KiB per server < 150 KB"
    )
    ratio = published / plain
    print(
        f"{verdict(ratio >= GOAL_RATIO)} message rate {ratio:.2f}x the plain-aiomqtt baseline"
        f" >= {GOAL_RATIO}x"
    )


if __name__ == "__main__":
    main()
