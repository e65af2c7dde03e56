"""``allworx-sim fleet``: build (or reuse) a fleet and run an agent per server until Ctrl-C or SIGTERM.

Either signal stops every worker process it started (the exit code after SIGTERM is 143).

Several hosts can share one fleet against one broker: each runs ``--shard i/n`` (the servers
whose index is ``i`` modulo ``n``) with the same description, so all agree on every server
(docs/fleet.md). It writes ``DIR/networks.json`` (for ``allworx-fleet campaign start
--networks``), ``DIR/members.json`` (the fleet's serials, for ``--members``: a campaign then touches
only this fleet's servers on a shared broker) and ``DIR/clock.json`` (the simulated clock's anchor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from agent.cliutil import Real, fail, guarded, positive
from simulator.broker import check_broker
from simulator.fleet.build import Fleet, build_fleet, in_use
from simulator.fleet.spec import FleetFileError, FleetSpec, from_flags, load_toml, networks, parse_weights


def _spec(p: dict[str, Any]) -> FleetSpec:
    overrides: dict[str, Any] = {
        "servers": p["servers"],
        "seed": p["seed"],
        "multisite": p["multisite"],
        "failing": p["failing"],
        "offline": p["offline"],
        "models": parse_weights(p["models"]) if p["models"] else None,
        "releases": parse_weights(p["releases"]) if p["releases"] else None,
        "keys": parse_weights(p["keys"]) if p["keys"] else None,
        "sites": tuple(s.strip() for s in p["sites"].split(",")) if p["sites"] else None,
    }
    if p["config"]:
        return load_toml(Path(p["config"]), **overrides)
    return from_flags(**overrides)


SHARE = Real(0, 1)


def _shard(_ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    """Parse ``i/n`` with ``0 <= i < n``."""
    index, _, count = value.partition("/")
    try:
        shard, shards = int(index), int(count or 1)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not i/n (e.g. 0/4)", param=param) from None
    if not 0 <= shard < shards:
        raise click.BadParameter(f"{value!r}: need 0 <= i < n (e.g. 0/4 .. 3/4)", param=param)
    return shard, shards


@click.command("fleet")
@click.option("--dir", "root", type=click.Path(path_type=Path), required=True, help="The fleet's folder.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), default=None, help="Fleet TOML.")
@click.option("--servers", type=click.IntRange(1, 1_000_000), default=None, help="Servers in the fleet.")
@click.option("--models", default=None, help="Weights per model, e.g. 6x=3,731=1.")
@click.option("--releases", default=None, help="Weights per release, e.g. 7.0=2,7.6=1,8.0=1.")
@click.option("--keys", default=None, help="Weights per key kind: anytime, expired, none.")
@click.option("--sites", default=None, help="Comma-separated site names.")
@click.option("--multisite", type=SHARE, default=None, help="Share of servers in multi-site networks (0-1).")
@click.option("--failing", type=SHARE, default=None, help="Share given corrupted images (0-1).")
@click.option("--offline", type=SHARE, default=None, help="Share whose agent is not started (0-1).")
@click.option("--seed", type=int, default=None, help="The fleet's random seed.")
@click.option("--broker", default=None, help="mqtt://host:port (default: an embedded broker).")
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=1,
    show_default=True,
    help="Processes hosting the agents (0: this process).",
)
@click.option(
    "--speed", type=positive(), default=600.0, show_default=True, help="Simulated seconds per second."
)
@click.option("--shard", default="0/1", show_default=True, callback=_shard,
              help="i/n, 0 <= i < n: run the servers with index = i mod n.")  # fmt: skip
@click.option("--build-only", is_flag=True, help="Build (or reuse) the servers and stop.")
@guarded
def fleet_command(**p: Any) -> None:
    """Build (or reuse) a simulated fleet and run one agent (one MQTT session) per server.

    Ctrl-C or SIGTERM stops it and every worker process it started; the exit code after SIGTERM is 143.
    """
    from simulator.fleet.host import quiet_logs, sigterm_unwinds

    quiet_logs()
    with sigterm_unwinds():
        _fleet(p)


def _fleet(p: dict[str, Any]) -> None:
    """Build this fleet, write its files and (unless ``--build-only``) host this shard's agents."""
    try:
        spec = _spec(p)
    except FleetFileError as exc:  # one line per problem, each naming the file (or flag) and key
        fail(exc.reason.value, str(exc))
    shard, shards = p["shard"]
    if p["broker"] is not None and not p["build_only"]:
        check_broker(p["broker"])  # an unreachable broker fails now, not after the agents' wait
    with in_use(p["root"]):
        built = build_fleet(p["root"], spec, workers=2, progress=None)
        mine = replace(built, plans=[s for s in built.plans if s.index % shards == shard])
        (p["root"] / "networks.json").write_text(json.dumps(networks(built.plans), indent=1) + "\n")
        members = [plan.serial for plan in built.plans]  # for campaign start --members: this fleet only
        (p["root"] / "members.json").write_text(json.dumps(members, indent=1) + "\n")
        click.echo(f"{len(built.plans)} servers ({built.built} built); this host runs {len(mine.plans)}")
        if not p["build_only"]:
            _serve(p, mine)


def _serve(p: dict[str, Any], mine: Fleet) -> None:
    """Host this shard's agents until Ctrl-C (or SIGTERM, which :func:`sigterm_unwinds` turns into one)."""
    from simulator.fleet.run import simulate

    async def serve() -> None:
        async with simulate(  # the simulation's fast disk and verifier (docs/power-cuts.md)
            mine, broker=p["broker"], speed=p["speed"], workers=p["workers"]
        ) as sim:
            anchor = {
                "start": sim.config.start.isoformat(),
                "speed": sim.config.speed,
                "epoch": sim.config.epoch,
            }
            (p["root"] / "clock.json").write_text(json.dumps(anchor) + "\n")
            click.echo(
                f"{sim.running} agents connected to {sim.settings.url}; simulated now "
                f"{sim.clock().now().isoformat()} at x{sim.config.speed:g}; Ctrl-C stops"
            )
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
