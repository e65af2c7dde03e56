"""The campaign report: one JSON document for machines, one self-contained HTML page for people.

Built from the campaign state alone (:meth:`fleet.campaign.model.Campaign.to_dict`), so a report
can be made at any time from the retained ``allworx/campaigns/{id}/status``.

Invariant: every server appears exactly once, with one outcome; ``outcomes`` sums to ``servers``
(``accounted`` says so, and the HTML page shows it).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from fleet.campaign.machine import OUTCOMES
from fleet.campaign.model import Campaign, Member

BUCKETS = 60  # columns of the timeline chart


def release_order(release: str) -> tuple[tuple[int, ...], str]:
    """A sort key of a release name as a server reported it: its ASCII-digit parts as numbers, then
    the name (a spoofed name such as ``7.²`` or ``7.x`` sorts beside the rest, never raises)."""
    return tuple(int(p) for p in release.split(".") if p.isascii() and p.isdigit()), release


def _by_release(values: list[str]) -> dict[str, int]:
    counts = Counter(values)
    return {r: counts[r] for r in sorted(counts, key=release_order)}


def timeline(campaign: Campaign) -> dict[str, Any]:
    """Step commits over campaign time, per phase, in :data:`BUCKETS` equal buckets."""
    steps = [(t, m.phase) for m in campaign.members.values() for t, _ in m.steps]
    ends = [t for t, _ in steps] + [m.finished or 0.0 for m in campaign.members.values()]
    span = max([*ends, 1.0])
    width = span / BUCKETS
    series = {str(p): [0] * BUCKETS for p in range(len(campaign.phases))}
    for t, phase in steps:
        series[str(phase)][min(BUCKETS - 1, int(t / width))] += 1
    return {"bucket_seconds": width, "span_seconds": span, "steps_by_phase": series, "events": campaign.log}


def build_report(campaign: Campaign) -> dict[str, Any]:
    """The JSON report of a campaign."""
    members = list(campaign.members.values())
    by_status = Counter(m.status for m in members)
    outcomes = {k.value: by_status[k] for k in OUTCOMES}
    for status in sorted(set(by_status) - set(OUTCOMES)):  # servers still under way
        outcomes[status.value] = by_status[status]
    phases = [
        {
            "phase": i + 1,
            "servers": len(serials),
            "outcomes": dict(Counter(campaign.members[s].status.value for s in serials)),
        }
        for i, serials in enumerate(campaign.phases)
    ]
    return {
        "schema": 1,
        "campaign_id": campaign.spec.campaign_id,
        "status": campaign.status.value,
        "spec": campaign.spec.to_dict(),
        "created": campaign.created.isoformat(),
        "servers": len(members),
        "outcomes": outcomes,
        "accounted": sum(outcomes.values()) == len(members),
        "refusals": [{"reason": k, **v} for k, v in campaign.refusals().items()],
        "needing_keys": campaign.needing_keys,
        "releases_before": _by_release([m.release for m in members]),
        "releases_after": _by_release([m.current or m.release for m in members]),
        "phases": phases,
        "timeline": timeline(campaign),
        "per_server": [_server(m) for m in members],
    }


def _server(member: Member) -> dict[str, Any]:
    prediction = member.prediction
    return {
        "serial": member.serial,
        "site": member.site,
        "model": member.model,
        "phase": member.phase + 1,
        "from": member.release,
        "target": member.target,
        "final": member.current or member.release,
        "outcome": member.status.value,
        "reason": member.reason,
        "rule": member.rule,
        "message": member.message,
        "predicted": prediction.outcome if prediction else "offline",
        "steps": len(member.steps),
        "started": member.started,
        "finished": member.finished,
    }


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``folder``; return both paths."""
    from fleet.report.html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    html_path.write_text(render_html(report))
    return json_path, html_path
