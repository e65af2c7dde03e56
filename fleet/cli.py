"""``allworx-fleet``: the operator's command line — signed commands to servers, and their state.

Exit codes: 0 accepted (and, with ``--wait``, succeeded); 2 rejected (by a policy or by the
command checks), each with ``error: CODE: message`` on stderr; 1 any other failure (broker
unreachable, no reply in time, the upgrade failed or was cancelled).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.cliutil import EXIT_ERROR, EXIT_REFUSED, AllworxGroup, fail
from agent.logs import configure_logging
from common.errors import AllworxError
from fleet.campaign.cli import campaign, watch_command
from fleet.client import FleetClient, RetainedStates
from fleet.operator import OperatorKey, default_operator, load_key_file
from fleet.options import broker_options, broker_settings

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REJECTED = EXIT_REFUSED  # a policy refusal the server reported: exit 2, as everywhere


@click.group(cls=AllworxGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The fleet operator's tool: send signed commands to Allworx servers and list their state."""
    configure_logging()  # warnings on stderr: stdout carries only the documents printed


@main.group()
def send() -> None:
    """Send one signed command to one server and print its reply."""


def command_options(func: F) -> F:
    """The options every ``send`` command takes."""
    func = broker_options(func)
    func = click.option("--site", required=True, help="The server's site.")(func)
    func = click.option("--serial", required=True, help="The server's serial number.")(func)
    func = click.option(
        "--operator-key",
        type=click.Path(path_type=Path),
        default=None,
        help="Operator private key file (default: the simulation's operator).",
    )(func)
    return click.option(
        "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the reply."
    )(func)


def _operator(path: Path | None) -> OperatorKey:
    try:
        return load_key_file(path) if path else default_operator()
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))


def _exchange(params: dict[str, Any], name: str, args: dict[str, Any], wait: float | None) -> None:
    settings, operator = broker_settings(params), _operator(params["operator_key"])
    as_json = params["as_json"]

    def show(event: dict[str, Any]) -> None:
        if not as_json:
            detail = event.get("state") or f"{event.get('phase', '')} {event.get('percent', '')}%"
            click.echo(
                f"  #{event.get('seq')} {event.get('type')} {event.get('build', '')} {detail}", err=True
            )

    async def go() -> dict[str, Any]:
        async with FleetClient.open(settings, operator) as client:
            return await client.send(
                params["site"],
                params["serial"],
                name,
                args,
                timeout=params["timeout"],
                wait=wait,
                on_event=show,
            )

    try:
        reply = asyncio.run(go())
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))
    except TimeoutError:
        fail("TIMEOUT", f"no answer from {params['site']}/{params['serial']} in time")
    _print_reply(reply, as_json)


def _print_reply(reply: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(reply, indent=2))
    else:
        click.echo(
            f"{reply.get('command')} {reply.get('status')}"
            + (
                f": {reply.get('reason')} ({reply.get('rule')}): {reply.get('message')}"
                if reply.get("status") == "rejected"
                else ""
            )
        )
    if reply.get("status") == "rejected":
        if as_json:
            click.echo(f"error: {reply.get('reason')}: {reply.get('message')}", err=True)
        sys.exit(EXIT_REJECTED)
    result = reply.get("result") or {}
    outcome = result.get("outcome") if "type" in result else None
    if outcome is not None and not as_json:
        click.echo(f"upgrade {outcome}: now on {result.get('final_release')}")
    if outcome == "rejected":
        sys.exit(EXIT_REJECTED)
    if outcome not in (None, "succeeded"):
        sys.exit(EXIT_ERROR)


@send.command("upgrade")
@command_options
@click.option("--to", "target", required=True, help="The release to reach.")
@click.option("--wait", is_flag=True, help="Wait for the upgrade's end and show its events.")
@click.option("--wait-timeout", type=float, default=3600.0, show_default=True, help="Seconds for --wait.")
def send_upgrade(target: str, wait: bool, wait_timeout: float, **params: Any) -> None:
    """Upgrade a server step by step to a release."""
    _exchange(params, "upgrade", {"to": target}, wait_timeout if wait else None)


@send.command("stage")
@command_options
@click.option("--to", "target", required=True, help="The release whose images to stage.")
def send_stage(target: str, **params: Any) -> None:
    """Download and verify every image a plan to a release needs into the Update Area; activate nothing."""
    _exchange(params, "stage", {"to": target}, None)


@send.command("plan")
@command_options
@click.option("--to", "target", required=True, help="The release to plan for.")
def send_plan(target: str, **params: Any) -> None:
    """Ask a server for its plan to a release (changes nothing)."""
    _exchange(params, "plan", {"to": target}, None)


@send.command("cancel")
@command_options
def send_cancel(**params: Any) -> None:
    """Cancel the upgrade a server is running (before it activates the new release)."""
    _exchange(params, "cancel", {}, None)


@send.command("install-key")
@command_options
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def send_install_key(key_file: Path, **params: Any) -> None:
    """Send a software key file for the server to verify and install."""
    _exchange(params, "install-key", {"key": key_file.read_text()}, None)


@send.command("report")
@command_options
def send_report(**params: Any) -> None:
    """Ask a server for its current state (and to republish it)."""
    _exchange(params, "report", {}, None)


@main.command()
@broker_options
@click.option("--site", default=None, help="Only this site's servers.")
def status(site: str | None, **params: Any) -> None:
    """List every server's retained state; a retained state that does not validate is listed as invalid."""
    settings = broker_settings(params)

    async def go() -> RetainedStates:
        async with FleetClient.open(settings) as client:
            return await client.read_states(site)

    try:
        found = asyncio.run(go())
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))
    states = found.valid
    if params["as_json"]:
        invalid = [entry.as_dict() for entry in found.invalid]
        click.echo(json.dumps({"servers": states, "invalid": invalid}, indent=2))
        return
    for entry in found.invalid:
        click.echo(f"INVALID    {entry.topic}: {entry.reason}")
    for doc in states:
        key = doc.get("maintenance_key") or {}
        last = doc.get("last_result") or {}
        click.echo(
            f"{doc.get('site', ''):<10} {doc.get('serial', ''):<14} {doc.get('model', ''):<5} "
            f"{doc.get('release', ''):<5} {doc.get('state', ''):<13} "
            f"key {key.get('plan') or '-'} {key.get('expires') or ''}  last {last.get('outcome') or '-'}"
        )


main.add_command(campaign)
main.add_command(watch_command, "watch")


if __name__ == "__main__":
    main()
