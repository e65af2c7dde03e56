"""The pure campaign model: phases, abort rules, rate limit, window, SITE-1, dry run, persistence."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.documents import PlanReport
from agent.mqtt.messages import StateDocument
from fleet.campaign.machine import CommandReply, ServerState
from fleet.campaign.model import Campaign, Command
from fleet.campaign.plan import assign_phases, predict
from fleet.campaign.setup import create, dry_run
from fleet.campaign.spec import AbortRule, CampaignSpec, Window
from releases.catalog import default_catalog

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CATALOG = default_catalog()
AGENT_STATE = json.loads((Path(__file__).resolve().parents[1] / "data" / "wire_format.json").read_text())[
    "state"
]


def state(serial: str, release: str, model: str = "6x", at: str | None = None) -> dict[str, Any]:
    """A retained state document, as the agent publishes it."""
    last = {"at": at, "outcome": "succeeded", "final_release": release} if at else None
    return {
        "serial": serial,
        "site": "hq",
        "model": model,
        "release": release,
        "state": "idle",
        "last_result": last,
    }


def reported(docs: Mapping[str, dict[str, Any]]) -> dict[str, StateDocument]:
    """The retained states as the controller keeps them: validated, the agent's own fields filled in."""
    out = {}
    for serial, doc in docs.items():
        last = doc["last_result"] and {**AGENT_STATE["last_result"], **doc["last_result"]}
        out[serial] = StateDocument.model_validate({**AGENT_STATE, **doc, "last_result": last})
    return out


def plan_to(release: str, target: str, refused_at: str | None = None, rule: str = "SWM-1") -> PlanReport:
    """An agent's ``plan`` answer walking ``release`` -> ``target``."""
    chain = [r.version for r in CATALOG.releases]
    steps: list[dict[str, Any]] = []
    final = release
    for version in chain[chain.index(release) + 1 : chain.index(target) + 1]:
        if version == refused_at:
            steps.append(
                {
                    "release": version,
                    "build": f"{version}.0.1",
                    "outcome": "refused",
                    "reason": "MAINTENANCE_KEY_REQUIRED",
                    "rule": rule,
                    "message": "no key",
                }
            )
            break
        steps.append({"release": version, "build": f"{version}.0.1", "outcome": "would-install"})
        final = version
    return PlanReport.model_validate({"from": release, "to": target, "final_release": final, "steps": steps})


def fleet(count: int, spec: CampaignSpec) -> Campaign:
    """A campaign over ``count`` 8.2 servers asked for 8.3."""
    states = reported({f"S{i:03d}": state(f"S{i:03d}", "8.2") for i in range(count)})
    plans = {s: plan_to("8.2", "8.3") for s in states}
    return create(spec, states, set(states), plans, catalog=CATALOG, now=NOW)


def finish_running(campaign: Campaign, now: datetime, failing: frozenset[str] = frozenset()) -> None:
    """Every running server reports its result."""
    for serial, member in campaign.members.items():
        if member.status == "running":
            outcome = "failed" if serial in failing else "succeeded"
            doc = state(serial, "8.2" if outcome == "failed" else "8.3", at=now.isoformat())
            doc["last_result"]["outcome"] = outcome
            campaign.on_state(serial, ServerState.parse(doc), now)


def test_phases_canary_then_batches() -> None:
    """The canary comes first, then batches of the given share."""
    spec = CampaignSpec(campaign_id="c", canary=2, batch="25%")
    phases = assign_phases([f"S{i}" for i in range(10)], spec)
    assert [len(p) for p in phases] == [2, 3, 3, 2]


@given(count=st.integers(1, 60), canary=st.integers(0, 10), batch=st.integers(1, 30))
def test_phases_cover_every_server_once(count: int, canary: int, batch: int) -> None:
    """Whatever the sizes, every server is in exactly one phase and none is empty."""
    serials = [f"S{i}" for i in range(count)]
    phases = assign_phases(serials, CampaignSpec(campaign_id="c", canary=canary, batch=str(batch)))
    assert sorted(s for p in phases for s in p) == sorted(serials)
    assert all(phases)


def test_network_never_straddles_phases() -> None:
    """SITE-1: the members of a network land in one phase."""
    spec = CampaignSpec(campaign_id="c", canary=2, batch="2", networks={"n": ("S1", "S2", "S3")})
    phases = assign_phases(["S0", "S1", "S2", "S3", "S4"], spec)
    assert any({"S1", "S2", "S3"} <= set(p) for p in phases)


