"""The single-server demo: the story of the core issue, told by running it.

A 6x on 7.0 shipped before the maintenance programme (so with no key) is asked for 8.0 on
2016-01-01: it rebuilds its database into 7.1 and stops there (SWM-1). A 1-year anytime licence
is bought; the same request then takes it one committed step at a time to 8.0.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import date
from pathlib import Path

import click

from agent import database
from agent.clock import SimClock, parse_now
from agent.progress import ProgressView
from agent.upgrader import Upgrader
from releases.catalog import default_catalog
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server


def run_demo(workdir: Path | None) -> int:
    """Run the demo in ``workdir`` (or a temporary folder) and return the exit code."""
    base = workdir or Path(tempfile.mkdtemp(prefix="allworx-demo-"))
    root = base / "hq-6x"
    say = click.echo
    say(f"Creating a virtual Allworx 6x on 7.0, shipped 2009-06-01, in {root}")
    server = create_server(root, ServerSpec(model="6x", release="7.0", shipped=date(2009, 6, 1), users=60))
    before = database.digest(server.db_path(server.active_slot()))
    clock = SimClock(parse_now("2016-01-01"), speed=float("inf"))
    catalog = default_catalog()

    async def upgrade() -> str:
        view = ProgressView(enabled=click.get_text_stream("stderr").isatty())
        with view:
            result = await Upgrader(server, catalog, clock, on_event=view.on_event).upgrade("8.0")
        for step in result.steps:
            extra = f"  {step.refusal.reason} ({step.refusal.rule})" if step.refusal else ""
            say(f"  {step.release:<5} {step.outcome}{extra}")
        return result.final_release

    say("Upgrading to 8.0 on 2016-01-01 with no maintenance key:")
    final = asyncio.run(upgrade())
    after = database.digest(server.db_path(server.active_slot()))
    intact = before.counts == after.counts and before.checksum == after.checksum
    say(f"  now on {final}; database schema {server.committed().db_schema}; every record intact: {intact}")
    say("Buying a 1-year anytime maintenance licence (SWM-5) and installing it:")
    key = issue_key(
        VendorKeyring.load_or_create(),
        serial=server.identity().serial,
        kind="maintenance",
        plan="anytime-1y",
        start=date(2016, 1, 1),
    )
    check = server.install_key(key, date(2016, 1, 1))
    say(f"  key {check.info.key_id if check.info else '?'}: {'valid' if check.valid else check.reason}")
    say("Upgrading to 8.0 again:")
    final = asyncio.run(upgrade())
    say(f"Done: the server runs {final}. Inspect it with: allworx-agent status --server-dir {root}")
    return 0 if final == "8.0" and intact else 1
