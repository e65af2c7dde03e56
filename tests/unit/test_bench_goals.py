"""The fleet benchmark's goals and JSON document, judged from figures (no run)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.essential import per_step, sample_plans
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


def test_a_sample_of_one_release_spreads_over_the_whole_fleet() -> None:
    """A sample of 4 of 100 servers of one release takes every 25th, each standing for 25."""
    assert sample_plans(["7.0"] * 100, 4) == [(0, 25.0), (25, 25.0), (50, 25.0), (75, 25.0)]


def test_a_fleet_smaller_than_the_sample_is_taken_whole() -> None:
    """Each server of a fleet no larger than the sample is taken, standing for itself."""
    assert sample_plans(["7.0", "7.2", "7.0"], 4) == [(0, 1.0), (1, 1.0), (2, 1.0)]


def test_each_release_gets_its_share_of_the_sample() -> None:
    """Releases holding 60, 30 and 10 of 100 servers get 6, 3 and 1 of a sample of 10, wherever
    their servers lie in the fleet's order."""
    kinds = ["7.0", "7.2", "7.0", "7.4", "7.0", "7.2", "7.0", "7.0", "7.2", "7.0"] * 10
    picked = sample_plans(kinds, 10)
    drawn = [kinds[index] for index, _ in picked]
    assert (drawn.count("7.0"), drawn.count("7.2"), drawn.count("7.4")) == (6, 3, 1)


def test_a_sampled_server_stands_for_its_releases_servers() -> None:
    """Weights: a release's servers divided by its servers sampled, so they add up to the fleet."""
    kinds = ["7.0"] * 50 + ["7.7"] * 25 + ["7.4"] * 25
    picked = sample_plans(kinds, 4)
    weights = {kinds[index]: weight for index, weight in picked}
    assert weights == {"7.0": 25.0, "7.7": 25.0, "7.4": 25.0}
    assert sum(weight for _, weight in picked) == len(kinds)


def test_a_sample_of_no_server_takes_none() -> None:
    """A size of 0 samples nothing, whatever the releases."""
    assert sample_plans(["7.0", "7.2"] * 10, 0) == []


def test_the_largest_remainder_rounds_up() -> None:
    """Shares 3.15, 2.45 and 1.4 of a sample of 7 give 3, 3 and 1: the one seat left goes to 2.45."""
    kinds = ["a"] * 45 + ["b"] * 35 + ["c"] * 20
    drawn = [kinds[index] for index, _ in sample_plans(kinds, 7)]
    assert (drawn.count("a"), drawn.count("b"), drawn.count("c")) == (3, 3, 1)


def test_every_release_is_drawn() -> None:
    """A release with a share of 0.3 of a sample of 9 still gets one server (4, 4 and 1)."""
    kinds = ["a"] * 44 + ["b"] * 43 + ["c"] * 3
    drawn = [kinds[index] for index, _ in sample_plans(kinds, 9)]
    assert (drawn.count("a"), drawn.count("b"), drawn.count("c")) == (4, 4, 1)


def test_the_essential_work_a_step_weighs_each_server_as_its_weight_says() -> None:
    """A one-step server of 4 ms standing for 3 and an eight-step one of 16 ms standing for 1:
    (3 x 4 + 16) / (3 x 1 + 8) ms a step, not the sample's plain (4 + 16) / 9."""
    figure = per_step([(0.004, 1, 3.0), (0.016, 8, 1.0)])
    assert figure == pytest.approx(0.028 / 11)


def test_a_sample_without_steps_has_no_essential_work() -> None:
    """No step sampled: 0.0, not a division by zero."""
    assert per_step([(0.0, 0, 2.0)]) == 0.0
