"""``--select``: the expression parser and the matcher over retained states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.mqtt.messages import StateDocument
from fleet.select import SelectionError, key_state, parse_clause, parse_selection
from tests.unit.test_fleet_watch import STATE

BASE = json.loads(STATE)
SITES, MODELS = ("east", "west", "north"), ("6x", "24x", "48x")
RELEASES = ("7.0", "7.1", "7.9", "7.10", "8.0", "8.1", "8.2")
KEYS = {
    "none": None,
    "valid": {"key_id": "K1", "plan": "anytime-1y", "expires": "2030-01-01", "valid": True, "reason": None},
    "expired": {"key_id": "K2", "plan": "ship-90d", "expires": "2009-05-01", "valid": False,
                "reason": "MAINTENANCE_KEY_EXPIRED"},
}  # fmt: skip


def state(
    serial: str = "AWX1", site: str = "east", model: str = "6x", release: str = "7.1", key: str = "none"
) -> StateDocument:
    """A retained state with these fields."""
    doc = {**BASE, "serial": serial, "site": site, "model": model, "release": release}
    return StateDocument.model_validate({**doc, "maintenance_key": KEYS[key]})


def test_site_and_model_are_anded_and_commas_mean_any_of() -> None:
    """``site=east`` and ``model=6x,24x`` together select east servers of either model."""
    selection = parse_selection(["site=east", "model=6x,24x"])
    assert selection.matches(state(site="east", model="24x"))
    assert not selection.matches(state(site="west", model="6x"))
    assert not selection.matches(state(site="east", model="48x"))


@pytest.mark.parametrize(
    ("expression", "release", "matches"),
    [
        ("release<8.0", "7.10", True),
        ("release<8.0", "8.0", False),
        ("release<=8.0", "8.0", True),
        ("release>7.9", "7.10", True),
        ("release>=8.1", "8.0", False),
        ("release=7.1", "7.1", True),
        ("release=7.1,8.2", "8.2", True),
    ],
)
def test_releases_compare_numerically(expression: str, release: str, matches: bool) -> None:
    """Releases compare as numbers (7.10 is above 7.9), with each operator."""
    assert parse_selection([expression]).matches(state(release=release)) is matches


def test_key_states() -> None:
    """``key=`` reads the state's maintenance key: valid, expired (present, not valid) or none."""
    assert [key_state(state(key=k)) for k in ("valid", "expired", "none")] == ["valid", "expired", "none"]
    assert parse_selection(["key=expired"]).matches(state(key="expired"))
    assert not parse_selection(["key=expired"]).matches(state(key="valid"))


def test_network_and_serials(tmp_path: Path) -> None:
    """``network=N`` uses the networks file; ``serial=@FILE`` reads one serial a line."""
    listed = tmp_path / "serials.txt"
    listed.write_text("AWX1\n\nAWX3\n")
    networks = {"lan1": ("AWX1", "AWX2")}
    assert parse_selection(["network=lan1"], networks).matches(state(serial="AWX2"))
    assert not parse_selection(["network=lan1"], networks).matches(state(serial="AWX3"))
    assert parse_selection([f"serial=@{listed}"]).matches(state(serial="AWX3"))
    assert not parse_selection([f"serial=@{listed}"]).matches(state(serial="AWX2"))
    assert parse_selection(["serial=AWX7,AWX8"]).matches(state(serial="AWX8"))


@pytest.mark.parametrize(
    "expression",
    ["color=red", "site", "site=", "site<east", "release<eight", "key=maybe", "network=lan9",
     "serial=@/nonexistent/serials.txt", "model>6x"],
)  # fmt: skip
def test_a_bad_expression_is_bad_input_naming_it(expression: str) -> None:
    """Each malformed expression is refused BAD_INPUT, and the message names the expression."""
    with pytest.raises(SelectionError) as info:
        parse_clause(expression, {"lan1": ("AWX1",)})
    assert info.value.reason.value == "BAD_INPUT"
    assert repr(expression) in str(info.value)


def test_network_without_a_networks_file_is_refused() -> None:
    """``network=`` with no networks file cannot be matched: refused."""
    with pytest.raises(SelectionError, match="networks file"):
        parse_clause("network=lan1")


def test_no_expression_selects_everything() -> None:
    """An empty selection matches every state."""
    assert parse_selection([]).matches(state(site="anywhere"))


@given(
    site=st.sampled_from(SITES),
    model=st.sampled_from(MODELS),
    release=st.sampled_from(RELEASES),
    key=st.sampled_from(tuple(KEYS)),
    wanted_sites=st.sets(st.sampled_from(SITES), min_size=1),
    wanted_models=st.sets(st.sampled_from(MODELS), min_size=1),
    bound=st.sampled_from(RELEASES),
    op=st.sampled_from(["<", "<=", ">", ">=", "="]),
    wanted_keys=st.sets(st.sampled_from(tuple(KEYS)), min_size=1),
)
def test_a_selection_never_matches_a_contradicting_state(
    site: str,
    model: str,
    release: str,
    key: str,
    wanted_sites: set[str],
    wanted_models: set[str],
    bound: str,
    op: str,
    wanted_keys: set[str],
) -> None:
    """Whenever a state's field contradicts one expression, the whole selection does not match it."""
    expressions = [
        f"site={','.join(sorted(wanted_sites))}",
        f"model={','.join(sorted(wanted_models))}",
        f"release{op}{bound}",
        f"key={','.join(sorted(wanted_keys))}",
    ]
    have, limit = tuple(map(int, release.split("."))), tuple(map(int, bound.split(".")))
    release_ok = {"<": have < limit, "<=": have <= limit, ">": have > limit, ">=": have >= limit,
                  "=": have == limit}[op]  # fmt: skip
    fits = site in wanted_sites and model in wanted_models and release_ok and key in wanted_keys
    doc = state(site=site, model=model, release=release, key=key)
    assert parse_selection(expressions).matches(doc) is fits
