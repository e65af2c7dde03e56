"""The fleet benchmark's goals and its JSON document: pure functions of the measured figures.

Goals (2 cores, one Mosquitto; docs/performance.md):

- messages: at most :data:`MAX_PUBLISHES_PER_STEP` publishes per upgrade step, agents and
  controller together, counted at the broker;
- overhead: the agents' CPU per step at most :data:`MAX_OVERHEAD` times the essential work of a step;
- wall: the 10,000-server campaign in at most :data:`MAX_WALL` seconds (:data:`STRETCH_WALL` the
  stretch); a smaller run is judged on its wall time scaled linearly to 10,000 servers;
- memory: at most :data:`MAX_BYTES_PER_SERVER` of peak RSS per simulated server;
- demo: ``allworx-sim demo`` (200 servers) in under :data:`MAX_DEMO` seconds, build included.

Invariant: :func:`document` holds every figure it is given and ``goals`` maps each goal name to
true, false, or None when its figure was not measured in the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GOAL_SERVERS = 10_000  # the fleet size the wall-time goal is stated for
MAX_PUBLISHES_PER_STEP = 4.0
MAX_OVERHEAD = 2.0  # agents' CPU per step / essential CPU per step
MAX_WALL = 150.0  # seconds
STRETCH_WALL = 120.0  # seconds
MAX_BYTES_PER_SERVER = 150_000  # 150 KB
MAX_DEMO = 30.0  # seconds, exclusive

GOAL_NAMES = ("messages", "overhead", "wall", "memory", "demo")


def scaled_wall(figures: Mapping[str, Any]) -> float | None:
    """The wall time the goal is judged on: as measured at 10,000 servers or more, else scaled linearly."""
    wall, servers = figures.get("wall_s"), figures.get("servers")
    if wall is None or not servers:
        return None
    return float(wall) * max(1.0, GOAL_SERVERS / float(servers))


def evaluate(figures: Mapping[str, Any]) -> dict[str, bool | None]:
    """Each goal's verdict (None: its figure is missing from ``figures``)."""

    def at_most(name: str, limit: float) -> bool | None:
        value = figures.get(name)
        return None if value is None else float(value) <= limit

    wall = scaled_wall(figures)
    demo = figures.get("demo_wall_s")
    return {
        "messages": at_most("publishes_per_step", MAX_PUBLISHES_PER_STEP),
        "overhead": at_most("overhead_ratio", MAX_OVERHEAD),
        "wall": None if wall is None else wall <= MAX_WALL,
        "memory": at_most("kib_per_server", MAX_BYTES_PER_SERVER / 1024),
        "demo": None if demo is None else float(demo) < MAX_DEMO,
    }


def document(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The ``--json`` document: every figure, the stretch verdict, and ``goals`` (see :func:`evaluate`)."""
    wall = scaled_wall(figures)
    out = dict(figures)
    out["wall_goal_s"] = wall
    out["wall_stretch"] = None if wall is None else wall <= STRETCH_WALL
    out["goals"] = evaluate(figures)
    return out


def verdict_lines(figures: Mapping[str, Any]) -> list[str]:
    """One line per goal: ``OK``, ``MISS`` or ``--`` (not measured), its figure and its limit."""
    goals = evaluate(figures)
    wall = scaled_wall(figures)
    servers = int(figures.get("servers") or 0)
    scaled = f", scaled to {GOAL_SERVERS:,} servers from {servers:,}" if servers < GOAL_SERVERS else ""
    texts = {
        "messages": f"messages {figures.get('publishes_per_step', 0) or 0:.2f} publishes per step"
        f" (agents and controller, at the broker) <= {MAX_PUBLISHES_PER_STEP:g}",
        "overhead": f"overhead {figures.get('overhead_ratio', 0) or 0:.2f}x the essential work of a step"
        f" <= {MAX_OVERHEAD:g}x",
        "wall": f"wall {wall or 0:.1f} s{scaled} <= {MAX_WALL:g} s (stretch {STRETCH_WALL:g} s)",
        "memory": f"memory {figures.get('kib_per_server', 0) or 0:.0f} KiB per server"
        f" <= {MAX_BYTES_PER_SERVER // 1000} KB",
        "demo": f"demo {figures.get('demo_wall_s') or 0:.1f} s (allworx-sim demo, 200 servers, build"
        f" included) < {MAX_DEMO:g} s",
    }
    marks = {True: "OK  ", False: "MISS", None: "--  "}
    return [f"{marks[goals[name]]} {texts[name]}" for name in GOAL_NAMES]
