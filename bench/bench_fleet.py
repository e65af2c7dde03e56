"""A fleet campaign benchmark against a Mosquitto it starts, with its goals and baselines from the same run.

    python -m bench.bench_fleet [--servers 10000] [--workers 2] [--in-flight N] [--dir DIR]
                                [--sample 24] [--demo] [--json]

It builds (or reuses) the fleet (7.0 and 7.x servers with valid maintenance keys), runs one agent
per server, each with its own MQTT session, in ``--workers`` processes, and runs one campaign to
8.0. It then measures, in the same run: the essential work of a step on a sample of the fleet's own
servers and steps (:mod:`bench.essential`), plain aiomqtt clients (as many connections, the
fleet's publish count; their CPU per publish is the MQTT part of a step's essential work) and
``mosquitto_pub``/``mosquitto_sub`` at QoS 1; with ``--demo`` also ``allworx-sim demo``
(:mod:`bench.demo`). Each goal (:mod:`bench.goals`) is printed OK or MISS with its figure;
``--json`` prints one JSON document with every figure and goal instead (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.baselines import WINDOW, PlainFigures, aiomqtt_baseline, mosquitto_baseline
from bench.goals import document, verdict_lines

TARGET = "8.0"
ESSENTIAL_PUBLISHES = 4  # QoS 1 publishes per step counted as essential (the messages goal)


def say(*parts: object) -> None:
    """Progress and figures, on stdout (which ``--json`` points at stderr: see :func:`main`)."""
    print(*parts, flush=True)


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


SYS_COUNTERS = {
    "$SYS/broker/publish/messages/received": "published",  # PUBLISH packets from clients
    "$SYS/broker/publish/messages/sent": "delivered",  # PUBLISH packets to clients
    "$SYS/broker/messages/received": "packets_in",  # every packet, PUBACKs included
    "$SYS/broker/messages/sent": "packets_out",
}


async def broker_counts(port: int, attempts: int = 4) -> dict[str, int]:
    """The broker's message counters so far (from $SYS, retained and refreshed every second).

    A broker busy with thousands of sessions can leave a subscriber without some of them for a
    long while (a retained counter was seen missing just after 10,000 agents connected): while it
    waits, the reader publishes a message of its own every 2 s (QoS 0, to ``bench/nudge``), so
    every counter changes and Mosquitto publishes it anew; each attempt is a new connection of
    its own, and what one attempt read is kept. The nudges add a few messages to counts in the
    hundreds of thousands.

    Raises:
        TimeoutError: a counter was still missing after every attempt.
    """
    import aiomqtt

    found: dict[str, int] = {}
    for attempt in range(attempts):
        identifier = f"sys-{os.getpid()}-{time.time_ns()}-{attempt}"
        with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, identifier=identifier, timeout=60) as client:
                await client.subscribe("$SYS/broker/publish/messages/+")
                await client.subscribe("$SYS/broker/messages/+")
                nudge = asyncio.create_task(_nudge(client))
                try:
                    async with asyncio.timeout(30):
                        async for message in client.messages:
                            name = SYS_COUNTERS.get(str(message.topic))
                            if name is not None:
                                found[name] = int(bytes(message.payload))  # type: ignore[arg-type]
                            if len(found) == len(SYS_COUNTERS):
                                return found
                finally:
                    nudge.cancel()
        missing = sorted(set(SYS_COUNTERS.values()) - set(found))
        say(f"$SYS counters missing after attempt {attempt + 1}: {missing}")
    raise TimeoutError("the broker did not publish its $SYS counters")


async def _nudge(client: Any) -> None:
    """Publish to ``bench/nudge`` every 2 s, so the broker's counters change and are published."""
    while True:
        await client.publish("bench/nudge", b"", qos=0)
        await asyncio.sleep(2)


def peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_spec(servers: int) -> Any:
    """The benchmark's fleet: 7.0 and 7.x servers, valid keys, nothing failing or offline."""
    from simulator.fleet.spec import FleetSpec

    return FleetSpec(
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


async def run_campaign(root: Path, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Build (or reuse) the fleet, sample it, run the campaign, measure the sample's essential work."""
    if args.shards:
        from bench.shards import run_sharded

        return await run_sharded(root.parent / "sharded", args, port)
    from bench.essential import essential_figures, sample_plans, take_sample
    from releases.catalog import default_catalog
    from simulator.fleet.build import build_fleet, in_use
    from simulator.fleet.run import fleet_start

    with in_use(root):
        began = time.monotonic()
        fleet = build_fleet(root, bench_spec(args.servers), workers=2)
        build = time.monotonic() - began
        say(f"fleet: {args.servers} servers, {fleet.built} built, rest reused, in {build:.1f} s")
        kinds = [plan.release for plan in fleet.plans]
        picked = [(fleet.server_dir(fleet.plans[i]), w) for i, w in sample_plans(kinds, args.sample)]
        workdir = root.parent / "essential"
        shutil.rmtree(workdir, ignore_errors=True)
        sample = take_sample(default_catalog(), picked, TARGET, fleet_start(fleet), workdir / "sample")
        figures = await _campaign(fleet, args, port)
        figures["build_s"] = round(build, 1)
        figures["steps"] = committed_steps([fleet.server_dir(p) for p in fleet.plans])
        figures |= essential_figures(sample, workdir)
    each = ", ".join(f"{figure:.2f}" for figure in figures["essential_work_ms_each"])
    say(
        f"essential work: {figures['essential_work_ms']:.2f} ms CPU a step over"
        f" {figures['essential_steps_sampled']} sampled steps (the median of {each}, one process each)"
    )
    return figures


def committed_steps(servers: list[Path]) -> int:
    """Upgrade steps committed in the servers' last results (each server ran one request)."""
    from agent.store import ServerDir

    total = 0
    for path in servers:
        result = ServerDir(path).last_result()
        if result is not None:
            total += sum(1 for step in result.steps if step.outcome == "committed")
            total += int(result.recovered is not None and result.recovered.outcome == "committed")
    return total


async def run_bench_campaign(settings: Any, clock: Any, args: argparse.Namespace) -> Any:
    """The benchmark's campaign to ``TARGET`` over ``args.servers`` servers, from this process."""
    from fleet.campaign.controller import Controller
    from fleet.campaign.spec import CampaignSpec
    from fleet.client import FleetClient
    from fleet.operator import default_operator

    async with FleetClient.open(settings, default_operator()) as client:
        controller = Controller(client, clock, command_timeout=120, concurrency=2000)
        async with controller.listening("bench"):
            await controller.settle(expected=args.servers, quiet=10, limit=600)
            spec = CampaignSpec(campaign_id="bench", target=TARGET, max_in_flight=args.in_flight)
            campaign = await controller.prepare(spec)
            await controller.run(campaign, publish_interval=2.0)
    return campaign


async def _campaign(fleet: Any, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Run the fleet against the broker at ``port`` and one campaign; return its figures."""
    from simulator.fleet.run import simulate

    began = time.monotonic()
    url = f"mqtt://127.0.0.1:{port}"
    async with simulate(  # the simulation's fast disk and verifier (docs/power-cuts.md)
        fleet, broker=url, speed=3600.0, workers=args.workers, ready_timeout=600
    ) as sim:
        say(f"agents connected after {time.monotonic() - began:.1f} s")
        before = await broker_counts(port)
        cpu0, own0, wall0 = _cpu(), time.process_time(), time.monotonic()
        campaign = await run_bench_campaign(sim.settings, sim.clock(), args)
        wall = time.monotonic() - wall0
        cpu, own = _cpu() - cpu0, time.process_time() - own0
        await asyncio.sleep(1.5)  # $SYS is refreshed every second
        after = await broker_counts(port)
        rss = sum(peak_rss(p) for p in _pool()) + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    counts = campaign.counts()
    say(f"campaign: {counts}")
    figures: dict[str, Any] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    figures |= {"agent_cpu_s": round(cpu - own, 2), "controller_cpu_s": round(own, 2), "rss_bytes": rss}
    figures |= {name: after[name] - before[name] for name in SYS_COUNTERS.values()}
    figures |= {"outcomes": counts, "succeeded": counts.get("succeeded", 0)}
    return figures


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


def derive(figures: dict[str, Any], plain: PlainFigures | None, native: float | None) -> dict[str, Any]:
    """Add the per-step figures, the overhead ratio and the baselines' ratios to ``figures``."""
    steps = max(1, int(figures["steps"]))
    out = dict(figures)
    out["publishes_per_step"] = round(figures["published"] / steps, 3)
    out["kib_per_server"] = round(figures["rss_bytes"] / figures["servers"] / 1024, 1)
    out["agent_cpu_per_step_ms"] = round(figures["agent_cpu_s"] / steps * 1000, 3)
    rate = figures["published"] / max(figures["wall_s"], 1e-9)
    out["fleet_publishes_per_s"] = round(rate)
    if plain is not None:
        mqtt = ESSENTIAL_PUBLISHES * plain.cpu_per_publish * 1000
        essential = figures["essential_work_ms"] + mqtt
        out["essential_mqtt_ms"] = round(mqtt, 3)
        out["essential_per_step_ms"] = round(essential, 3)
        out["overhead_ratio"] = round(out["agent_cpu_per_step_ms"] / essential, 3)
        out["baseline_aiomqtt_per_s"] = round(plain.rate)
        out["baseline_aiomqtt_lost"] = plain.lost
        out["baseline_aiomqtt_cpu_per_publish_us"] = round(plain.cpu_per_publish * 1e6, 1)
        out["ratio_aiomqtt"] = round(rate / max(plain.rate, 1e-9), 3)
    if native is not None:
        out["baseline_mosquitto_per_s"] = round(native)
        out["ratio_mosquitto"] = round(rate / max(native, 1e-9), 3)
    return out


def report(doc: dict[str, Any]) -> None:
    """Print the figures, the baselines and each goal's verdict."""
    say(
        f"\nfleet campaign, {doc['servers']} servers, {doc['shards']} host(s) with {doc['workers']} worker"
        " processes in all, one MQTT session each"
    )
    say(f"  outcomes             {doc['outcomes']}, {doc['steps']} upgrade steps committed")
    say(f"  wall time            {doc['wall_s']:.1f} s")
    say(
        f"  CPU time             {doc['cpu_s']:.1f} s ({doc['agent_cpu_s']:.1f} s the agents' processes,"
        f" {doc['controller_cpu_s']:.1f} s the campaign controller's)"
    )
    say(
        f"  peak RSS             {doc['rss_bytes'] / 2**20:.0f} MiB total,"
        f" {doc['kib_per_server']:.0f} KiB per server"
    )
    say(
        f"  publishes            {doc['published']} received by the broker"
        f" ({doc['publishes_per_step']:.2f} a step),"
        f" {doc['delivered']} sent; {doc['fleet_publishes_per_s']}/s"
    )
    if "overhead_ratio" in doc:
        say(
            f"  CPU per step         agents {doc['agent_cpu_per_step_ms']:.2f} ms; essential"
            f" {doc['essential_per_step_ms']:.2f} ms ({doc['essential_work_ms']:.2f} ms database, image and"
            f" boot checks over {doc['essential_steps_sampled']} sampled steps"
            f" + {doc['essential_mqtt_ms']:.2f} ms"
            f" for {ESSENTIAL_PUBLISHES} plain-aiomqtt publishes); ratio {doc['overhead_ratio']:.2f}"
        )
        say(
            f"  baseline aiomqtt     {doc['baseline_aiomqtt_per_s']} QoS 1 publishes/s acknowledged"
            f" ({doc['servers']} connections, {WINDOW} in flight each, {doc['baseline_aiomqtt_lost']} lost,"
            f" {doc['baseline_aiomqtt_cpu_per_publish_us']:.0f} us CPU each);"
            f" fleet = {doc['ratio_aiomqtt']:.2f}x"
        )
    if "ratio_mosquitto" in doc:
        say(
            f"  baseline mosquitto   {doc['baseline_mosquitto_per_s']} QoS 1 messages/s"
            f" (mosquitto_pub -> mosquitto_sub); fleet = {doc['ratio_mosquitto']:.2f}x"
        )
    if doc.get("demo_wall_s") is not None:
        say(f"  demo                 {doc['demo_wall_s']:.1f} s wall (allworx-sim demo, 200 servers)")
    for line in verdict_lines(doc):
        say(line)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1000,
        help="the campaign's max_in_flight (servers upgrading at once; 0: all at once)",
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "allworx-bench-fleet")
    parser.add_argument(
        "--sample",
        type=int,
        default=24,
        help="servers whose steps' essential work is measured (at least one of each starting release)",
    )
    parser.add_argument(
        "--shards", type=int, default=0, help="run the fleet as N allworx-sim fleet --shard i/N hosts"
    )
    parser.add_argument("--demo", action="store_true", help="also time allworx-sim demo (200 servers)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document with every figure and goal"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures (or the JSON document)."""
    args = parse(argv)
    args.in_flight = args.in_flight or None
    out = sys.stdout
    if args.json:  # everything printed goes to stderr; stdout carries the JSON document alone
        sys.stdout = sys.stderr
    args.dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ALLWORX_SIM_HOME", str(args.dir / "home"))
    from simulator.fleet.host import quiet_logs

    quiet_logs()
    work = Path(tempfile.mkdtemp(prefix="mosq-", dir=args.dir))
    broker, port = start_mosquitto(work)
    plain = native = None
    try:
        figures = asyncio.run(run_campaign(args.dir / "fleet", args, port))
        figures |= {"servers": args.servers, "workers": args.workers, "in_flight": args.in_flight}
        figures.setdefault("shards", 1)
        plain = aiomqtt_baseline(port, args.servers, int(figures["published"]), args.workers)
        native = mosquitto_baseline(port, int(figures["published"]))
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)
    doc = derive(figures, plain, native)
    if args.demo:
        from bench.demo import measure_demo

        doc["demo_wall_s"] = round(measure_demo(), 2)
    doc = document(doc)
    report(doc)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True), file=out)


if __name__ == "__main__":
    main()