def test_next_phase_waits_for_the_current_one() -> None:
    """Phase 2 starts only when every server of phase 1 has an outcome."""
    campaign = fleet(6, CampaignSpec(campaign_id="c", canary=2, batch="4"))
    first = campaign.decide(NOW)
    assert {a[1] for a in first} == set(campaign.phases[0])
    assert campaign.decide(NOW) == []
    finish_running(campaign, NOW)
    assert {a[1] for a in campaign.decide(NOW)} == set(campaign.phases[1])


def test_abort_rule_pauses_after_minimum_then_resume_overrides() -> None:
    """Past the threshold with enough finished servers the campaign pauses; resume carries on."""
    spec = CampaignSpec(campaign_id="c", batch="100%", max_in_flight=5, abort=AbortRule(0.3, min_finished=4))
    campaign = fleet(10, spec)
    campaign.decide(NOW)
    finish_running(campaign, NOW, failing=frozenset({"S000", "S001"}))
    assert campaign.decide(NOW) == []
    assert (campaign.status, campaign.paused_reason) == ("paused", "abort_rule")
    campaign.resume(NOW)
    assert len(campaign.decide(NOW)) == 5
    finish_running(campaign, NOW)
    campaign.decide(NOW)
    assert campaign.status == "completed"
    assert campaign.counts() == {"failed": 2, "succeeded": 8}


def test_abort_rule_waits_for_minimum_finished() -> None:
    """A single early failure does not trip a rule needing five finished servers."""
    rule = AbortRule(0.1, min_finished=5)
    assert not rule.tripped(succeeded=0, failed=1)
    assert rule.tripped(succeeded=3, failed=2)


def test_cancel_action_cancels_pending_and_running() -> None:
    """An abort rule with action cancel ends the campaign and asks running servers to cancel."""
    spec = CampaignSpec(campaign_id="c", canary=2, batch="100%", abort=AbortRule(0.4, 1, "cancel"))
    campaign = fleet(6, spec)
    campaign.decide(NOW)
    finish_running(campaign, NOW, failing=frozenset(campaign.phases[0]))
    assert campaign.decide(NOW) == []
    assert campaign.status == "cancelled"
    assert campaign.counts() == {"failed": 2, "cancelled": 4}


def test_rate_limit_and_in_flight_bound_dispatch() -> None:
    """At most ``rate`` servers start per minute and never more than ``max_in_flight`` at once."""
    campaign = fleet(20, CampaignSpec(campaign_id="c", rate_per_minute=4, max_in_flight=3))
    assert len(campaign.decide(NOW)) == 0  # the bucket starts empty
    assert len(campaign.decide(NOW + timedelta(seconds=30))) == 2
    assert len(campaign.decide(NOW + timedelta(seconds=60))) == 1  # in flight: 3
    finish_running(campaign, NOW + timedelta(seconds=61))
    assert len(campaign.decide(NOW + timedelta(seconds=120))) == 3


def test_window_stages_before_and_activates_inside() -> None:
    """Before the window only staging is sent; inside it, upgrades; after it, the rest is cancelled."""
    window = Window(NOW + timedelta(hours=1), NOW + timedelta(hours=2))
    campaign = fleet(4, CampaignSpec(campaign_id="c", canary=2, window=window))
    assert {a[0] for a in campaign.decide(NOW)} == {"stage"}
    for serial in campaign.members:
        campaign.on_reply(serial, Command.STAGE, CommandReply(rejected=False), NOW)
    assert campaign.status == "scheduled"
    assert {a[0] for a in campaign.decide(NOW + timedelta(hours=1))} == {"upgrade"}
    campaign.decide(NOW + timedelta(hours=3))
    assert campaign.status == "completed"
    assert campaign.counts() == {"running": 2, "cancelled": 2}


def test_site_rule_holds_a_network_with_a_keyless_member() -> None:
    """SITE-1: one member refused for lack of a key holds the others, and is listed as needing one."""
    states = reported({"A": state("A", "8.1"), "B": state("B", "8.1"), "C": state("C", "8.1", model="731")})
    spec = CampaignSpec(campaign_id="c", networks={"n": ("A", "B", "C")})
    plans = {
        "A": plan_to("8.1", "8.3"),
        "B": plan_to("8.1", "8.3", refused_at="8.2"),
        "C": plan_to("8.1", "8.3"),
    }
    campaign = create(spec, states, set(states), plans, catalog=CATALOG, now=NOW)
    assert {m.target for m in campaign.members.values()} == {"8.3"}  # the newest every member can run
    rows = {r["serial"]: r for r in dry_run(campaign)}
    assert rows["A"]["reason"] == rows["C"]["reason"] == "SITE_ALIGNMENT_BLOCKED"
    assert rows["B"]["rule"] == "SWM-1"
    assert campaign.needing_keys == {"n": ["B"]}
    assert campaign.decide(NOW) == []


