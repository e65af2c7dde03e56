"""The pure policy and planner: every release and key rule, table-driven, plus properties."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.keys import KeyCheck, KeyInfo, KeyKind, Plan
from agent.planner import plan
from agent.policy import ServerFacts, active_features, inactive_features, judge_step
from common.reasons import Reason
from releases.catalog import default_catalog

CATALOG = default_catalog()
SERIAL = "AWX000000001"


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def server(release: str, model: str = "6x") -> ServerFacts:
    return ServerFacts(SERIAL, model, release, CATALOG.release(release).build)


def maint(
    valid: bool = True,
    plan_: Plan = Plan.ANYTIME_1Y,
    reason: Reason | None = None,
    passed: int = 5,
    ceiling: str | None = None,
    key_id: str = "MNT-1",
) -> KeyCheck:
    info = KeyInfo(
        key_id,
        KeyKind.MAINTENANCE,
        SERIAL,
        date(2016, 1, 1),
        date(2016, 1, 1),
        date(2017, 1, 1),
        plan=plan_,
        ceiling=ceiling,
    )
    return KeyCheck(info, valid, reason, "The key failed a check." if reason else "", passed)


def feature(name: str) -> KeyCheck:
    return KeyCheck(KeyInfo(f"FEA-{name}", KeyKind.FEATURE, SERIAL, date(2016, 1, 1), feature=name), True)


def patch_auth(build: str) -> KeyCheck:
    return KeyCheck(KeyInfo("PAT-1", KeyKind.PATCH, SERIAL, date(2014, 1, 1), patch_build=build), True)


@dataclass(frozen=True)
class Case:
    name: str
    release: str
    candidate: str
    now: str
    checks: tuple[KeyCheck, ...] = ()
    model: str = "6x"
    reason: Reason | None = None
    rule: str | None = None


CASES = [
    Case("seq_1_successor_is_allowed", "7.2", "7.3", "2016-01-01", (maint(),)),
    Case(
        "seq_1_skip_is_refused",
        "7.6",
        "8.0",
        "2016-01-01",
        (maint(),),
        reason=Reason.SEQUENTIAL_STEP_REQUIRED,
        rule="SEQ-1",
    ),
    Case(
        "seq_2_below_7_1_cannot_leapfrog",
        "7.0",
        "7.3",
        "2016-01-01",
        (maint(),),
        reason=Reason.MUST_INSTALL_7_1_FIRST,
        rule="SEQ-2",
    ),
    Case(
        "seq_2_6_9_to_7_2_names_7_1",
        "6.9",
        "7.2",
        "2016-01-01",
        reason=Reason.MUST_INSTALL_7_1_FIRST,
        rule="SEQ-2",
    ),
    Case("swm_1_up_to_7_1_needs_no_key", "7.0", "7.1", "2016-01-01"),
    Case("swm_1_6_9_to_7_0_needs_no_key", "6.9", "7.0", "2016-01-01"),
    Case(
        "swm_1_beyond_7_1_needs_a_key",
        "7.1",
        "7.2",
        "2016-01-01",
        reason=Reason.MAINTENANCE_KEY_REQUIRED,
        rule="SWM-1",
    ),
    Case(
        "swm_2_expired_key_is_refused_with_its_code",
        "7.1",
        "7.2",
        "2018-01-01",
        (maint(False, reason=Reason.MAINTENANCE_KEY_EXPIRED, passed=4),),
        reason=Reason.MAINTENANCE_KEY_EXPIRED,
        rule="SWM-2",
    ),
    Case(
        "swm_2_best_key_decides",
        "7.1",
        "7.2",
        "2018-01-01",
        (
            maint(False, reason=Reason.KEY_SIGNATURE_INVALID, passed=1, key_id="A"),
            maint(False, reason=Reason.KEY_REVOKED, passed=3, key_id="B"),
        ),
        reason=Reason.KEY_REVOKED,
        rule="SWM-2",
    ),
    Case(
        "swm_2_one_valid_key_suffices",
        "7.1",
        "7.2",
        "2016-06-01",
        (maint(False, reason=Reason.KEY_REVOKED, passed=3, key_id="B"), maint(key_id="C")),
    ),
    Case(
        "swm_7_patch_authorisation_without_maintenance",
        "7.6",
        "7.6.4.9",
        "2015-01-01",
        (patch_auth("7.6.4.9"),),
    ),
    Case(
        "swm_7_patch_without_authorisation_needs_maintenance",
        "7.6",
        "7.6.4.9",
        "2015-01-01",
        reason=Reason.MAINTENANCE_KEY_REQUIRED,
        rule="SWM-1",
    ),
    Case(
        "swm_7_authorisation_is_for_one_build_only",
        "7.5",
        "7.6",
        "2015-01-01",
        (patch_auth("7.6.4.9"),),
        reason=Reason.MAINTENANCE_KEY_REQUIRED,
        rule="SWM-1",
    ),
    Case(
        "down_1_downgrade_is_refused",
        "7.6",
        "7.5",
        "2016-01-01",
        (maint(),),
        reason=Reason.DOWNGRADE_REFUSED,
        rule="DOWN-1",
    ),
    Case(
        "down_1_from_7_1_back_to_7_0",
        "7.1",
        "7.0",
        "2016-01-01",
        reason=Reason.DOWNGRADE_REFUSED,
        rule="DOWN-1",
    ),
    Case(
        "rel_1_not_yet_released",
        "7.4",
        "7.5",
        "2013-01-01",
        (maint(),),
        reason=Reason.NOT_YET_RELEASED,
        rule="REL-1",
    ),
    Case(
        "rel_1_legacy_model_cannot_run_9_0",
        "8.3",
        "9.0",
        "2022-01-01",
        (maint(),),
        reason=Reason.MODEL_UNSUPPORTED,
        rule="REL-1",
    ),
    Case("rel_1_unknown_release", "7.4", "7.45", "2016-01-01", reason=Reason.UNKNOWN_RELEASE, rule="REL-1"),
    Case(
        "mig_2_temporary_key_reaches_8_0",
        "7.7",
        "8.0",
        "2016-01-01",
        (maint(plan_=Plan.TEMPORARY, ceiling="8.0"),),
    ),
    Case(
        "mig_2_temporary_key_stops_at_its_ceiling",
        "8.0",
        "8.1",
        "2016-06-01",
        (maint(plan_=Plan.TEMPORARY, ceiling="8.0"),),
        reason=Reason.TEMPORARY_KEY_CEILING,
        rule="MIG-2",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_judge_step_table(case: Case) -> None:
    """Each named case gets exactly its reason code and rule ID, or is allowed."""
    verdict = judge_step(CATALOG, server(case.release, case.model), case.checks, case.candidate, at(case.now))
    if case.reason is None:
        assert verdict.allowed, verdict.refusal
    else:
        assert verdict.refusal is not None
        assert (verdict.refusal.reason, verdict.refusal.rule) == (case.reason, case.rule)
        assert verdict.refusal.message.endswith(".")


def test_db_1_only_the_7_1_step_rebuilds_the_database() -> None:
    """The step to 7.1 is planned as a complete rebuild; no other step is."""
    result = plan(CATALOG, server("6.9"), (maint(),), "8.0", at("2016-01-01"))
    rebuilds = [s.release for s in result.steps if s.rebuilds_database]
    assert rebuilds == ["7.1"]


def test_db_2_schema_changes_are_planned_as_migrations() -> None:
    """A step whose schema differs migrates; one whose schema is equal does not."""
    result = plan(CATALOG, server("7.1"), (maint(),), "7.4", at("2016-01-01"))
    assert [(s.release, s.migrates_database) for s in result.steps] == [
        ("7.2", False),
        ("7.3", True),
        ("7.4", False),
    ]


def test_swm_3_refusal_keeps_the_server_where_it_is() -> None:
    """A server without a key plans to stay on its release, with a clear reason."""
    result = plan(CATALOG, server("7.4"), (), "8.0", at("2016-01-01"))
    assert result.final_release == "7.4"
    assert result.refusal is not None and result.refusal.rule == "SWM-1"


def test_swm_4_connect_server_ship_key_reaches_current_release() -> None:
    """A new 731 shipped on 8.0 with its 90-day key can plan to the current release on day one."""
    ship = maint(plan_=Plan.SHIP_90D)
    result = plan(CATALOG, server("8.0", "731"), (ship,), "8.1", at("2016-05-01"))
    assert result.final_release == "8.1"


def test_swm_5_anytime_licence_is_a_maintenance_key() -> None:
    """An anytime-1y licence authorises the upgrade like any maintenance key."""
    verdict = judge_step(CATALOG, server("7.2"), (maint(plan_=Plan.ANYTIME_1Y),), "7.3", at("2016-06-01"))
    assert verdict.authorised_by == "maintenance:MNT-1"


def test_swm_6_features_stay_inactive_without_their_key() -> None:
    """Optional features a release introduces are inactive until their feature key is installed."""
    checks = (maint(), feature("Reach"))
    assert "Call Assistant" in inactive_features(CATALOG, "7.7", checks)
    assert "Reach" not in inactive_features(CATALOG, "7.7", checks)
    assert active_features(checks) == ("Reach",)


def test_phone_1_every_allowed_step_offers_its_phone_firmware() -> None:
    """Each allowed step carries the phone firmware its release bundles, with no key check."""
    result = plan(CATALOG, server("7.0"), (), "7.1", at("2016-01-01"))
    assert result.steps[0].phone_firmware == CATALOG.release("7.1").phone_firmware


def test_seq_1_plan_json_shape() -> None:
    """The plan's JSON has the public fields scripts rely on."""
    doc = plan(CATALOG, server("7.0"), (), "8.0", at("2016-01-01")).report().wire()
    assert doc["from"] == "7.0" and doc["to"] == "8.0" and doc["final_release"] == "7.1"
    assert doc["steps"][0] == {**doc["steps"][0], "release": "7.1", "outcome": "would-install"}
    assert {k: doc["steps"][1][k] for k in ("release", "outcome", "reason", "rule")} == {
        "release": "7.2",
        "outcome": "refused",
        "reason": "MAINTENANCE_KEY_REQUIRED",
        "rule": "SWM-1",
    }


