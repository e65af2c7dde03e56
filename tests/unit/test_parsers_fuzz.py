"""Fuzzing the parsers of the files people write: any input loads or is refused with the parser's own error.

Scenario files, fleet descriptions and campaign specs (their JSON form and a networks file) are
fed arbitrary TOML-ish and JSON-ish documents (trees of tables, lists and scalars whose keys are
often the format's own) and random text. Each must return a model or raise its parser's error
type, every problem naming the file: never a traceback of another kind.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel

from fleet.campaign.spec import CampaignSpec, CampaignSpecError, parse_networks
from simulator.fleet.spec import FleetFileError, FleetSpec, parse_toml
from simulator.scenario.model import STEP_KINDS, Scenario, ScenarioFileError, ServerDecl
from simulator.scenario.parse import parse_scenario
from tests.fuzz import structure

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCENARIO_KEYS = [
    "title", "start", "description", "rules", "server", "step", "do", "name", "model", "release",
    "shipped", "users", "network", "serial", "to", "days", "kind", "plan", "as", "from", "key",
    "expect_refused", "refused", "rule", "features", "maintenance_expires", "order", "type", "count",
    "new_model", "power_cut", "seed", "how", "ceiling", "option", "target",
]  # fmt: skip
SCENARIO_VALUES = [
    *STEP_KINDS, "hq", "6x", "731", "7.0", "7.1", "8.0", "2014-01-01", "2009-06-01", "none", "SWM-1",
    "maintenance", "feature", "anytime-1y", "temporary", "trade-in", "random", "byte",
]  # fmt: skip
FLEET_KEYS = [
    "fleet", "servers", "seed", "now", "sites", "models", "releases", "keys", "multisite", "failing",
    "offline", "6x", "7.0", "anytime", "expired", "none",
]  # fmt: skip
CAMPAIGN_KEYS = [
    "campaign_id", "target", "canary", "batch", "rate_per_minute", "max_in_flight", "abort", "window",
    "stage_early", "gate_phases", "networks", "threshold", "min_finished", "action", "opens", "closes",
]  # fmt: skip
CAMPAIGN_VALUES = ["c1", "newest", "25", "20%", "150%", "pause", "cancel", "2024-03-01T02:00:00+00:00", "x"]


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # TOML cannot hold a lone surrogate


def toml_scalars(words: list[str]) -> st.SearchStrategy[Any]:
    """Every kind of TOML value, often one of the format's own words."""
    return st.one_of(
        st.booleans(),
        st.integers(),
        st.floats(),
        TEXT,
        st.sampled_from(words),
        st.dates(),
        st.datetimes(),
        st.times(),
    )


def trees(keys: list[str], leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nested tables and lists of ``leaves``, the tables' keys mostly the format's own."""
    key = st.one_of(st.sampled_from(keys), TEXT)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(key, inner, max_size=6)),
        max_leaves=25,
    )


def documents(keys: list[str], leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A top-level table of such trees."""
    return st.dictionaries(st.sampled_from(keys), trees(keys, leaves), max_size=8)


def toml_text(document: dict[str, Any]) -> str:
    """A TOML document whose top-level keys are ``document``'s."""
    return structure.dump_toml(document).decode()


def typed(annotation: Any, words: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Values of ``annotation``'s type (the format's words for strings), so files get past the types."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return typed(args[0], words)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (types.UnionType, typing.Union):
        return st.one_of([typed(a, words) for a in args if a is not type(None)])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_tables("", annotation, words)
    if origin in (list, tuple):
        return st.lists(words, max_size=3)
    if origin is dict:
        return st.dictionaries(words, typed(args[1], words), min_size=1, max_size=4)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: words,
        int: st.one_of(st.integers(-3, 1000), st.sampled_from([2**31, 10**9, 2**63 - 1])),
        float: st.one_of(st.floats(0, 1), st.floats(0, 1e308), st.floats()),
        bool: st.booleans(),
        date: st.one_of(st.dates(), st.dates().map(date.isoformat)),
        AwareDatetime: st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    }
    return simple[annotation]


@st.composite
def model_tables(draw: st.DrawFn, kind: str, model: type[BaseModel], words: st.SearchStrategy[str]) -> Any:
    """A table for ``model`` (``do = kind`` for a step): its required keys and a few others.

    Values are of the field's type, so that the checks across tables (references, dates, codes)
    are reached; values of any type come from the unshaped documents.
    """
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    optional = sorted(key for key, f in fields.items() if not f.is_required())
    keys = [key for key, f in fields.items() if f.is_required()]
    if optional:
        keys += draw(
            st.lists(st.sampled_from(optional), unique=True, min_size=min(2, len(optional)), max_size=4)
        )
    table = {key: draw(typed(fields[key].annotation, words)) for key in keys}
    return {"do": kind, **table} if kind else table


