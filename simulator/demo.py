"""The main job's demo: a simulated fleet upgraded by one campaign, watched live, then reported.

Zero set-up: it builds (or reuses) about 200 virtual servers across four sites (legacy and Connect
models, releases 7.0 to 8.3, some without a valid maintenance key, one multi-site network, a few
with corrupted images and a few powered off), starts an embedded MQTT broker and one agent per
server, and runs one campaign to the newest release each server can reach: a canary, then
batches, in a maintenance window with staging before it, under an abort rule. It shows a live
display (plain lines when not on a terminal), prints a summary in which every server is counted
once, and writes the report (JSON and HTML).

Without a working folder of its own (``--dir``) it works in a temporary folder and removes it at
the end, however the run ends (Ctrl-C and SIGTERM included), unless asked to keep it; the report
then goes to a fresh ``allworx-demo-report-*`` temporary folder, printed at the end.

The campaign names the demo's own servers as its members: on a shared broker (``--broker``) no
other server is planned, commanded or counted.

Exit code: 0 when the campaign completed and every server is accounted for, 1 otherwise (143
after SIGTERM, see :func:`simulator.fleet.host.sigterm_unwinds`).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from agent.mqtt.messages import StateDocument
from fleet.campaign.controller import Controller
from fleet.campaign.documents import SummaryDocument
from fleet.campaign.model import Campaign
from fleet.campaign.setup import dry_run
from fleet.campaign.spec import AbortRule, CampaignSpec, Window
from fleet.client import FleetClient
from fleet.operator import default_operator
from fleet.report import build_report, write_report
from fleet.watch import Display, FleetSnapshot
from simulator.fleet.build import Fleet, build_fleet, in_use
from simulator.fleet.host import quiet_logs
from simulator.fleet.run import Simulation, fleet_start, simulate
from simulator.fleet.spec import FleetSpec, networks

CAMPAIGN_ID = "demo"


def demo_campaign(fleet: Fleet) -> CampaignSpec:
    """The demo's campaign: canary 10, then quarters; a window opening 20 simulated minutes in."""
    start = fleet_start(fleet)
    return CampaignSpec(
        campaign_id=CAMPAIGN_ID,
        target="newest",
        canary=max(1, min(10, len(fleet.plans) // 10)),
        batch="25%",
        rate_per_minute=120.0,
        max_in_flight=100,
        abort=AbortRule(threshold=0.5, min_finished=5),
        window=Window(start + timedelta(minutes=20), start + timedelta(hours=24)),
        stage_early=True,
        networks=networks(fleet.plans),
        members=tuple(plan.serial for plan in fleet.plans),  # never another server on a shared broker
    )


def run_demo(
    workdir: Path | None,
    *,
    servers: int = 200,
    speed: float = 600.0,
    broker: str | None = None,
    report_dir: Path | None = None,
    workers: int = 1,
    live: bool | None = None,
    keep: bool = False,
) -> int:
    """Run the demo in ``workdir`` (or a temporary folder) and return the exit code.

    A temporary working folder is removed on the way out, however the run ends, unless ``keep``;
    its report is then written to a fresh ``allworx-demo-report-*`` temporary folder.
    """
    base = workdir or Path(tempfile.mkdtemp(prefix="allworx-demo-"))
    remove = workdir is None and not keep
    try:
        return _demo(
            base,
            servers=servers,
            speed=speed,
            broker=broker,
            report_dir=report_dir or (None if remove else base / "report"),
            workers=workers,
            live=live,
        )
    finally:
        if remove:
            shutil.rmtree(base, ignore_errors=True)
            click.echo(f"Removed the working folder {base} (--keep keeps it).")
        elif workdir is None:
            click.echo(f"Kept the working folder {base}.")


def _demo(
    base: Path,
    *,
    servers: int,
    speed: float,
    broker: str | None,
    report_dir: Path | None,
    workers: int,
    live: bool | None,
) -> int:
    """Build the fleet in ``base``, run the campaign, report in ``report_dir`` (None: a new temporary one)."""
    say = click.echo
    began = time.monotonic()
    quiet_logs()
    say(f"Building {servers} virtual servers in {base / 'fleet'} ...")
    with in_use(base / "fleet"):
        fleet = build_fleet(base / "fleet", FleetSpec(servers=servers), workers=2)
        say(f"  {fleet.built} built, {servers - fleet.built} reused ({time.monotonic() - began:.1f} s)")
        campaign = asyncio.run(_run(fleet, broker=broker, speed=speed, workers=workers, live=live))
    if campaign is None:
        say("error: TIMEOUT: the fleet's agents did not all report their state in time", err=True)
        return 1
    report = build_report(campaign)
    folder = report_dir or Path(tempfile.mkdtemp(prefix="allworx-demo-report-"))
    json_path, html_path = write_report(report, folder)
    _summary(report, say)
    say(f"Report: {html_path}\n        {json_path}")
    say(f"Done in {time.monotonic() - began:.1f} s.")
    return 0 if report["accounted"] and campaign.status == "completed" else 1


async def _run(
    fleet: Fleet, *, broker: str | None, speed: float, workers: int, live: bool | None
) -> Campaign | None:
    say = click.echo
    spec = demo_campaign(fleet)
    # the simulation's fast disk and verifier (docs/power-cuts.md): the demo shows a campaign, not durability
    async with simulate(fleet, broker=broker, speed=speed, workers=workers) as sim:
        say(
            f"Broker {sim.settings.url}; {sim.running} agents starting, "
            f"{len(fleet.plans) - sim.running} servers powered off; simulated clock x{speed:g}"
        )
        async with FleetClient.open(sim.settings, default_operator(), protocol=sim.protocol) as client:
            controller = Controller(client, sim.clock(), scope=set(spec.members))
            async with controller.listening(CAMPAIGN_ID):
                await controller.settle(expected=len(fleet.plans), quiet=5.0, limit=90.0)
                if len(controller.states) < sim.running:
                    return None
                campaign = await controller.prepare(spec)
                _predicted(campaign, say)
                return await _watched(controller, campaign, sim, live)


async def _watched(
    controller: Controller, campaign: Campaign, sim: Simulation, live: bool | None
) -> Campaign:
    snapshot = FleetSnapshot()
    snapshot.online = controller.online
    seen: dict[str, object] = {}

    def changed(current: Campaign) -> None:
        snapshot.campaigns[CAMPAIGN_ID] = _light(current)
        _sync_states(snapshot, controller.states, seen)

    changed(campaign)
    controller.on_change = changed
    with Display(snapshot, live=live, interval=2.0) as display:
        runner = asyncio.create_task(controller.run(campaign))
        while not runner.done():
            _sync_states(snapshot, controller.states, seen)
            display.refresh()
            await asyncio.wait({runner}, timeout=0.25)
        changed(campaign)
    return runner.result()


def _sync_states(
    snapshot: FleetSnapshot, states: Mapping[str, StateDocument], seen: dict[str, object]
) -> None:
    """Take the states the controller received (validated) that changed since the last call."""
    for serial, document in states.items():
        if seen.get(serial) is not document:
            seen[serial] = document
            snapshot.states[serial] = document


def _light(campaign: Campaign) -> SummaryDocument:
    return campaign.summary_dict(campaign.created)


def _predicted(campaign: Campaign, say: Any) -> None:
    rows = dry_run(campaign)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    say(
        f"Dry run ({len(rows)} servers, {len(campaign.phases)} phases): "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )


def _summary(report: dict[str, Any], say: Any) -> None:
    outcomes = report["outcomes"]
    say(f"Campaign {report['campaign_id']} {report['status']}: {report['servers']} servers")
    for name, count in outcomes.items():
        say(f"  {name:<10} {count:>5}")
    say(f"  {'total':<10} {sum(outcomes.values()):>5}  (every server counted once: {report['accounted']})")
    if report["refusals"]:
        say("Refusals and failures by reason:")
        for entry in report["refusals"]:
            say(f"  {entry['count']:>5}  {entry['reason']} ({entry['rule']}, {entry['outcome']})")
    for network, serials in report["needing_keys"].items():
        if serials:
            say(f"Network {network} (SITE-1): members needing a maintenance key: {', '.join(serials)}")
    before = " ".join(f"{k}:{v}" for k, v in report["releases_before"].items())
    after = " ".join(f"{k}:{v}" for k, v in report["releases_after"].items())
    say(f"Releases before: {before}\nReleases after:  {after}")
