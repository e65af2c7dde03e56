"""``allworx-fleet watch``: a live view of a fleet from the retained topics only.

It reads every server's retained ``state`` and ``availability`` and the campaigns' retained
``status``, so it works against any broker the agents use, started at any moment (the retained
messages bring it up to date at once). With a selection (``--select``) it shows only the servers
whose retained state matches. On a terminal it draws a rich ``Live`` table; otherwise it
prints one plain progress line at most every ``interval`` seconds (CI logs stay readable).

Invariant: the view only reads; it keeps up with the broker by doing no more per message than
parsing it and updating a dict (rendering happens on a timer), so a large fleet never makes the
broker queue for it. Servers' messages are parsed with the contract's models; one that does not fit
them is ignored. Campaign documents are kept as JSON (the campaign controller's format).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from agent.mqtt.connection import BrokerSettings, Inbound
from agent.mqtt.messages import StateDocument
from fleet.client import FleetClient, Invalid, check_availability, check_state
from fleet.select import Selection

OUTCOME_ORDER = (
    "succeeded",
    "rejected",
    "failed",
    "current",
    "offline",
    "cancelled",
    "running",
    "staged",
    "staging",
    "pending",
)


@dataclass(frozen=True, slots=True)
class FleetFacts:
    """Counts by state and release, refusals by reason, servers offline."""

    servers: int
    offline: int
    states: Counter[str]
    releases: Counter[str]
    refusals: Counter[str]  # "REASON (RULE)" of the last results rejected or failed


class FleetSnapshot:
    """What the retained topics say right now."""

    def __init__(self, selection: Selection | None = None) -> None:
        self.selection = selection or Selection()  # the servers shown (default: all)
        self.states: dict[str, StateDocument] = {}
        self.online: dict[str, bool] = {}
        self.campaigns: dict[str, Mapping[str, Any]] = {}  # the JSON edge: the controller's documents
        self.invalid: dict[str, str] = {}  # topic -> why its retained document was skipped

    def absorb(self, message: Inbound) -> None:
        """Apply one retained message; one that does not validate is counted in ``invalid`` instead."""
        parts = message.topic.split("/")
        if len(parts) != 4 or parts[0] != "allworx":
            return
        if parts[1] == "campaigns":
            if parts[3] == "status" and message.payload:
                self._campaign(message)
            return
        checked: StateDocument | bool | Invalid | None = None
        if parts[3] == "state" and message.payload:
            checked = check_state(message.topic, message.payload)
        elif parts[3] == "availability":
            checked = check_availability(message.topic, message.payload)
        if isinstance(checked, Invalid):
            self.invalid[message.topic] = checked.reason
        elif isinstance(checked, bool):
            self.online[parts[2]] = checked
        elif checked is not None:
            self.invalid.pop(message.topic, None)
            if self.selection.matches(checked):
                self.states[parts[2]] = checked
            else:  # not (or no longer) selected
                self.states.pop(parts[2], None)

    def _campaign(self, message: Inbound) -> None:
        try:
            document = json.loads(message.payload)
            campaign_line(document)  # what the view reads of it
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
            self.invalid[message.topic] = "not a campaign state"
            return
        self.campaigns[message.topic.split("/")[2]] = document

    def facts(self) -> FleetFacts:
        """Counts by state and release, refusals by reason, servers offline."""
        refusals: Counter[str] = Counter()
        for doc in self.states.values():
            last = doc.last_result
            if last is not None and last.outcome in ("rejected", "failed") and last.reason:
                refusals[f"{last.reason} ({last.rule})"] += 1
        return FleetFacts(
            servers=len(self.states),
            offline=sum(1 for s in self.states if not self.online.get(s, False)),
            states=Counter(d.state for d in self.states.values()),
            releases=Counter(d.release for d in self.states.values()),
            refusals=refusals,
        )


def campaign_line(doc: Mapping[str, Any]) -> str:
    """One line about a campaign's retained summary: status, phase, counts."""
    counts = doc.get("counts") or {}
    parts = [f"{k} {counts[k]}" for k in OUTCOME_ORDER if counts.get(k)]
    phase = f"phase {int(doc.get('phase', 0)) + 1}/{int(doc.get('phases') or 0)}"
    paused = f" ({doc['paused_reason']})" if doc.get("paused_reason") else ""
    return f"campaign {doc.get('campaign_id')}: {doc.get('status')}{paused}, {phase}: " + ", ".join(parts)


