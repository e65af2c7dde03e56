"""The report's HTML page: self-contained (inline CSS and SVG, no script, no CDN).

Invariant: every value taken from the report is HTML-escaped (serials, reasons and messages come
from the servers).
"""

from __future__ import annotations

from html import escape
from typing import Any

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d")
OUTCOME_COLOURS = {
    "succeeded": "#54a24b",
    "rejected": "#f58518",
    "failed": "#e45756",
    "current": "#4c78a8",
    "offline": "#9d755d",
    "cancelled": "#bab0ac",
}
STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#f3f3f3}
.num{text-align:right}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}.ok{color:#2a7}.bad{color:#c33}"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=num>{v}</td>" if isinstance(v, int | float) else f"<td>{escape(str(v or ''))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def timeline_svg(timeline: dict[str, Any], width: int = 900, height: int = 260) -> str:
    """A stacked column chart of step commits over campaign time, one colour per phase."""
    series: dict[str, list[int]] = timeline["steps_by_phase"]
    buckets = max((len(v) for v in series.values()), default=1)
    totals = [sum(v[i] for v in series.values()) for i in range(buckets)]
    peak = max([*totals, 1])
    left, bottom, plot_w, plot_h = 50, 30, width - 70, height - 60
    col = plot_w / buckets
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="steps over time by phase">'
    ]
    for i in range(buckets):
        y = float(height - bottom)
        for p, values in sorted(series.items(), key=lambda kv: int(kv[0])):
            h = plot_h * values[i] / peak
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{left + i * col:.1f}" y="{y:.1f}" width="{max(col - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="{PALETTE[int(p) % len(PALETTE)]}">'
                    f"<title>phase {int(p) + 1}: {values[i]} steps</title></rect>"
                )
    span = float(timeline.get("span_seconds", 1.0)) or 1.0
    for event in timeline.get("events", []):
        if event.get("event") in (
            "phase_started",
            "paused",
            "resumed",
            "abort_rule",
            "window_opened",
            "cancelled",
        ):
            x = left + plot_w * float(event["t"]) / span
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="10" y2="{height - bottom}" stroke="#888" '
                f'stroke-dasharray="3,3"><title>{escape(str(event["event"]))} at '
                f"{float(event['t']):.0f} s</title></line>"
            )
    axis_y = height - bottom
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="11">0</text>')
    parts.append(
        f'<text x="{left + plot_w - 120}" y="{height - 8}" font-size="11">'
        f"{span / 60:.0f} min (simulated)</text>"
    )
    parts.append(f'<text x="4" y="20" font-size="11">{peak}</text>')
    legend_x = left
    for p in sorted(series, key=int):
        parts.append(
            f'<rect x="{legend_x}" y="2" width="10" height="10" fill="{PALETTE[int(p) % len(PALETTE)]}"/>'
            f'<text x="{legend_x + 14}" y="11" font-size="11">phase {int(p) + 1}</text>'
        )
        legend_x += 70
    parts.append("</svg>")
    return "".join(parts)


def _releases(report: dict[str, Any]) -> str:
    before, after = report["releases_before"], report["releases_after"]
    names = sorted(set(before) | set(after), key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
    return _table(["release", "before", "after"], [[n, before.get(n, 0), after.get(n, 0)] for n in names])


def render_html(report: dict[str, Any]) -> str:
    """The whole page."""
    outcomes = report["outcomes"]
    accounted = report["accounted"]
    check = (
        f"<p class=ok>Every one of the {report['servers']} servers is accounted for exactly once.</p>"
        if accounted
        else "<p class=bad>The outcomes do not add up to the number of servers.</p>"
    )
    keys = [[net, ", ".join(serials) or "none"] for net, serials in report["needing_keys"].items()]
    servers = [
        [
            s["serial"],
            s["site"],
            s["model"],
            s["phase"],
            s["from"],
            s["target"],
            s["final"],
            s["outcome"],
            s["predicted"],
            s["reason"],
            s["rule"],
            s["message"],
        ]
        for s in report["per_server"]
    ]
    bar = "".join(
        f'<span style="display:inline-block;height:14px;width:{600 * n / max(report["servers"], 1):.1f}px;'
        f'background:{OUTCOME_COLOURS.get(k, "#ccc")}" title="{escape(k)} {n}"></span>'
        for k, n in outcomes.items()
        if n
    )
    return "".join(
        [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            f"<title>Campaign {escape(report['campaign_id'])}</title><style>{STYLE}</style></head><body>",
            f"<h1>Campaign {escape(report['campaign_id'])}: {escape(report['status'])}</h1>",
            f"<p>Target: {escape(str(report['spec']['target']))}; {report['servers']} servers in "
            f"{len(report['phases'])} phases; created {escape(report['created'])} (simulated clock).</p>",
            f"<div>{bar}</div>",
            check,
            _table(["outcome", "servers"], [[k, n] for k, n in outcomes.items()]),
            "<h2>Timeline: steps committed over time, by phase</h2>",
            timeline_svg(report["timeline"]),
            "<h2>Refusals and failures by reason and rule</h2>",
            _table(
                ["reason", "rule", "outcome", "servers"],
                [[r["reason"], r["rule"], r["outcome"], r["count"]] for r in report["refusals"]],
            ),
            "<h2>Multi-site networks (SITE-1): members needing a maintenance key</h2>",
            _table(["network", "members needing a key"], keys),
            "<h2>Release distribution, before and after</h2>",
            _releases(report),
            "<h2>Phases</h2>",
            _table(
                ["phase", "servers", "outcomes"],
                [
                    [p["phase"], p["servers"], ", ".join(f"{k} {v}" for k, v in p["outcomes"].items())]
                    for p in report["phases"]
                ],
            ),
            "<h2>Every server</h2>",
            _table(
                [
                    "serial",
                    "site",
                    "model",
                    "phase",
                    "from",
                    "target",
                    "final",
                    "outcome",
                    "predicted",
                    "reason",
                    "rule",
                    "message",
                ],
                servers,
            ),
            "</body></html>\n",
        ]
    )
