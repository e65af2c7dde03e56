"""The fleet benchmark with the fleet run as ``n`` shards: one ``allworx-sim fleet --shard i/n`` each.

``python -m bench.bench_fleet --shards 2`` starts, against the benchmark's Mosquitto, ``n``
``allworx-sim fleet`` commands as separate hosts would run them (each its own folder, each
``--workers`` divided among them), waits until every shard's agents are connected, and runs the
campaign from the benchmark's process. The CPU and peak RSS are those of the shards' process
trees; the rest is measured as in the one-host run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from bench.bench_fleet import (
    TARGET,
    bench_spec,
    broker_counts,
    committed_steps,
    peak_rss,
    run_bench_campaign,
    say,
)


def fleet_flags(spec: Any) -> list[str]:
    """``allworx-sim fleet`` flags describing ``spec`` (the benchmark's fleet)."""

    def weights(table: dict[str, int]) -> str:
        return ",".join(f"{k}={v}" for k, v in table.items())

    return [
        "--servers", str(spec.servers), "--seed", str(spec.seed), "--sites", ",".join(spec.sites),
        "--models", weights(spec.models), "--releases", weights(spec.releases), "--keys", weights(spec.keys),
        "--multisite", "0", "--failing", "0", "--offline", "0",
    ]  # fmt: skip


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        each = todo.pop()
        found.append(each)
        todo.extend(children.get(each, []))
    return found


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) of the live processes ``pids``."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _wait_connected(process: subprocess.Popen[str], out: IO[str], timeout: float) -> None:
    """Read the shard's output until its agents are connected."""
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    for line in process.stdout:
        out.write(line)
        if "agents connected" in line:
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"a shard did not connect its agents (exit {process.poll()})")


def start_shards(root: Path, args: argparse.Namespace, url: str) -> list[tuple[Path, subprocess.Popen[str]]]:
    """Start ``args.shards`` fleet commands, each its own folder; return once all agents are connected."""
    shards = []
    per = max(1, args.workers // args.shards)
    for i in range(args.shards):
        folder = root / f"shard-{i}"
        command = [sys.executable, "-m", "simulator.cli", "fleet", "--dir", str(folder), "--broker", url,
                   "--shard", f"{i}/{args.shards}", "--workers", str(per), "--speed", "3600",
                   *fleet_flags(bench_spec(args.servers))]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        shards.append((folder, process))
        _wait_connected(process, sys.stderr, 1800)  # one at a time: each builds its folder first
    return shards


async def run_sharded(root: Path, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Run the campaign against ``args.shards`` shard hosts; return the figures."""
    from agent.mqtt.connection import BrokerSettings
    from bench.essential import essential_figures, sample_plans, take_sample
    from releases.catalog import default_catalog
    from simulator.fleet.host import anchored_clock

    url = f"mqtt://127.0.0.1:{port}"
    shards = start_shards(root, args, url)
    try:
        servers, kinds = [], []
        for i, (folder, _) in enumerate(shards):
            plans = json.loads((folder / "fleet.json").read_text())["servers"]
            mine = [p for p in plans if p["index"] % args.shards == i]
            servers += [folder / "servers" / _dirname(p) for p in mine]
            kinds += [p["release"] for p in mine]
        anchor = json.loads((shards[0][0] / "clock.json").read_text())
        start = _instant(anchor["start"])
        picked = [(servers[i], weight) for i, weight in sample_plans(kinds, args.sample)]
        workdir = root / "essential"
        shutil.rmtree(workdir, ignore_errors=True)
        sample = take_sample(default_catalog(), picked, TARGET, start, workdir / "sample")
        clock = anchored_clock(start, anchor["speed"], anchor["epoch"])
        figures = await _timed(BrokerSettings(url=url, timeout=60.0), clock, args, port, shards)
        figures["steps"] = committed_steps(servers)
    finally:
        for _, process in shards:
            process.send_signal(signal.SIGTERM)
        for _, process in shards:
            process.wait(60)
    return figures | essential_figures(sample, workdir)


def _instant(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


def _dirname(plan: dict[str, Any]) -> str:
    return f"{int(plan['index']):05d}-{plan['serial']}"


async def _timed(
    settings: Any, clock: Any, args: argparse.Namespace, port: int, shards: list[Any]
) -> dict[str, Any]:
    """The campaign from this process, timed; the shards' CPU and peak RSS."""
    pids = [pid for _, process in shards for pid in tree(process.pid)]
    before = await broker_counts(port)
    cpu0, own0, wall0 = cpu_of(pids), time.process_time(), time.monotonic()
    campaign = await run_bench_campaign(settings, clock, args)
    wall = time.monotonic() - wall0
    agents, own = cpu_of(pids) - cpu0, time.process_time() - own0
    rss = sum(peak_rss(p) for p in pids)
    await asyncio.sleep(1.5)
    after = await broker_counts(port)
    counts = campaign.counts()
    say(f"campaign: {counts}")
    figures: dict[str, Any] = {"wall_s": round(wall, 2), "cpu_s": round(agents + own, 2)}
    figures |= {"agent_cpu_s": round(agents, 2), "controller_cpu_s": round(own, 2), "rss_bytes": rss}
    figures |= {name: after[name] - before[name] for name in after}
    figures |= {"outcomes": counts, "succeeded": counts.get("succeeded", 0), "shards": args.shards}
    return figures
