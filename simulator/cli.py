"""``allworx-sim``: virtual servers, the vendor's keys and releases, fleets, chaos and scenarios."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import click

from agent.cliutil import DAY, AllworxGroup, guarded, positive, version_option
from agent.logs import configure_logging
from simulator.keycmd import keys as keys_group
from simulator.server import MAX_CALL_LOG_ROWS, ServerSpec, create_server


@click.group(cls=AllworxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("allworx-sim")
@click.option("-v", "--verbose", is_flag=True, help="Show logs on stderr.")
def main(verbose: bool) -> None:
    """The Allworx simulator: virtual servers, the vendor desk, fleets, chaos and scenarios."""
    configure_logging(verbose=verbose)


@main.group()
def server() -> None:
    """Make virtual servers."""


@server.command("create")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="6x12, 6x, 24x, 48x, 320, 324, 530, 536 or 731.")
@click.option("--release", required=True, help="The release it runs, e.g. 7.0.")
@click.option("--serial", default=None, help="Serial number (default: derived from the directory).")
@click.option("--shipped", type=DAY, default=None, help="Ship date YYYY-MM-DD (default: the release's date).")
@click.option(
    "--users", type=click.IntRange(min=0), default=None, help="Users in its database (default: up to 40)."
)
@click.option("--site", default="default", help="The site it belongs to.")
@click.option("--call-log-rows", type=click.IntRange(0, MAX_CALL_LOG_ROWS), default=None,
              help="Call-log rows (default: scaled by users).")  # fmt: skip
@click.option("--repository", default=None,
              help="Where it downloads releases: a folder or an http(s) URL of a repository published with "
              "the same vendor keyring (default: the keyring's own repository).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@guarded
def server_create(
    *,
    directory: Path,
    model: str,
    release: str,
    serial: str | None,
    shipped: date | None,
    users: int | None,
    site: str,
    call_log_rows: int | None,
    repository: str | None,
    as_json: bool,
) -> None:
    """Create a virtual server directory (a new server gets its SWM-4 ship key)."""
    spec = ServerSpec(
        model=model,
        release=release,
        serial=serial,
        shipped=shipped,
        users=users,
        site=site,
        call_log_rows=call_log_rows,
        repository=repository,
    )
    made = create_server(directory, spec)
    ident = made.identity()
    document: dict[str, Any] = {
        "server_dir": str(directory),
        "serial": ident.serial,
        "model": ident.model,
        "release": made.committed().version,
        "shipped": ident.shipped.isoformat(),
        "keys": len(made.installed_keys()),
    }
    click.echo(
        json.dumps(document, indent=2)
        if as_json
        else f"created {ident.model} {ident.serial} on {document['release']} at {directory}"
    )


main.add_command(keys_group)


@main.group()
def releases() -> None:
    """The vendor's release repository."""


def _attach_publish() -> None:
    from simulator.publish import publish_command
    from simulator.serve import serve_command

    releases.add_command(publish_command, "publish")
    releases.add_command(serve_command, "serve")


_attach_publish()


def _attach_attack() -> None:
    from simulator.attack import attack_command

    main.add_command(attack_command, "attack")


_attach_attack()


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to build the demo (default: a new temporary folder, removed at the end).",
)
@click.option("--servers", type=click.IntRange(1, 20_000), default=200, show_default=True,
              help="Servers in the fleet.")  # fmt: skip
@click.option("--speed", type=positive(), default=600.0, show_default=True,
              help="Simulated seconds per real second.")  # fmt: skip
@click.option("--broker", default=None, help="mqtt://host:port (default: an embedded broker).")
@click.option("--workers", type=click.IntRange(0, 64), default=1, show_default=True,
              help="Processes hosting the agents (0: in the demo's own process).")  # fmt: skip
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Where to write report.json and report.html (default: DIR/report; without "
                   "--dir or --keep, a new allworx-demo-report-* temporary folder).")  # fmt: skip
@click.option("--keep", is_flag=True,
              help="Keep the temporary working folder (the fleet, its report) at the end.")  # fmt: skip
@guarded
def demo(
    *,
    workdir: Path | None,
    servers: int,
    speed: float,
    broker: str | None,
    workers: int,
    report_dir: Path | None,
    keep: bool,
) -> None:
    """The main job: a fleet upgraded by one campaign, watched live, then reported.

    Without --dir it works in a temporary folder that it removes at the end (also after Ctrl-C or
    SIGTERM) unless --keep is given, and prints where the report is. Ctrl-C or SIGTERM stops every
    worker process it started; the exit code after SIGTERM is 143.
    """
    from simulator.broker import check_broker
    from simulator.demo import run_demo
    from simulator.fleet.host import sigterm_unwinds

    if broker is not None:
        check_broker(broker)  # an unreachable broker fails now, not after the agents' wait

    with sigterm_unwinds():
        code = run_demo(workdir, servers=servers, speed=speed, broker=broker, workers=workers,
                        report_dir=report_dir, keep=keep)  # fmt: skip
    sys.exit(code)


from simulator.vendor import cli as vendor_cli  # noqa: E402  # reason: registered after the core groups

for _command in (vendor_cli.vendor, vendor_cli.migrate, vendor_cli.site):
    main.add_command(_command)


def _attach_scenario() -> None:
    from simulator.scenario.cli import scenario

    main.add_command(scenario)


_attach_scenario()


def _attach_chaos() -> None:
    from simulator.chaos import chaos_command

    main.add_command(chaos_command, "chaos")


_attach_chaos()


def _attach_fleet() -> None:
    from simulator.fleet.command import fleet_command

    main.add_command(fleet_command, "fleet")


_attach_fleet()


def _attach_broker() -> None:
    from simulator.broker import broker_command
    from simulator.lockdown import config_command
    from simulator.pki import pki

    broker_command.add_command(config_command, "config")
    main.add_command(broker_command, "broker")
    main.add_command(pki, "pki")


_attach_broker()


if __name__ == "__main__":
    main()
