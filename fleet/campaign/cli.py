"""``allworx-fleet campaign start|status|pause|resume|abort`` and ``allworx-fleet watch``.

(``campaign log|report|list`` are in :mod:`fleet.report.cli`.)

``start`` runs the controller in the foreground until the campaign ends (or, with ``--dry-run``,
prints the per-server prediction and changes nothing); kill it and run ``start --resume`` to
continue from the retained state. ``pause``/``resume``/``abort`` publish a signed, retained
request the controller applies; the campaign must be on the broker (started, its state retained).
Exit codes: 0 done; 1 error (bad options, no such campaign, broker unreachable); 2 the campaign
ended cancelled, or some servers failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from agent.cliutil import Real, fail, guarded, positive
from agent.clock import Clock, SimClock, SystemClock, parse_now
from agent.mqtt.messages import StateDocument
from common.errors import AllworxError
from common.reasons import Reason
from fleet.campaign.controller import Controller, control_topic, load, load_trusted, sign_control, summary
from fleet.campaign.documents import DryRunRow
from fleet.campaign.model import Campaign
from fleet.campaign.setup import dry_run
from fleet.campaign.spec import NEWEST, CampaignSpec, load_members, load_networks
from fleet.client import FleetClient
from fleet.operator import default_operator, load_key_file
from fleet.options import broker_options, broker_settings, connection_options, topic_level
from fleet.select import Selection, parse_selection
from fleet.watch import campaign_line
from releases.catalog import default_catalog


def _clock(now: str | None, speed: float) -> Clock:
    return SystemClock() if now is None else SimClock(parse_now(now), speed)


def _spec(p: Mapping[str, Any]) -> CampaignSpec:
    """The campaign the options describe (``p``: click's parameters by name, as the command got them).

    Raises:
        ValueError: an option is out of range, or the networks or members file is unreadable or malformed.
        AllworxError: the target is not ``newest`` nor a release of the catalogue (``UNKNOWN_RELEASE``).
    """
    if p["target"] != NEWEST and default_catalog().get(p["target"]) is None:
        raise AllworxError(f"no release {p['target']!r} in the catalogue", reason=Reason.UNKNOWN_RELEASE)
    abort = (
        {"threshold": p["abort_threshold"], "min_finished": p["abort_min"], "action": p["abort_action"]}
        if p["abort_threshold"]
        else None
    )
    window = None
    if (p["window_opens"] is None) != (p["window_closes"] is None):
        raise ValueError("give both --window-opens and --window-closes, or neither")
    if p["window_opens"]:
        window = {"opens": parse_now(p["window_opens"]), "closes": parse_now(p["window_closes"])}
    members = load_members(Path(p["members"])) if p["members"] else ()
    return CampaignSpec.from_options(
        campaign_id=p["campaign_id"],
        target=p["target"],
        canary=p["canary"],
        batch=p["batch"],
        rate_per_minute=p["rate"],
        max_in_flight=p["max_in_flight"],
        abort=abort,
        window=window,
        gate_phases=p["gate"],
        networks=load_networks(Path(p["networks"])) if p["networks"] else None,
        members=members,
    )


@click.group()
def campaign() -> None:
    """Run and steer upgrade campaigns (state retained on the broker)."""


def _common(func: Any) -> Any:
    func = click.option(
        "--id", "campaign_id", required=True, callback=topic_level, help="The campaign's id."
    )(func)
    func = click.option(
        "--operator-key",
        type=click.Path(path_type=Path),
        default=None,
        help="Operator private key (default: the simulation's operator).",
    )(func)
    return broker_options(func)


@campaign.command("start")
@_common
@click.option("--target", default="newest", show_default=True, help="A release, or newest (per model).")
@click.option("--canary", type=click.IntRange(min=0), default=0, help="Servers in the canary phase.")
@click.option("--batch", default="100%", help="Later phases: a count (25) or a share (20%).")
@click.option("--rate", type=positive(), default=None, help="Servers started per minute (campaign clock).")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=None, help="Servers upgrading at once.")
@click.option("--abort-threshold", type=Real(0, 1, min_open=True), default=None,
              help="Failure share (0 to 1) that stops a phase.")  # fmt: skip
@click.option("--abort-min", type=click.IntRange(min=1), default=1,
              help="Finished servers before the rule applies.")  # fmt: skip
@click.option("--abort-action", type=click.Choice(["pause", "cancel"]), default="pause")
@click.option("--window-opens", default=None, help="Maintenance window start (ISO 8601).")
@click.option("--window-closes", default=None, help="Maintenance window end (ISO 8601).")
@click.option("--gate", is_flag=True, help="Pause after each phase until resumed.")
@click.option(
    "--networks", type=click.Path(exists=True), default=None, help="JSON: network -> serials (SITE-1)."
)
@click.option(
    "--members",
    type=click.Path(exists=True),
    default=None,
    help="JSON list of the serials the campaign may touch (default: every server reporting).",
)
@click.option(
    "--select",
    "select",
    multiple=True,
    help="Only servers whose retained state matches (repeatable, ANDed): site=east, model=6x,24x, "
    "release<8.0, network=N, key=valid|expired|none, serial=A,B or serial=@FILE.",
)
@click.option("--now", default=None, help="Campaign clock start for a simulated fleet (default: real time).")
@click.option("--speed", type=positive(), default=1.0, help="Campaign clock speed with --now.")
@click.option("--servers", "expected", type=click.IntRange(min=0), default=None,
              help="Wait until this many servers reported.")  # fmt: skip
@click.option(
    "--dry-run", is_flag=True, help="Print each server's predicted steps and outcome; change nothing."
)
@click.option("--resume", "resume_existing", is_flag=True, help="Continue the retained campaign of this id.")
@click.option("--trust", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of operator public keys (*.pub) whose requests the campaign applies.")  # fmt: skip
@guarded
def start(**p: Any) -> None:
    """Start (or continue) a campaign and drive it to its end (progress lines on stderr)."""
    settings = broker_settings(p)
    trusted = load_trusted(p["trust"]) if p["trust"] else None
    operator = load_key_file(p["operator_key"]) if p["operator_key"] else default_operator()
    _clock(p["now"], p["speed"])  # a bad --now fails here, before any connection
    wanted = None if p["resume_existing"] else _spec(p)  # so do bad campaign options
    selection = parse_selection(p["select"], wanted.networks if wanted else None)  # and bad --select

    skipped: dict[str, str] = {}  # topic -> why its retained document was left out (and logged)

    async def go() -> Any:
        async with FleetClient.open(settings, operator) as client:
            clock = _clock(p["now"], p["speed"])
            controller = Controller(client, clock, trusted=trusted, on_change=_progress(clock))
            skipped.update(controller.invalid)
            controller.invalid = skipped
            existing = await load(client, p["campaign_id"]) if p["resume_existing"] else None
            if p["resume_existing"] and existing is None:
                raise AllworxError(f"no campaign {p['campaign_id']!r} on the broker to resume")
            async with controller.listening(p["campaign_id"]):
                await controller.settle(expected=p["expected"], quiet=2.0)
                spec = wanted or _spec(p)
                if selection.clauses and existing is None:
                    spec = _selected(spec, selection, controller.states)
                current = existing or await controller.prepare(spec)
                if p["dry_run"]:
                    return dry_run(current)
                return summary(await controller.run(current))

    result = asyncio.run(go())
    if p["dry_run"]:
        invalid = [{"topic": topic, "reason": why} for topic, why in sorted(skipped.items())]
        _print_dry_run(p["campaign_id"], result, invalid, p["as_json"])
        return
    click.echo(json.dumps(result, indent=1))
    counts = result["counts"]
    sys.exit(2 if result["status"] == "cancelled" or counts.get("failed") else 0)


def _selected(spec: CampaignSpec, selection: Selection, states: Mapping[str, StateDocument]) -> CampaignSpec:
    """The spec limited to the servers whose retained state the selection matches (its members).

    Raises:
        AllworxError: no server reporting matches (``BAD_INPUT``): an empty member list would mean all.
    """
    chosen = sorted(s for s, doc in states.items() if selection.matches(doc))
    if spec.members:
        chosen = [s for s in chosen if s in set(spec.members)]
    if not chosen:
        shown = " ".join(f"--select {e}" for e in selection.expressions)
        raise AllworxError(f"no server reporting matches {shown}")
    raw = {**spec.to_dict(), "members": chosen, "selection": list(selection.expressions)}
    return CampaignSpec.from_dict(raw, "campaign options")


def _progress(clock: Clock) -> Callable[[Campaign], None]:
    """Print a campaign's summary line on stderr when it changes (plain lines when not on a terminal)."""
    last = [""]
    tty = sys.stderr.isatty()

    def show(current: Campaign) -> None:
        line = campaign_line(current.summary_dict(clock.now()))
        if line != last[0]:
            last[0] = line
            click.echo(f"\r{line}\033[K" if tty else line, err=True, nl=not tty)

    return show


def _print_dry_run(
    campaign_id: str, rows: list[DryRunRow], invalid: list[dict[str, str]], as_json: bool
) -> None:
    if as_json:
        click.echo(json.dumps({"dry_run": rows, "invalid": invalid}, indent=1))
        return
    click.echo(f"dry run of campaign {campaign_id}: {len(rows)} servers reported; nothing was changed")
    for bad in invalid:
        click.echo(f"invalid retained document on {bad['topic']}: {bad['reason']} (left out)")
    for r in rows:
        click.echo(
            f"{r['serial']:<14} {r['release']:>5} -> {r['final_release']:<5} {r['outcome']:<9} "
            f"{r.get('reason') or ''}"
        )


@campaign.command("status")
@_common
@guarded
def status(**p: Any) -> None:
    """Print a campaign's retained state (counts, phase, refusals)."""

    async def go() -> Any:
        async with FleetClient.open(broker_settings(p)) as client:
            return await load(client, p["campaign_id"])

    found = asyncio.run(go())
    if found is None:
        fail("BAD_INPUT", f"no campaign {p['campaign_id']!r} on the broker")
    click.echo(json.dumps(summary(found), indent=1))


def _request(action: str) -> Any:
    @_common
    @guarded
    def command(**p: Any) -> None:
        operator = load_key_file(p["operator_key"]) if p["operator_key"] else default_operator()

        async def go() -> None:
            async with FleetClient.open(broker_settings(p), operator) as client:
                if await load(client, p["campaign_id"]) is None:
                    raise AllworxError(f"no campaign {p['campaign_id']!r} on the broker")
                payload = sign_control(operator, p["campaign_id"], action)
                await client.link.publish(control_topic(p["campaign_id"]), payload, qos=1, retain=True)

        asyncio.run(go())
        requested = {"campaign_id": p["campaign_id"], "action": action, "key_id": operator.key_id,
                     "wall": datetime.now(UTC).isoformat()}  # fmt: skip
        if p["as_json"]:
            click.echo(json.dumps(requested))
            return
        click.echo(
            f"{action} requested for campaign {p['campaign_id']} by {operator.key_id} at {requested['wall']}"
        )

    command.__doc__ = f"Ask the controller of a campaign on the broker to {action}."
    return command


for _action in ("pause", "resume", "abort"):
    campaign.command(_action)(_request(_action))


@click.command("watch")
@connection_options
@click.option("--duration", type=positive(), default=None, help="Stop after this many seconds.")
@click.option("--until-done", default=None, callback=topic_level, help="Stop when this campaign has ended.")
@click.option("--plain", is_flag=True, help="Plain progress lines even on a terminal.")
@click.option(
    "--select",
    "select",
    multiple=True,
    help="Only servers whose retained state matches (repeatable, ANDed; as campaign start --select).",
)
def watch_command(
    duration: float | None, until_done: str | None, plain: bool, select: tuple[str, ...], **params: Any
) -> None:
    """A live view of the fleet from the retained topics (any broker the agents use, TLS and
    credentials as every command takes them)."""
    from fleet.watch import watch

    settings = broker_settings(params)
    try:
        asyncio.run(
            watch(
                settings,
                duration=duration,
                until_done=until_done,
                live=False if plain else None,
                selection=parse_selection(select),
            )
        )
    except KeyboardInterrupt:
        return
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))
