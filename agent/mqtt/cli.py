"""``allworx-agent run``: the daemon that connects a server to the fleet broker.

Every option can also come from the configuration file (``--config``, default
``/etc/allworx-agent/agent.toml`` when it exists; :mod:`agent.service.config`) and from an
environment variable ``ALLWORX_<OPTION>``. Precedence, highest first: the command line, the
environment, the file, the option's default. ``allworx-agent config show`` prints the result.

Exit codes as every ``allworx-agent`` command: 0 after a clean stop (SIGTERM, Ctrl-C), 1 when
the server directory, the options or the configuration file are unusable (``error: CODE: message``
on stderr).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import structlog
from click.core import ParameterSource

from agent.cliutil import (
    check_private,
    check_regular,
    clock_for,
    fail,
    guarded,
    open_server,
    password_options,
    positive,
    read_password,
)
from agent.clock import Clock, SimClock, SystemClock
from agent.logs import LEVELS, configure_service_logging
from agent.mqtt.connection import KEEPALIVE, BrokerSettings, Protocol
from agent.mqtt.service import Reload
from agent.mqtt.topics import check_level
from agent.service.config import DEFAULT_PATH, ENV_PREFIX, SECRETS, ConfigError, env_name, load_config
from agent.upgrader import Timing

log = structlog.get_logger("agent.service")


class ConfigCommand(click.Command):
    """A command whose options' defaults come from the configuration file first."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Load the configuration file named by ``--config`` (or the default one) before parsing."""
        self.argv = list(args)  # what SIGHUP parses again
        path = config_path(args)
        if path is not None:
            try:
                extra["default_map"] = {**load_config(path), **extra.get("default_map", {})}
            except ConfigError as exc:
                fail(exc.reason.value, str(exc))
        extra.setdefault("auto_envvar_prefix", ENV_PREFIX.rstrip("_"))
        return super().make_context(info_name, args, parent, **extra)


def config_path(args: list[str]) -> Path | None:
    """The file ``--config`` names in ``args``, else ``ALLWORX_CONFIG``, else the default if it exists."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--config="):
            return Path(arg.partition("=")[2])
    if named := os.environ.get(env_name("config")):
        return Path(named)
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


@click.command("run", cls=ConfigCommand)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    envvar=env_name("config"),
    help=f"A TOML file setting any option by its long name (default: {DEFAULT_PATH} if it exists).",
)
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
@click.option(
    "--event-batch-interval",
    "event_batch_interval",
    type=click.FloatRange(0, 60),
    default=0.25,
    show_default=True,
    help="Seconds an event may wait for others to share its events message (a result, a refusal, "
    "a command's answer or a rollback goes at once; 64 events fill a message).",
)
@click.option(
    "--log-level",
    type=click.Choice(sorted(LEVELS)),
    default="info",
    show_default=True,
    help="The least important log lines written.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="auto: JSON lines when stdout is not a terminal (journald), readable lines on one.",
)
@click.option(
    "--health",
    default=None,
    metavar="HOST:PORT",
    help="Serve GET /healthz and /metrics there (e.g. 127.0.0.1:9464); off by default.",
)
@click.option(
    "--health-down-after",
    type=positive(),
    default=60.0,
    show_default=True,
    help="Seconds the broker session may be down before /healthz answers 503.",
)
@click.option(
    "--ha-discovery",
    is_flag=True,
    default=False,
    help="Announce the server to Home Assistant (MQTT discovery: an update entity and two sensors).",
)
@click.option(
    "--ha-prefix", default="homeassistant", show_default=True, help="Home Assistant's discovery prefix."
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
    event_batch_interval: float,
    config_file: Path | None,
    log_level: str,
    log_format: str,
    health: str | None,
    health_down_after: float,
    ha_discovery: bool,
    ha_prefix: str,
) -> None:
    """Serve the fleet broker: publish state, availability and events, obey signed commands.

    As a systemd service (Type=notify) it reports READY, STATUS and watchdog pings; SIGHUP re-reads
    the configuration (log level and format at once, broker settings by reconnecting).
    """
    from agent.mqtt.daemon import Agent, AgentOptions
    from agent.mqtt.service import ServiceOptions, monitor_for, serve
    from agent.service.notify import Notifier

    del config_file  # read before the options were parsed (ConfigCommand)
    configure_service_logging(log_level, log_format)
    server = open_server(server_dir)
    try:
        settings = broker_settings_from(click.get_current_context().params)
        if site is not None:
            check_level(site, "site")
        listen = _address(health) if health is not None else None
    except ValueError as exc:
        fail("BAD_INPUT", str(exc))
    clock, timing = _clock_and_timing(now, speed)
    argv = getattr(click.get_current_context().command, "argv", [])

    async def main() -> None:
        protocol = None if mqtt_version == "auto" else Protocol(mqtt_version)
        options = AgentOptions(
            broker=settings,
            site=site,
            timing=timing,
            protocol=protocol,
            ha_prefix=ha_prefix if ha_discovery else None,
            batch_interval=event_batch_interval,
        )
        made: list[Agent] = []
        monitor = monitor_for(Notifier(), lambda: made[0] if made else None)
        made.append(Agent(server, options, clock=clock, observer=monitor))
        service = ServiceOptions(
            health=listen, health_down_after=health_down_after, reload=lambda: _reread(argv)
        )
        await serve(made[0], monitor, service)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return
    except OSError as exc:  # the health listener's address
        fail("BAD_INPUT", f"--health {health}: {exc.strerror or exc}")


def broker_settings_from(p: Mapping[str, Any], *, key: str = "key") -> BrokerSettings:
    """The broker settings the parsed options ``p`` name (``key``: the name of the client-key option's
    parameter; ``keepalive`` is optional).

    Raises:
        ValueError: unusable (a bad URL, a TLS file that is not a regular file, a secret file others
            may read, both password options).
    """
    secret = read_password(p["password"], p["password_file"])
    for option, what in (("ca", "CA bundle"), ("cert", "client certificate"), (key, "client key")):
        if p[option] is not None:
            check_regular(p[option], what)
    if p[key] is not None:
        check_private(p[key], "client key")
    return BrokerSettings(
        url=p["broker"],
        ca=p["ca"],
        cert=p["cert"],
        key=p[key],
        username=p["username"],
        password=secret,
        keepalive=p.get("keepalive") or KEEPALIVE,
    )


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of ``--health``.

    Raises:
        ValueError: not HOST:PORT with a port in 0..65535.
    """
    host, _, port = text.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"--health {text!r} must be HOST:PORT, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