def scenario_documents() -> st.SearchStrategy[str]:
    """Scenario-shaped TOML (servers and steps as tables of their models' keys), or any tree."""
    words = st.sampled_from(SCENARIO_VALUES)
    step = st.sampled_from(sorted(STEP_KINDS)).flatmap(
        lambda kind: model_tables(kind, STEP_KINDS[kind], words)
    )
    shaped = st.fixed_dictionaries(
        {
            "title": words,
            "start": st.dates(),
            "server": st.lists(model_tables("", ServerDecl, words), min_size=1, max_size=3),
            "step": st.lists(step, min_size=1, max_size=6),
        },
        optional={"rules": st.lists(words, max_size=2)},
    )
    return st.one_of(shaped, documents(SCENARIO_KEYS, toml_scalars(SCENARIO_VALUES))).map(toml_text)


def assert_names_the_file(error: Exception, file: str) -> None:
    problems = getattr(error, "problems", [])
    assert problems, error
    for problem in problems:
        assert problem.file == file, problem


@FUZZ
@given(st.one_of(scenario_documents(), st.text()))
def test_a_scenario_file_loads_or_is_refused_as_a_scenario_file(text: str) -> None:
    """Any text given as a scenario file yields a Scenario or a ScenarioFileError naming the file."""
    path = Path("fuzz/story.toml")
    try:
        loaded = parse_scenario(text, path)
    except ScenarioFileError as exc:
        assert_names_the_file(exc, str(path))
    else:
        assert isinstance(loaded, Scenario)


def fleet_documents() -> st.SearchStrategy[str]:
    """Fleet-shaped TOML (a [fleet] table of its own keys, values of their types), or any tree."""
    words = st.sampled_from(["hq", "east", "6x", "731", "7.0", "8.2", "anytime", "expired", "none"])
    shaped = model_tables("", FleetSpec, words).map(lambda table: {"fleet": table})
    leaves = toml_scalars(["hq", "6x", "7.0", "2024-03-01", "anytime"])
    return st.one_of(shaped, documents(FLEET_KEYS, leaves)).map(toml_text)


@FUZZ
@given(st.one_of(fleet_documents(), st.text()))
def test_a_fleet_description_loads_or_is_refused_as_a_fleet_file(text: str) -> None:
    """Any text given as a fleet TOML yields a FleetSpec or a FleetFileError naming the file."""
    try:
        loaded = parse_toml(text, "fleet.toml")
    except FleetFileError as exc:
        assert_names_the_file(exc, "fleet.toml")
    else:
        assert isinstance(loaded, FleetSpec)


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(CAMPAIGN_VALUES),
)


def campaign_documents() -> st.SearchStrategy[Any]:
    """Campaign-spec-shaped JSON (its keys, values of their types, nested abort and window), or any tree."""
    shaped = model_tables("", CampaignSpec, st.sampled_from(CAMPAIGN_VALUES))
    return st.one_of(shaped, documents(CAMPAIGN_KEYS, JSON_LEAVES), trees(CAMPAIGN_KEYS, JSON_LEAVES))


@FUZZ
@given(campaign_documents())
def test_a_campaign_spec_loads_or_is_refused_as_a_campaign_spec(raw: Any) -> None:
    """Any JSON value given as a campaign spec yields a spec that round-trips, or a CampaignSpecError."""
    try:
        spec = CampaignSpec.from_dict(raw)
    except CampaignSpecError as exc:
        assert_names_the_file(exc, "campaign spec")
    else:
        assert CampaignSpec.from_dict(spec.to_dict()) == spec


NETWORKS = st.dictionaries(st.sampled_from(["net-1", "net-2"]), st.lists(st.sampled_from(["S1", "S2"])))


@FUZZ
@given(st.one_of(NETWORKS.map(json.dumps), trees(["net-1"], JSON_LEAVES).map(json.dumps), st.text()))
def test_a_networks_file_loads_or_is_refused_as_a_campaign_spec(text: str) -> None:
    """Any text given as ``--networks`` yields network -> serials or a CampaignSpecError naming the file."""
    try:
        networks = parse_networks(text, "networks.json")
    except CampaignSpecError as exc:
        assert_names_the_file(exc, "networks.json")
    else:
        assert all(isinstance(v, tuple) for v in networks.values())


def test_toml_writer_round_trips() -> None:
    """The fuzzer's TOML writer writes what tomllib reads back (else the fuzz would only test TOML errors)."""
    document = {
        "a": [1, 2.5, 1e300, "x\x7f\U0001f600\n"],
        "b": {"c": date(2014, 1, 1), "d": True, "t": time(1, 2, 3, 4)},
        "e": datetime(2014, 1, 1, 2, 3),
    }
    assert tomllib.loads(toml_text(document)) == document