VERSIONS = [r.version for r in CATALOG.releases]
MODELS = list(CATALOG.models)
KEY_STATES = st.sampled_from(
    [
        (),
        (maint(),),
        (maint(False, reason=Reason.MAINTENANCE_KEY_EXPIRED, passed=4),),
        (maint(plan_=Plan.TEMPORARY, ceiling="8.0"),),
        (patch_auth("8.2.6.12"),),
    ]
)


@st.composite
def situations(draw: st.DrawFn) -> tuple[ServerFacts, tuple[KeyCheck, ...], str, datetime]:
    model = draw(st.sampled_from(MODELS))
    runnable = [v for v in VERSIONS if CATALOG.release(v).supports(model)]
    release = draw(st.sampled_from(runnable))
    target = draw(st.sampled_from([*VERSIONS, "8.2.6.12", "7.6.4.9"]))
    day = draw(st.dates(min_value=date(2008, 1, 1), max_value=date(2026, 1, 1)))
    return server(release, model), draw(KEY_STATES), target, at(day.isoformat())


@settings(max_examples=300, deadline=None)
@given(situations())
def test_seq_1_property_plans_never_skip_never_downgrade_stop_at_first_refusal(
    situation: tuple[ServerFacts, tuple[KeyCheck, ...], str, datetime],
) -> None:
    """For random servers, keys, dates and targets a plan is a chain of successors ending at a refusal."""
    facts, checks, target, now = situation
    result = plan(CATALOG, facts, checks, target, now)
    index = CATALOG.release(facts.release).index
    for number, step in enumerate(result.steps):
        if step.refusal is not None:
            assert number == len(result.steps) - 1, "nothing may follow a refusal"
            break
        release = CATALOG.release(step.release)
        assert release.index in (index, index + 1), "a plan never skips a release"
        assert release.index >= index, "a plan never downgrades"
        assert release.date <= now.date() and release.supports(facts.model)
        index = release.index
    if result.refusal is None and result.steps:
        patch = CATALOG.patch(target)
        assert result.final_release == (patch.release if patch else CATALOG.release(target).version)
