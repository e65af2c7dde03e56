"""``allworx-agent run``: the daemon that connects a server to the fleet broker.

Exit codes as every ``allworx-agent`` command: 0 after a clean stop (SIGTERM, Ctrl-C), 1 when
the server directory or the options are unusable (``error: CODE: message`` on stderr).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from agent.cliutil import (
    check_private,
    clock_for,
    fail,
    guarded,
    open_server,
    password_options,
    positive,
    read_password,
)
from agent.clock import Clock, SimClock, SystemClock
from agent.mqtt.connection import BrokerSettings, Protocol
from agent.mqtt.topics import check_level
from agent.upgrader import Timing


@click.command("run")
@click.option(
    "--server-dir",
    "server_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The server directory (a lab box's or a virtual server's).",
)
@click.option(
    "--broker",
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="mqtt://host:port, or mqtts://host:port with TLS.",
)
@click.option("--site", default=None, help="The site in the topics (default: the server's own).")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), help="CA bundle for mqtts://.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate (mqtts://).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="Client certificate's key.")
@click.option("--username", default=None, help="Broker user name.")
@password_options
@click.option(
    "--keepalive",
    type=click.IntRange(1, 3600),
    default=30,
    show_default=True,
    help="MQTT keep-alive in seconds: a dead agent reads offline within 1.5 of these.",
)
@click.option(
    "--mqtt-version",
    "mqtt_version",
    type=click.Choice(["auto", "5", "3.1.1"]),
    default="auto",
    show_default=True,
    help="auto: MQTT 5, falling back to 3.1.1 for brokers that lack it.",
)
@click.option(
    "--now", default=None, help="Start a simulated clock at this date (YYYY-MM-DD); default: the real clock."
)
@click.option(
    "--speed",
    type=positive(allow_inf=True),
    default=float("inf"),
    help="Simulated seconds per real second (reboots, database work); default: no waiting.",
)
@guarded
def run(  # noqa: PLR0917  # reason: click passes every option
    server_dir: Path,
    broker: str,
    site: str | None,
    ca: str | None,
    cert: str | None,
    key: str | None,
    username: str | None,
    password: str | None,
    password_file: Path | None,
    keepalive: int,
    mqtt_version: str,
    now: str | None,
    speed: float,
) -> None:
    """Serve the fleet broker: publish state, availability and events, obey signed commands."""
    from agent.mqtt.daemon import Agent, AgentOptions, stop_on_sigterm

    server = open_server(server_dir)
    try:
        secret = read_password(password, password_file)
        if key is not None:
            check_private(key, "client key")
        settings = BrokerSettings(
            url=broker, ca=ca, cert=cert, key=key, username=username, password=secret, keepalive=keepalive
        )
        if site is not None:
            check_level(site, "site")
    except ValueError as exc:
        fail("BAD_INPUT", str(exc))
    clock, timing = _clock_and_timing(now, speed)

    async def serve() -> None:
        protocol = None if mqtt_version == "auto" else Protocol(mqtt_version)
        options = AgentOptions(broker=settings, site=site, timing=timing, protocol=protocol)
        agent = Agent(server, options, clock=clock)
        task = asyncio.current_task()
        if task is not None:
            stop_on_sigterm(task)
        await agent.run()

    try:
        asyncio.run(serve())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return


def _clock_and_timing(now: str | None, speed: float) -> tuple[Clock, Timing]:
    """The policy clock and the simulated hardware's durations of one daemon.

    Without ``--now`` and ``--speed`` the daemon judges every decision at the real current instant
    (a key that expires while it runs stops authorising upgrades at once), and the simulated
    hardware's own durations (a reboot, database work) take no time. With either option the clock
    is simulated: it starts at ``--now`` (or the real now) and runs ``--speed`` times real time.
    """
    if now is None and speed == float("inf"):
        return SystemClock(), Timing(reboot=0.0, db_rows_per_second=float("inf"))
    start = clock_for(now)
    return (start if speed == float("inf") else SimClock(start.now(), speed=speed)), Timing()
