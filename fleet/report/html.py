"""The report's HTML page: self-contained (inline CSS, SVG and a small script; no fetch, no CDN).

The per-server table sorts by a click on a column heading and filters by outcome, reason, site and
model; the timeline has labelled axes (campaign minutes, steps committed) and marks each failure
and refusal at its time.

Invariant: every value taken from the report is HTML-escaped (serials, reasons and messages come
from the servers); the script reads only the page itself.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fleet.report import release_order

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
.num{text-align:right}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}.ok{color:#2a7}.bad{color:#c33}
#servers th{cursor:pointer}.filters label{margin-right:1em}"""
FILTERS = ("outcome", "reason", "site", "model")  # the per-server table's filter columns
SERVER_COLUMNS = (
    "serial", "site", "model", "phase", "from", "target", "final", "outcome", "predicted", "reason", "rule",
    "message",
)  # fmt: skip
MARKED = {"failed": "#e45756", "rejected": "#f58518"}  # outcomes the timeline marks
SCRIPT = """(function(){
var table=document.getElementById('servers');if(!table)return;
var body=table.tBodies[0],selects=document.querySelectorAll('.filters select');
function apply(){var shown=0;Array.prototype.forEach.call(body.rows,function(row){
var ok=true;selects.forEach(function(s){if(s.value!=='*'&&row.dataset[s.name]!==s.value)ok=false;});
row.hidden=!ok;if(ok)shown++;});document.getElementById('shown').textContent=shown;}
selects.forEach(function(s){s.addEventListener('change',apply);});
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){
var up=th.dataset.dir!=='asc';th.dataset.dir=up?'asc':'desc';var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent;
var nx=parseFloat(x),ny=parseFloat(y);
var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return up?c:-c;});
rows.forEach(function(r){body.appendChild(r);});});});apply();})();"""


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


def _axes(peak: int, span: float, box: tuple[int, float, int, float]) -> str:
    """The labelled axes: campaign minutes along the bottom, steps committed up the side.

    ``box`` is (left, plot width, axis y, plot height).
    """
    left, plot_w, axis_y, plot_h = box
    height = axis_y + 70
    parts = [
        f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#333"/>',
        f'<line x1="{left}" x2="{left}" y1="{axis_y - plot_h}" y2="{axis_y}" stroke="#333"/>',
    ]
    for i in range(6):
        x = left + plot_w * i / 5
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="#333"/>'
            f'<text class=xtick x="{x:.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle">'
            f"{span * i / 5 / 60:.1f}</text>"
        )
    for value in sorted({0, peak // 2, peak}):
        y = axis_y - plot_h * value / max(peak, 1)
        parts.append(
            f'<text class=ytick x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end">{value}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="12" text-anchor="middle">'
        "campaign time (minutes, campaign clock)</text>"
        f'<text x="12" y="{axis_y - plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 12 {axis_y - plot_h / 2:.1f})">steps committed</text>'
    )
    return "".join(parts)


def _marks(servers: list[dict[str, Any]], span: float, left: int, plot_w: float, axis_y: int) -> str:
    """A triangle below the time axis for every failure and refusal, at its time."""
    parts = []
    for server in servers:
        colour = MARKED.get(str(server.get("outcome")))
        if colour is None or server.get("finished") is None:
            continue
        x = left + plot_w * min(float(server["finished"]), span) / span
        what = f"{server['outcome']} {server['serial']}: {server.get('reason') or ''}"
        parts.append(
            f'<path class="mark {escape(str(server["outcome"]))}" d="M{x:.1f},{axis_y + 20} l-4,8 h8 z" '
            f'fill="{colour}"><title>{escape(what)} at {float(server["finished"]) / 60:.1f} min'
            "</title></path>"
        )
    return "".join(parts)


def timeline_svg(
    timeline: dict[str, Any],
    width: int = 900,
    height: int = 300,
    servers: list[dict[str, Any]] | None = None,
) -> str:
    """A stacked column chart of step commits over campaign time, one colour per phase, with its
    failures and refusals (from ``servers``, the report's ``per_server``) marked below the axis."""
    series: dict[str, list[int]] = timeline["steps_by_phase"]
    buckets = max((len(v) for v in series.values()), default=1)
    totals = [sum(v[i] for v in series.values()) for i in range(buckets)]
    peak = max([*totals, 1])
    left, bottom, plot_w, plot_h = 60, 70, width - 80, height - 90
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
    parts.append(_axes(peak, span, (left, plot_w, height - bottom, plot_h)))
    parts.append(_marks(servers or [], span, left, plot_w, height - bottom))
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
    names = sorted(set(before) | set(after), key=release_order)
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
            timeline_svg(report["timeline"], servers=report["per_server"]),
            "<p>Triangles below the time axis: <span style=color:#e45756>failures</span> and "
            "<span style=color:#f58518>refusals</span>, at the time each server's outcome came.</p>",
            "<h2>Refusals and failures by reason and rule</h2>",
            _table(
                ["reason", "rule", "outcome", "servers"],
                [[r["reason"], r["rule"], r["outcome"], r["count"]] for r in report["refusals"]],
            ),
            "<h2>Multi-site networks (SITE-1): members needing a maintenance key</h2>",
            _table(["network", "members needing a key"], keys),
            "<h2>Release distribution, before and after</h2>",
            _releases(report),
            "<h2>Each phase's outcome</h2>",
            _table(
                ["phase", "servers", "outcomes"],
                [
                    [p["phase"], p["servers"], ", ".join(f"{k} {v}" for k, v in p["outcomes"].items())]
                    for p in report["phases"]
                ],
            ),
            "<h2>Every server</h2>",
            _server_table(report["per_server"]),
            f"<script>{SCRIPT}</script>",
            "</body></html>\n",
        ]
    )


def _server_table(servers: list[dict[str, Any]]) -> str:
    """The per-server table: filters (outcome, reason, site, model) above it, sortable headings."""
    filters = []
    for name in FILTERS:
        values = sorted({str(s.get(name) or "") for s in servers})
        options = "".join(f'<option value="{escape(v)}">{escape(v or "(none)")}</option>' for v in values)
        filters.append(
            f'<label>{name} <select name="{name}" id="filter-{name}">'
            f'<option value="*">all</option>{options}</select></label>'
        )
    head = "".join(f"<th>{escape(c)}</th>" for c in SERVER_COLUMNS)
    rows = []
    for server in servers:
        data = " ".join(f'data-{n}="{escape(str(server.get(n) or ""))}"' for n in FILTERS)
        cells = "".join(
            f"<td class=num>{v}</td>" if isinstance(v, int | float) else f"<td>{escape(str(v or ''))}</td>"
            for v in (server.get(c) for c in SERVER_COLUMNS)
        )
        rows.append(f"<tr {data}>{cells}</tr>")
    return (
        f'<div class=filters>{"".join(filters)} <span id="shown">{len(servers)}</span> of '
        f'{len(servers)} shown</div><table id="servers"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
