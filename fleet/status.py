"""``allworx-fleet status``: every server's retained state and availability, as a table or JSON.

Availability is read from the retained ``availability`` topics beside the states; "since" is when
this run first saw a server's availability (the broker keeps no time with a retained message).
Invariants: a server without an ``online`` availability is shown offline, whatever its state says
(a retained ``idle`` from a server that is gone is not "idle and fine"); an availability or state
that does not validate is listed as invalid, never read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.mqtt.connection import Inbound
from agent.mqtt.messages import StateDocument
from fleet.client import FleetClient, Invalid, check_availability, server_topic
from fleet.select import Selection, key_state

COLUMNS = ("serial", "site", "model", "release", "availability", "maintenance key", "last result", "job")


@dataclass(frozen=True, slots=True)
class Seen:
    """A server's availability as this run read it: online or not, and when it was first seen."""

    online: bool
    since: datetime


@dataclass(slots=True)
class FleetStatus:
    """The servers' validated states, their availability, and the retained documents skipped."""

    states: list[StateDocument]
    availability: dict[str, Seen] = field(default_factory=dict)  # serial -> as first seen
    invalid: list[Invalid] = field(default_factory=list)

    def online(self, serial: str) -> bool:
        """Whether the server's retained availability says online (unknown: offline)."""
        seen = self.availability.get(serial)
        return seen is not None and seen.online


async def collect(client: FleetClient, site: str | None, selection: Selection) -> FleetStatus:
    """Read every server's retained state and availability (of one site, or all) that ``selection`` keeps.

    Raises:
        BrokerError: the connection failed.
    """
    seen: dict[str, Seen] = {}
    invalid: dict[str, Invalid] = {}

    def take(message: Inbound) -> None:
        where = server_topic(message.topic)
        if where is None:
            return
        checked = check_availability(message.topic, message.payload)
        if isinstance(checked, Invalid):
            invalid[message.topic] = checked
        elif where[1] not in seen or seen[where[1]].online != checked:
            seen[where[1]] = Seen(checked, datetime.now(UTC))

    topic = f"allworx/{site or '+'}/+/availability"
    with client.watch(lambda m: (server_topic(m.topic) or ("", "", ""))[2] == "availability") as queue:
        await client.link.subscribe(topic, qos=1)
        found = await client.read_states(site)
        await asyncio.sleep(0)
        while not queue.empty():
            take(queue.get_nowait())
    states = selection.filter(found.valid)
    serials = {doc.serial for doc in states}
    return FleetStatus(
        states=states,
        availability={s: v for s, v in seen.items() if s in serials},
        invalid=[*found.invalid, *(invalid[t] for t in sorted(invalid))],
    )


def _when(moment: Any) -> str:
    """A key's expiry: its date (or instant) as ISO text."""
    return moment.isoformat() if moment is not None else "?"


def key_cell(doc: StateDocument) -> Text:
    """``valid until DATE``, ``expired DATE`` (red) or ``none``."""
    key, verdict = doc.maintenance_key, key_state(doc)
    if key is None or verdict == "none":
        return Text("none")
    if verdict == "valid":
        return Text(f"valid until {_when(key.expires)}" if key.expires is not None else "valid")
    return Text(f"expired {_when(key.expires)}", style="red")


def last_cell(doc: StateDocument) -> str:
    """The last result's outcome and, when it was not a success, its reason and rule."""
    last = doc.last_result
    if last is None:
        return "-"
    if last.reason:
        return f"{last.outcome}: {last.reason} ({last.rule})"
    return last.outcome


def availability_cell(status: FleetStatus, serial: str) -> Text:
    """``online since HH:MM:SS``, ``offline since ...`` (red), or the bare word when never seen."""
    seen = status.availability.get(serial)
    word = "online" if status.online(serial) else "offline"
    style = "" if word == "online" else "red"
    if seen is None:
        return Text(word, style=style)
    return Text(f"{word} since {seen.since.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z", style=style)


def job_cell(status: FleetStatus, doc: StateDocument) -> Text:
    """The state's ``state`` when not idle; ``offline`` for a server that is not online."""
    busy = doc.state if doc.state != "idle" else ""
    if not status.online(doc.serial):
        return Text(f"offline ({busy} when last seen)" if busy else "offline", style="red")
    return Text(busy)


def table(status: FleetStatus) -> Table:
    """The terminal table, one row a server."""
    grid = Table(show_edge=False)
    for name in COLUMNS:
        grid.add_column(name, overflow="fold")
    for doc in status.states:
        grid.add_row(
            doc.serial,
            doc.site,
            doc.model,
            doc.release,
            availability_cell(status, doc.serial),
            key_cell(doc),
            last_cell(doc),
            job_cell(status, doc),
        )
    return grid


def print_table(status: FleetStatus, console: Console | None = None) -> None:
    """Print the invalid documents, then the table (to ``console`` if given, else to stdout: colours
    only on a terminal, and at least 200 columns wide when not)."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 200), color_system=None)
    for entry in status.invalid:
        console.print(Text(f"INVALID    {entry.topic}: {entry.reason}"))
    console.print(table(status))


def as_json(status: FleetStatus) -> dict[str, Any]:
    """``{"servers": [...], "invalid": [...]}``: each server's state with ``availability``,
    ``availability_since``, ``key`` (valid/expired/none) beside its fields."""
    servers = []
    for doc in status.states:
        seen = status.availability.get(doc.serial)
        servers.append(
            {
                **doc.wire(),
                "availability": "online" if status.online(doc.serial) else "offline",
                "availability_since": seen.since.isoformat() if seen else None,
                "key": key_state(doc),
            }
        )
    return {"servers": servers, "invalid": [entry.as_dict() for entry in status.invalid]}