def test_site_1_a_network_aligns_on_its_newest_member_not_below_it() -> None:
    """SITE-1: asked for 8.2, a network whose new 731 runs 8.3 is aligned on 8.3, not told to go back."""
    states = reported({"A": state("A", "8.1"), "B": state("B", "8.3", model="731")})
    spec = CampaignSpec(campaign_id="c", target="8.2", networks={"n": ("A", "B")})
    plans = {"A": plan_to("8.1", "8.3"), "B": plan_to("8.3", "8.3")}
    campaign = create(spec, states, set(states), plans, catalog=CATALOG, now=NOW)
    assert {m.target for m in campaign.members.values()} == {"8.3"}
    assert campaign.decide(NOW) == [(Command.UPGRADE, "A", "8.3")]


def test_prediction_of_a_partial_chain() -> None:
    """A chain refused half-way is predicted rejected on the last release it reaches."""
    prediction = predict(plan_to("7.0", "8.0", refused_at="7.2"))
    assert (prediction.outcome, prediction.final_release, prediction.steps) == ("rejected", "7.1", ("7.1",))


def test_state_round_trips() -> None:
    """The retained JSON form restores the same campaign."""
    campaign = fleet(
        5,
        CampaignSpec(
            campaign_id="c", canary=1, abort=AbortRule(0.5, 2), window=Window(NOW, NOW + timedelta(hours=1))
        ),
    )
    campaign.decide(NOW)
    restored = Campaign.from_dict(campaign.to_dict())
    assert restored.to_dict() == campaign.to_dict()


@pytest.mark.parametrize("bad", [{"canary": -1}, {"batch": "0"}, {"batch": "150%"}, {"rate_per_minute": 0}])
def test_spec_validation(bad: dict[str, Any]) -> None:
    """Out-of-range specs are refused on construction."""
    with pytest.raises(ValueError, match=r"."):
        CampaignSpec(campaign_id="c", **bad)


def test_a_late_result_overrides_offline() -> None:
    """A server whose upgrade answer timed out, but whose result then arrives, gets that result."""
    campaign = fleet(2, CampaignSpec(campaign_id="c", batch="100%"))
    campaign.decide(NOW)
    campaign.on_lost("S000", Command.UPGRADE, NOW)
    campaign.on_lost("S001", Command.UPGRADE, NOW)
    assert campaign.counts() == {"offline": 2}
    later = NOW + timedelta(minutes=5)
    campaign.on_state("S000", ServerState.parse(state("S000", "8.3", at=later.isoformat())), later)
    assert campaign.counts() == {"offline": 1, "succeeded": 1}
    assert campaign.members["S000"].reason is None
    campaign.on_state("S001", ServerState.parse(state("S001", "8.2")), later)  # no new result: still offline
    assert campaign.members["S001"].status == "offline"


def test_a_state_that_carries_two_commits_counts_both_steps() -> None:
    """One retained state can jump two releases (it is read when sent): each release passed is a step."""
    states = reported({"S1": state("S1", "7.2")})
    plans = {"S1": plan_to("7.2", "7.6")}
    spec = CampaignSpec(campaign_id="c", target="7.6")
    campaign = create(spec, states, set(states), plans, catalog=CATALOG, now=NOW)
    (action,) = campaign.decide(NOW)
    assert action == (Command.UPGRADE, "S1", "7.6")
    member = campaign.members["S1"]
    running = {**state("S1", "7.3"), "state": "staging"}
    campaign.on_state("S1", ServerState.parse(running), NOW + timedelta(minutes=5))
    jump = ServerState.parse({**running, "release": "7.5"})  # 7.4 and 7.5 in one publish
    campaign.on_state("S1", jump, NOW + timedelta(minutes=15))
    assert [release for _, release in member.steps] == ["7.3", "7.4", "7.5"]
    off_plan = ServerState.parse({**running, "release": "9.9"})
    campaign.on_state("S1", off_plan, NOW + timedelta(minutes=20))
    assert [release for _, release in member.steps] == ["7.3", "7.4", "7.5", "9.9"]
