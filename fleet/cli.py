"""``allworx-fleet``: the operator's command line — signed commands to servers, and their state.

Exit codes: 0 accepted (and, with ``--wait``, succeeded); 2 rejected (by a policy or by the
command checks), each with ``error: CODE: message`` on stderr; 1 any other failure (broker
unreachable, no reply in time, bad input such as a file that is not a key, the upgrade failed or
was cancelled).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.cliutil import (
    EXIT_ERROR,
    EXIT_REFUSED,
    AllworxGroup,
    fail,
    positive,
    read_key_text,
    root_cause,
    version_option,
)
from agent.events import Progress, Refused, Resumed, Transition
from agent.keys import parse_key
from agent.logs import configure_logging
from agent.mqtt.messages import EventRecord
from common.errors import AllworxError
from fleet.campaign.cli import campaign, watch_command
from fleet.client import Answer, FleetClient
from fleet.operator import OperatorKey, default_operator, load_key_file
from fleet.options import broker_options, broker_settings, topic_level
from fleet.report.cli import COMMANDS as CAMPAIGN_READERS
from fleet.select import parse_selection
from fleet.status import FleetStatus, as_json, collect, print_table

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REJECTED = EXIT_REFUSED  # a policy refusal the server reported: exit 2, as everywhere


@click.group(cls=AllworxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("allworx-fleet")
def main() -> None:
    """The fleet operator's tool: send signed commands to Allworx servers and list their state."""
    configure_logging()  # warnings on stderr: stdout carries only the documents printed


@main.group()
def send() -> None:
    """Send one signed command to one server and print its reply."""


def command_options(func: F) -> F:
    """The options every ``send`` command takes."""
    func = broker_options(func)
    func = click.option("--site", required=True, callback=topic_level, help="The server's site.")(func)
    func = click.option("--serial", required=True, callback=topic_level, help="The server's serial number.")(
        func
    )
    func = click.option(
        "--operator-key",
        type=click.Path(path_type=Path),
        default=None,
        help="Operator private key file (default: the simulation's operator).",
    )(func)
    return click.option(
        "--timeout", type=positive(), default=10.0, show_default=True, help="Seconds to wait for the reply."
    )(func)


def _operator(path: Path | None) -> OperatorKey:
    try:
        return load_key_file(path) if path else default_operator()
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))


def _exchange(params: dict[str, Any], name: str, args: dict[str, Any], wait: float | None) -> None:
    settings, operator = broker_settings(params), _operator(params["operator_key"])
    as_json = params["as_json"]

    def show(message: EventRecord) -> None:
        if not as_json:
            click.echo(f"  #{message.seq} {message.event.type} {_event_detail(message)}", err=True)

    async def go() -> Answer:
        async with FleetClient.open(settings, operator) as client:
            return await client.request(
                params["site"],
                params["serial"],
                name,
                args,
                timeout=params["timeout"],
                wait=wait,
                on_event=show,
            )

    try:
        answer = asyncio.run(go())
    except Exception as exc:
        if isinstance(root_cause(exc), TimeoutError):  # raised inside the client's task group
            fail("TIMEOUT", f"no answer from {params['site']}/{params['serial']} in {params['timeout']:g} s")
        raise
    _print_answer(answer, as_json)


def _event_detail(message: EventRecord) -> str:
    """An event's build and state (or progress) for the ``--wait`` lines."""
    match message.event:
        case Transition(build=build, state=state) | Resumed(build=build, state=state):
            return f"{build} {state}"
        case Progress(build=build, phase=phase, percent=percent):
            return f"{build} {phase} {percent}%"
        case Refused(build=build):
            return build
        case _:
            return ""


def _print_answer(answer: Answer, as_json: bool) -> None:
    reply, outcome = answer.reply, answer.outcome
    if as_json:
        document = reply.wire()  # the JSON edge: with --wait the result is the result event
        if answer.result is not None:
            document["result"] = answer.result.wire()
        click.echo(json.dumps(document, indent=2))
    elif reply.status == "rejected":
        click.echo(f"{reply.command} {reply.status}: {reply.reason} ({reply.rule}): {reply.message}")
    else:
        click.echo(f"{reply.command} {reply.status}")
    if reply.status == "rejected":
        if as_json:
            click.echo(f"error: {reply.reason}: {reply.message}", err=True)
        sys.exit(EXIT_REJECTED)
    if outcome is not None and not as_json:
        click.echo(f"upgrade {outcome.outcome}: now on {outcome.final_release}")
    if outcome is None or outcome.outcome == "succeeded":
        return
    sys.exit(EXIT_REJECTED if outcome.outcome == "rejected" else EXIT_ERROR)


@send.command("upgrade")
@command_options
@click.option("--to", "target", required=True, help="The release to reach.")
@click.option("--wait", is_flag=True, help="Wait for the upgrade's end and show its events.")
@click.option(
    "--wait-timeout", type=positive(), default=3600.0, show_default=True, help="Seconds for --wait."
)
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
    """Send a software key file for the server to verify and install.

    A file that is not a key (``KEY_FORMAT_INVALID``) is not sent: exit 1, as ``allworx-agent keys
    install`` does.
    """
    text = read_key_text(key_file)
    parse_key(text)  # KeyFormatError: exit 1 before anything is sent
    _exchange(params, "install-key", {"key": text}, None)


@send.command("report")
@command_options
def send_report(**params: Any) -> None:
    """Ask a server for its current state (and to republish it)."""
    _exchange(params, "report", {}, None)


@main.command()
@broker_options
@click.option("--site", default=None, callback=topic_level, help="Only this site's servers.")
@click.option(
    "--select",
    "select",
    multiple=True,
    help="Only servers whose retained state matches (repeatable, ANDed): site=east, model=6x,24x, "
    "release<8.0, key=valid|expired|none, serial=A,B or serial=@FILE.",
)
def status(site: str | None, select: tuple[str, ...], **params: Any) -> None:
    """List every server: release, availability (since when this run saw it), maintenance key, last
    result, current job; a retained document that does not validate is listed as invalid."""
    settings = broker_settings(params)
    try:
        selection = parse_selection(select)
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))

    async def go() -> FleetStatus:
        async with FleetClient.open(settings) as client:
            return await collect(client, site, selection)

    try:
        found = asyncio.run(go())
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))
    if params["as_json"]:
        click.echo(json.dumps(as_json(found), indent=2))
        return
    print_table(found)


main.add_command(campaign)
for _reader in CAMPAIGN_READERS:  # campaign log|report|list
    campaign.add_command(_reader)
main.add_command(watch_command, "watch")


if __name__ == "__main__":
    main()
