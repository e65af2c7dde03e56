"""SITE-1's one implementation (``agent.site``): the network's target and who needs a maintenance key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.site import needs_maintenance_key, network_target
from releases.catalog import default_catalog

CATALOG = default_catalog()
VERSIONS = [r.version for r in CATALOG.releases]


def index(version: str) -> int:
    """The release's place in the chain."""
    return CATALOG.release(version).index


def test_site_1_the_target_is_the_newest_release_a_member_runs() -> None:
    """Without a campaign's targets, the network aligns on its newest member (a new Connect server)."""
    assert network_target(CATALOG, ["7.6", "8.2", "8.0"]) == "8.2"


def test_site_1_a_lower_campaign_target_never_asks_the_newest_member_to_go_back() -> None:
    """A campaign asking for 8.0 in a network whose newest member runs 8.2 aligns it on 8.2."""
    assert network_target(CATALOG, ["7.7", "8.2"], ["8.0", "8.0"]) == "8.2"


def test_site_1_a_campaign_takes_the_network_to_the_oldest_release_it_asks_for() -> None:
    """Asked for each model's newest (8.3 for a 6x, 9.1 for a 731), the network goes to 8.3 together."""
    assert network_target(CATALOG, ["8.1", "8.1"], ["8.3", "9.1"]) == "8.3"


def test_site_1_unknown_releases_are_skipped_and_none_known_raises() -> None:
    """Releases outside the catalogue are ignored; with none known there is no target."""
    assert network_target(CATALOG, ["", "8.0"], ["9.9"]) == "8.0"
    with pytest.raises(ValueError, match="no member"):
        network_target(CATALOG, ["", "1.0"], ["9.9"])


@pytest.mark.parametrize("rule", ["SWM-1", "SWM-2", "MIG-2"])
def test_site_1_a_key_refusal_means_a_key_is_needed(rule: str) -> None:
    """Refusals a maintenance key purchase clears report the member as needing one."""
    assert needs_maintenance_key(rule)


@pytest.mark.parametrize("rule", ["DOWN-1", "REL-1", "SEQ-1", None])
def test_site_1_other_refusals_sell_no_key(rule: str | None) -> None:
    """A model limit, a downgrade or an order refusal is not solved by a key."""
    assert not needs_maintenance_key(rule)


@given(
    running=st.lists(st.sampled_from(VERSIONS), min_size=1, max_size=6),
    wanted=st.lists(st.sampled_from(VERSIONS), max_size=6),
)
def test_site_1_the_target_is_never_older_than_a_member_nor_past_what_is_asked(
    running: list[str], wanted: list[str]
) -> None:
    """No member goes back, and none goes past the oldest release asked for (unless a member runs newer)."""
    target = network_target(CATALOG, running, wanted)
    newest = max(index(v) for v in running)
    assert index(target) >= newest
    if wanted:
        assert index(target) == max(newest, min(index(v) for v in wanted))
    else:
        assert index(target) == newest
