"""The fleet benchmark's goals and JSON document, judged from figures (no run)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.essential import sample_plans
from bench.goals import (
    GOAL_NAMES,
    MAX_DEMO,
    MAX_OVERHEAD,
    MAX_PUBLISHES_PER_STEP,
    MAX_WALL,
    document,
    evaluate,
    verdict_lines,
)

CONTRACT = ("servers", "steps", "wall_s", "cpu_s", "publishes_per_step", "overhead_ratio", "kib_per_server")


def figures(**changes: Any) -> dict[str, Any]:
    """A 10,000-server run that meets every goal, with ``changes`` applied."""
    base: dict[str, Any] = {
        "servers": 10_000,
        "steps": 42_000,
        "wall_s": 140.0,
        "cpu_s": 260.0,
        "publishes_per_step": 3.5,
        "overhead_ratio": 1.8,
        "kib_per_server": 116.0,
        "demo_wall_s": 25.0,
    }
    return base | changes


def test_a_run_meeting_every_goal_is_judged_ok_on_each() -> None:
    """Every goal of a run within all limits is true."""
    assert evaluate(figures()) == dict.fromkeys(GOAL_NAMES, True)


@pytest.mark.parametrize(
    ("name", "field", "at_limit", "past_limit"),
    [
        ("messages", "publishes_per_step", MAX_PUBLISHES_PER_STEP, MAX_PUBLISHES_PER_STEP + 0.01),
        ("overhead", "overhead_ratio", MAX_OVERHEAD, MAX_OVERHEAD + 0.01),
        ("wall", "wall_s", MAX_WALL, MAX_WALL + 0.1),
        ("memory", "kib_per_server", 146.4, 146.6),  # 150 KB is 146.48 KiB
    ],
)
def test_a_figure_at_its_limit_is_ok_and_past_it_a_miss(
    name: str, field: str, at_limit: float, past_limit: float
) -> None:
    """ "At most" goals accept their limit itself and refuse anything past it."""
    assert evaluate(figures(**{field: at_limit}))[name] is True
    assert evaluate(figures(**{field: past_limit}))[name] is False


def test_the_demo_must_finish_strictly_under_its_limit() -> None:
    """The demo goal is "under 30 s": exactly 30 s is a miss."""
    assert evaluate(figures(demo_wall_s=MAX_DEMO - 0.1))["demo"] is True
    assert evaluate(figures(demo_wall_s=MAX_DEMO))["demo"] is False


def test_a_smaller_fleet_is_judged_on_its_wall_time_scaled_to_ten_thousand_servers() -> None:
    """A 500-server run of 8 s stands for 160 s at 10,000 servers: a miss."""
    assert evaluate(figures(servers=500, wall_s=7.0))["wall"] is True
    assert evaluate(figures(servers=500, wall_s=8.0))["wall"] is False


def test_a_figure_not_measured_leaves_its_goal_undecided() -> None:
    """Without the demo's figure (or the overhead's) their goals are None, not a verdict."""
    goals = evaluate({k: v for k, v in figures().items() if k not in {"demo_wall_s", "overhead_ratio"}})
    assert goals["demo"] is None
    assert goals["overhead"] is None


def test_the_json_document_holds_the_contract_fields_and_every_goal() -> None:
    """The document keeps every figure under its contract name and maps each goal to a verdict."""
    doc = json.loads(json.dumps(document(figures(publishes_per_step=13.8))))
    for field in CONTRACT:
        assert field in doc
    assert set(doc["goals"]) == set(GOAL_NAMES)
    assert doc["goals"]["messages"] is False
    assert doc["publishes_per_step"] == 13.8


def test_the_stretch_wall_time_is_reported_beside_the_goal() -> None:
    """130 s meets the 150 s goal but not the 120 s stretch."""
    doc = document(figures(wall_s=130.0))
    assert doc["goals"]["wall"] is True
    assert doc["wall_stretch"] is False


def test_each_goal_prints_one_verdict_line() -> None:
    """One line per goal, OK, MISS or -- (not measured) first."""
    lines = verdict_lines(figures(overhead_ratio=3.1, demo_wall_s=None))
    assert len(lines) == len(GOAL_NAMES)
    assert lines[1].startswith("MISS overhead 3.10x")
    assert lines[4].startswith("--")


def test_the_sample_spreads_over_the_whole_fleet() -> None:
    """A sample of 4 of 100 servers takes every 25th; a fleet smaller than the sample is taken whole."""
    assert sample_plans(100, 4) == [0, 25, 50, 75]
    assert sample_plans(3, 4) == [0, 1, 2]