def plain_line(snapshot: FleetSnapshot) -> str:
    """The non-terminal progress line."""
    facts = snapshot.facts()
    busy = sum(n for s, n in facts.states.items() if s != "idle")
    releases = " ".join(f"{r}:{n}" for r, n in sorted(facts.releases.items(), key=lambda kv: _vkey(kv[0])))
    clock = time.strftime("%H:%M:%S")
    head = f"[{clock}] servers {facts.servers} upgrading {busy} offline {facts.offline}"
    head += f" invalid {len(snapshot.invalid)}" if snapshot.invalid else ""
    lines = [f"{head} | releases {releases}"]
    lines += [campaign_line(doc) for doc in snapshot.campaigns.values()]
    return "\n".join(lines)


def _vkey(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def render(snapshot: FleetSnapshot) -> Group:
    """The rich view: campaigns, states, releases, refusals."""
    facts = snapshot.facts()
    title = f"{facts.servers} servers, {facts.offline} offline"
    title += f", {len(snapshot.invalid)} invalid retained documents skipped" if snapshot.invalid else ""
    states = Table(title="by state", show_edge=False)
    states.add_column("state")
    states.add_column("servers", justify="right")
    for name, count in facts.states.most_common():
        states.add_row(name, str(count))
    releases = Table(title="by release", show_edge=False)
    releases.add_column("release")
    releases.add_column("servers", justify="right")
    for name, count in sorted(facts.releases.items(), key=lambda kv: _vkey(kv[0])):
        releases.add_row(name, str(count))
    refusals = Table(title="refusals and failures by reason", show_edge=False)
    refusals.add_column("reason (rule)")
    refusals.add_column("servers", justify="right")
    for name, count in facts.refusals.most_common(8):
        refusals.add_row(name, str(count))
    grid = Table.grid(padding=(0, 4))
    grid.add_row(states, releases, refusals)
    campaigns = [_campaign_table(doc) for doc in snapshot.campaigns.values()]
    return Group(f"[bold]{title}[/bold]", *campaigns, grid)


def _campaign_table(doc: Mapping[str, Any]) -> Table:
    counts = doc.get("counts") or {}
    total = sum(counts.values()) or 1
    done = sum(counts.get(k, 0) for k in OUTCOME_ORDER[:6])
    width = 40
    bar = "#" * (width * done // total) + "." * (width - width * done // total)
    table = Table.grid(padding=(0, 1))
    table.add_row(campaign_line(doc))
    table.add_row(f"[{bar}] {done}/{total} finished")
    return table


class Display:
    """A live display (rich on a terminal, plain lines elsewhere) of a :class:`FleetSnapshot`."""

    def __init__(
        self,
        snapshot: FleetSnapshot,
        *,
        live: bool | None = None,
        interval: float = 2.0,
        stream: TextIO | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self._last = 0.0
        self._live: Live | None = None

    def __enter__(self) -> Display:
        if self.live:
            self._live = Live(render(self.snapshot), console=Console(file=self.stream), refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.refresh(force=True)
        if self._live is not None:
            self._live.stop()
            self._live = None

    def refresh(self, force: bool = False) -> None:
        """Redraw (live), or print a plain line when ``interval`` passed."""
        if self._live is not None:
            self._live.update(render(self.snapshot))
            return
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            print(plain_line(self.snapshot), file=self.stream, flush=True)


async def watch(
    settings: BrokerSettings,
    *,
    duration: float | None = None,
    until_done: str | None = None,
    live: bool | None = None,
    interval: float = 2.0,
    selection: Selection | None = None,
) -> FleetSnapshot:
    """Watch until cancelled, ``duration`` seconds, or campaign ``until_done`` has finished.

    Raises:
        BrokerError: the broker is unreachable or the connection dropped.
    """
    snapshot = FleetSnapshot(selection)
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    async with FleetClient.open(settings) as client:
        with client.watch(lambda m: m.topic.startswith("allworx/")) as queue:
            for topic in ("allworx/+/+/state", "allworx/+/+/availability", "allworx/campaigns/+/status"):
                await client.link.subscribe(topic, qos=1)
            with Display(snapshot, live=live, interval=interval) as display:
                while deadline is None or loop.time() < deadline:
                    try:
                        async with asyncio.timeout(0.25):
                            snapshot.absorb(await queue.get())
                        while not queue.empty():
                            snapshot.absorb(queue.get_nowait())
                    except TimeoutError:
                        pass
                    display.refresh()
                    doc = snapshot.campaigns.get(until_done or "")
                    if doc is not None and doc.get("status") in ("completed", "cancelled"):
                        break
    return snapshot