def _reread(argv: list[str]) -> Reload | None:
    """The options ``run`` would start with now (file, environment, flags), or None (logged)."""
    path = config_path(argv)
    try:
        if path is not None:
            load_config(path)
        ctx = run.make_context("run", list(argv))
        p = ctx.params
        settings = broker_settings_from(p)
    except (ConfigError, ValueError, click.ClickException) as exc:
        log.error("config_reload_failed", error=str(exc))
        return None
    return Reload(log_level=p["log_level"], log_format=p["log_format"], broker=settings)


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


SOURCES = {
    ParameterSource.COMMANDLINE: "command line",
    ParameterSource.ENVIRONMENT: "environment",
    ParameterSource.DEFAULT_MAP: "config file",
    ParameterSource.DEFAULT: "default",
}


@click.group("config")
def config_group() -> None:
    """The daemon's configuration (file, environment, flags)."""


def _optional(param: click.Parameter) -> click.Parameter:
    copied = copy.copy(param)
    copied.required = False
    return copied


@config_group.command("show", cls=ConfigCommand)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
@guarded
def config_show(ctx: click.Context, /, as_json: bool, **options: Any) -> None:
    """Print the effective configuration of `run` and where each value came from (secrets masked).

    Takes the same options as `run` (``--config FILE`` among them) and starts nothing.
    """
    rows = []
    for name, value in options.items():
        if name == "config_file":
            continue
        source = SOURCES.get(ctx.get_parameter_source(name) or ParameterSource.DEFAULT, "default")
        shown: object = value
        if name in SECRETS and value is not None:
            shown = "********"
        elif isinstance(value, Path):
            shown = str(value)
        rows.append({"option": name, "value": shown, "source": source})
    path = options["config_file"] or config_path([])
    if as_json:
        click.echo(json.dumps({"config_file": str(path) if path else None, "options": rows}, indent=2))
        return
    click.echo(f"config file: {path if path else '(none)'}")
    for row in rows:
        value = "-" if row["value"] is None else row["value"]
        click.echo(f"{row['option']:<18} {value!s:<40} {row['source']}")


config_show.params[:0] = [_optional(p) for p in run.params]
