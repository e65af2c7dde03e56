"""``allworx-fleet campaign log|report|list``: reading campaigns from their retained topics.

Each reads the broker only (``allworx/campaigns/...``, docs/mqtt.md) and changes nothing, so it
works for any campaign, running or ended, whoever started it. Exit codes: 0 done; 1 error (no
such campaign, a retained document that does not validate, broker unreachable).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from agent.cliutil import fail, guarded
from fleet.campaign.controller import CAMPAIGNS, load, load_documents, read_retained
from fleet.client import FleetClient
from fleet.options import broker_options, broker_settings, topic_level
from fleet.report import build_report, write_report


def _id_argument(func: Any) -> Any:
    return click.argument("campaign_id", callback=topic_level)(func)


@click.command("log")
@_id_argument
@broker_options
@guarded
def log_command(campaign_id: str, **p: Any) -> None:
    """Print a campaign's log: its events and every operator request (who, when), in order."""

    async def go() -> dict[str, Any]:
        async with FleetClient.open(broker_settings(p)) as client:
            return await load_documents(client, campaign_id)

    found = asyncio.run(go())
    if "status" not in found and "log" not in found:
        fail("BAD_INPUT", f"no campaign {campaign_id!r} on the broker")
    entries = list(found.get("log") or [])
    if p["as_json"]:
        click.echo(json.dumps({"campaign_id": campaign_id, "log": entries}, indent=1))
        return
    for entry in entries:
        click.echo(log_line(entry))


def log_line(entry: dict[str, Any]) -> str:
    """One log entry as a line: campaign clock, wall clock, event, operator, details."""
    known = ("t", "event", "wall", "key_id", "action", "nonce")
    rest = " ".join(f"{k}={v}" for k, v in entry.items() if k not in known)
    who = f" by {entry['key_id']}" if entry.get("key_id") else ""
    action = f" {entry['action']}" if entry.get("action") else ""
    when = f"{float(entry.get('t', 0)):>10.1f} s  {entry.get('wall') or '-':<32}"
    return f"{when} {entry.get('event')}{action}{who} {rest}".rstrip()


@click.command("report")
@_id_argument
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.json and report.html.")  # fmt: skip
@broker_options
@guarded
def report_command(campaign_id: str, out: Path, **p: Any) -> None:
    """Write a campaign's report (JSON and a self-contained HTML page) from its retained topics."""

    async def go() -> Any:
        async with FleetClient.open(broker_settings(p)) as client:
            return await load(client, campaign_id)

    campaign = asyncio.run(go())
    if campaign is None:
        fail("BAD_INPUT", f"no campaign {campaign_id!r} on the broker")
    report = build_report(campaign)
    json_path, html_path = write_report(report, out)
    if p["as_json"]:
        click.echo(json.dumps({"json": str(json_path), "html": str(html_path)}))
        return
    click.echo(f"campaign {campaign_id} ({report['status']}): wrote {json_path} and {html_path}")


@click.command("list")
@broker_options
@guarded
def list_command(**p: Any) -> None:
    """List the campaigns on the broker: state, target, counts and creation time (their summaries)."""

    async def go() -> dict[str, bytes]:
        async with FleetClient.open(broker_settings(p)) as client:
            return await read_retained(client, f"{CAMPAIGNS}/+/status")

    rows: list[dict[str, Any]] = []
    for topic, payload in sorted(asyncio.run(go()).items()):
        try:
            document = json.loads(payload)
            rows.append({"campaign_id": topic.split("/")[2], **dict(document)})
        except (ValueError, TypeError, RecursionError):
            click.echo(f"INVALID    {topic}: not a campaign summary", err=True)
    if p["as_json"]:
        click.echo(json.dumps({"campaigns": rows}, indent=1))
        return
    for row in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted((row.get("counts") or {}).items()))
        chosen = row.get("selection")  # what the broker holds: shown only when it is a list of text
        selected = (
            " ".join(f"--select {e}" for e in chosen if isinstance(e, str))
            if isinstance(chosen, list)
            else ""
        )
        click.echo(
            f"{row['campaign_id']:<20} {row.get('status')!s:<10} target {row.get('target')!s:<7} "
            f"created {row.get('created')}  {counts}{'  ' + selected if selected else ''}"
        )


COMMANDS = (log_command, report_command, list_command)
