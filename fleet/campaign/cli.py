"""``allworx-fleet campaign start|status|pause|resume|abort`` and ``allworx-fleet watch``.

``start`` runs the controller in the foreground until the campaign ends (or, with ``--dry-run``,
prints the per-server prediction and changes nothing); kill it and run ``start --resume`` to
continue from the retained state. ``pause``/``resume``/``abort`` publish a signed, retained
request the controller applies (even one started later). Exit codes: 0 done; 1 error; 2 the
campaign ended cancelled, or some servers failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agent.cliutil import fail, guarded
from agent.clock import Clock, SimClock, SystemClock, parse_now
from common.errors import AllworxError
from fleet.campaign.controller import Controller, control_topic, load, sign_control, summary
from fleet.campaign.setup import dry_run
from fleet.campaign.spec import AbortRule, CampaignSpec, Window
from fleet.client import FleetClient
from fleet.operator import default_operator, load_key_file
from fleet.options import broker_options, broker_settings


def _clock(now: str | None, speed: float) -> Clock:
    return SystemClock() if now is None else SimClock(parse_now(now), speed)


def _spec(p: dict[str, Any]) -> CampaignSpec:
    abort = (
        AbortRule(p["abort_threshold"], p["abort_min"], p["abort_action"]) if p["abort_threshold"] else None
    )
    window = None
    if p["window_opens"]:
        window = Window(parse_now(p["window_opens"]), parse_now(p["window_closes"]))
    networks = {}
    if p["networks"]:
        networks = {k: tuple(v) for k, v in json.loads(Path(p["networks"]).read_text()).items()}
    members: tuple[str, ...] = ()
    if p["members"]:
        listed = json.loads(Path(p["members"]).read_text())
        if not isinstance(listed, list):
            raise ValueError(f"{p['members']}: a JSON list of serials is expected")
        members = tuple(str(serial) for serial in listed)
    return CampaignSpec(
        campaign_id=p["campaign_id"],
        target=p["target"],
        canary=p["canary"],
        batch=p["batch"],
        rate_per_minute=p["rate"],
        max_in_flight=p["max_in_flight"],
        abort=abort,
        window=window,
        gate_phases=p["gate"],
        networks=networks,
        members=members,
    )


@click.group()
def campaign() -> None:
    """Run and steer upgrade campaigns (state retained on the broker)."""


def _common(func: Any) -> Any:
    func = click.option("--id", "campaign_id", required=True, help="The campaign's id.")(func)
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
@click.option("--canary", type=int, default=0, help="Servers in the canary phase.")
@click.option("--batch", default="100%", help="Later phases: a count (25) or a share (20%).")
@click.option("--rate", type=float, default=None, help="Servers started per minute (campaign clock).")
@click.option("--max-in-flight", type=int, default=None, help="Servers upgrading at once.")
@click.option("--abort-threshold", type=float, default=None, help="Failure share that stops a phase.")
@click.option("--abort-min", type=int, default=1, help="Finished servers before the rule applies.")
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
@click.option("--now", default=None, help="Campaign clock start for a simulated fleet (default: real time).")
@click.option("--speed", type=float, default=1.0, help="Campaign clock speed with --now.")
@click.option("--servers", "expected", type=int, default=None, help="Wait until this many servers reported.")
@click.option(
    "--dry-run", is_flag=True, help="Print each server's predicted steps and outcome; change nothing."
)
@click.option("--resume", "resume_existing", is_flag=True, help="Continue the retained campaign of this id.")
@guarded
def start(**p: Any) -> None:
    """Start (or continue) a campaign and drive it to its end."""
    settings = broker_settings(p)
    operator = load_key_file(p["operator_key"]) if p["operator_key"] else default_operator()

    skipped: dict[str, str] = {}  # topic -> why its retained document was left out (and logged)

    async def go() -> Any:
        async with FleetClient.open(settings, operator) as client:
            controller = Controller(client, _clock(p["now"], p["speed"]))
            skipped.update(controller.invalid)
            controller.invalid = skipped
            existing = await load(client, p["campaign_id"]) if p["resume_existing"] else None
            async with controller.listening(p["campaign_id"]):
                await controller.settle(expected=p["expected"], quiet=2.0)
                current = existing or await controller.prepare(_spec(p))
                if p["dry_run"]:
                    return dry_run(current)
                return summary(await controller.run(current))

    try:
        result = asyncio.run(go())
    except (AllworxError, ValueError) as exc:
        fail(exc.reason.value if isinstance(exc, AllworxError) else "BAD_INPUT", str(exc))
    if p["dry_run"]:
        invalid = [{"topic": topic, "reason": why} for topic, why in sorted(skipped.items())]
        click.echo(
            json.dumps({"dry_run": result, "invalid": invalid}, indent=1)
            if p["as_json"]
            else "\n".join(
                f"{r['serial']:<14} {r['release']:>5} -> {r['final_release']:<5} {r['outcome']:<9} "
                f"{r.get('reason') or ''}"
                for r in result
            )
        )
        return
    click.echo(json.dumps(result, indent=1))
    counts = result["counts"]
    sys.exit(2 if result["status"] == "cancelled" or counts.get("failed") else 0)


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
                payload = sign_control(operator, p["campaign_id"], action)
                await client.link.publish(control_topic(p["campaign_id"]), payload, qos=1, retain=True)

        asyncio.run(go())
        click.echo(f"{action} requested for campaign {p['campaign_id']} at {datetime.now().isoformat()}")

    command.__doc__ = f"Ask the campaign's controller to {action}."
    return command


for _action in ("pause", "resume", "abort"):
    campaign.command(_action)(_request(_action))


@click.command("watch")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True, help="mqtt://host:port.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--until-done", default=None, help="Stop when this campaign has ended.")
@click.option("--plain", is_flag=True, help="Plain progress lines even on a terminal.")
def watch_command(broker: str, duration: float | None, until_done: str | None, plain: bool) -> None:
    """A live view of the fleet from the retained topics (any broker the agents use)."""
    from agent.mqtt.connection import BrokerSettings
    from fleet.watch import watch

    try:
        asyncio.run(
            watch(
                BrokerSettings(url=broker),
                duration=duration,
                until_done=until_done,
                live=False if plain else None,
            )
        )
    except KeyboardInterrupt:
        return
    except AllworxError as exc:
        fail(exc.reason.value, str(exc))
