"""The campaign's retained shape: a bounded summary, and a campaign rebuilt from its parts."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from common.reasons import Reason
from fleet.campaign.machine import MemberEvent, Why
from fleet.campaign.model import SUMMARY_LIMIT, Campaign, Member
from fleet.campaign.spec import CampaignSpec
from tests.unit.test_campaign import NOW, fleet

SERVERS = 1000


def big() -> Campaign:
    """A 1,000-server campaign that names its members, half of them run and refused for many reasons."""
    serials = tuple(f"S{i:03d}" for i in range(SERVERS))
    campaign = fleet(SERVERS, CampaignSpec(campaign_id="big", canary=10, batch="10%", members=serials))
    reasons = list(Reason)
    for i, serial in enumerate(serials[: SERVERS // 2]):
        campaign.members[serial].step(MemberEvent.START)
        reason = reasons[i % len(reasons)].value
        why = Why(reason, "SWM-1", "a sentence long enough to matter " * 4)
        campaign.record(serial, MemberEvent.REJECTED, NOW, why)
    campaign.needing_keys = {f"net{i}": list(serials[i::20]) for i in range(20)}
    for i in range(50):
        campaign.note(NOW + timedelta(seconds=i), "operator", action="pause", key_id="k" * 16, wall="x" * 32)
    return campaign


def test_summary_stays_under_the_limit_at_1000_members() -> None:
    """The retained summary of a 1,000-member campaign is under 2 KB of JSON."""
    campaign = big()
    payload = json.dumps(campaign.summary_dict(NOW + timedelta(hours=1)), separators=(",", ":"))
    assert len(payload.encode()) < SUMMARY_LIMIT
    assert SUMMARY_LIMIT == 2048


def test_summary_stays_under_the_limit_with_the_longest_names_and_selection() -> None:
    """With a 64-character id, a thousand serials selected inline and ten non-ASCII expressions, the
    summary stays under 2 KB and still names the selection, cut."""
    campaign = big()
    serials = ",".join(campaign.members)
    selection = (f"serial={serials}", *(f"site=\u00e9{i}" * 20 for i in range(10)))
    spec = CampaignSpec.from_dict({**campaign.spec.to_dict(), "campaign_id": "c" * 64,
                                   "selection": list(selection)}, "test")  # fmt: skip
    campaign.spec = spec
    summary = campaign.summary_dict(NOW)
    payload = json.dumps(summary, separators=(",", ":"))
    assert len(payload.encode()) < SUMMARY_LIMIT
    assert summary["selection"][0].startswith("serial=S000,S001")
    assert summary["selection"][0].endswith("...")
    assert summary["selection"][-1] == "+5 more"


def test_summary_names_a_short_selection_whole() -> None:
    """The expressions a campaign was selected by appear in its summary as given."""
    campaign = big()
    campaign.spec = CampaignSpec.from_dict(
        {**campaign.spec.to_dict(), "selection": ["site=east", "model=6x,24x"]}, "test"
    )
    assert campaign.summary_dict(NOW)["selection"] == ["site=east", "model=6x,24x"]


def test_summary_counts_every_member() -> None:
    """The summary's counts add up to its member count."""
    summary = big().summary_dict(NOW)
    assert sum(summary["counts"].values()) == SERVERS
    assert summary["members"] == SERVERS
    assert summary["listed"] == SERVERS


def test_campaign_rebuilds_from_its_retained_parts() -> None:
    """The state core, each member's document and the log rebuild the same campaign."""
    campaign = big()
    campaign.decide(NOW)
    members = [json.loads(json.dumps(m.as_dict())) for m in campaign.members.values()]
    core = json.loads(json.dumps(campaign.core_dict()))
    restored = Campaign.from_parts(core, members, json.loads(json.dumps(campaign.log)))
    assert restored.to_dict() == campaign.to_dict()


def test_core_holds_no_member() -> None:
    """The controller's state core leaves the members and the log to their own topics."""
    core = big().core_dict()
    assert "members" not in core
    assert "log" not in core


def member_json() -> Any:
    """A pending member's retained document, as read back from the broker (untyped JSON)."""
    return json.loads(json.dumps(fleet(1, CampaignSpec(campaign_id="c")).members["S000"].as_dict()))


def test_a_member_document_with_an_unknown_field_is_refused() -> None:
    """A retained member document with a field no member has raises TypeError, never loads."""
    document: Any = {**member_json(), "colour": "red"}
    with pytest.raises(TypeError, match="colour"):
        Member.from_dict(document)


def test_a_member_document_without_its_serial_is_refused() -> None:
    """A retained member document missing one of the six fields without a default raises TypeError."""
    document = member_json()
    del document["serial"]
    with pytest.raises(TypeError, match="serial"):
        Member.from_dict(document)


def test_a_member_document_of_the_six_fields_takes_the_defaults() -> None:
    """Only serial, site, model, release, target and phase are needed; the rest default (a pending server)."""
    full = member_json()
    first: Any = {k: full[k] for k in ("serial", "site", "model", "release", "target", "phase")}
    assert Member.from_dict(first).as_dict() == Member("S000", "hq", "6x", "8.2", "8.3", 0).as_dict()
