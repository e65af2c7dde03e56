"""Campaign descriptions (fleet/campaign/spec.py) and a campaign's retained state (fleet/campaign/model.py).

The first byte of an input picks the parser the rest goes to: a networks file (``parse_networks``),
a campaign spec's JSON form (``CampaignSpec.from_dict``) or the retained campaign state any broker
client could overwrite (``Campaign.from_dict``).
Documented: the first two raise only CampaignSpecError, every problem naming its source; the state
raises only KeyError, TypeError or ValueError (the errors its reader turns into one line).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fleet.campaign.model import Campaign, Member
from fleet.campaign.spec import AbortRule, CampaignSpec, CampaignSpecError, Window, parse_networks
from tests.fuzz import fixtures

PARSERS = ("networks", "spec", "state")
SPEC = CampaignSpec(
    campaign_id="c1",
    target="8.0",
    canary=2,
    batch="25%",
    rate_per_minute=10.0,
    max_in_flight=5,
    abort=AbortRule(0.5, 2),
    window=Window(datetime(2024, 3, 1, 2, tzinfo=UTC), datetime(2024, 3, 1, 5, tzinfo=UTC)),
    networks={"net-1": ("S1", "S2")},
)
FORMAT, PREFIX = "json", 1  # the structured mutator reads inputs after PREFIX bytes as JSON


def seeds() -> list[bytes]:
    """A networks file, a spec with every field, a campaign state with one member."""
    member = Member(serial="S1", site="hq", model="6x", release="7.0", target="8.0", phase=0, current="7.0")
    state = Campaign(
        spec=SPEC, created=datetime(2024, 3, 1, tzinfo=UTC), members={"S1": member}, phases=[["S1"]]
    )
    documents = [{"net-1": ["S1", "S2"], "net-2": []}, SPEC.to_dict(), state.to_dict()]
    return [bytes([i]) + json.dumps(document).encode() for i, document in enumerate(documents)]


def check(data: bytes) -> None:
    """Give ``data[1:]`` to the parser ``data[0]`` picks."""
    if not data:
        return
    parser, text = PARSERS[data[0] % len(PARSERS)], data[1:].decode("utf-8", "replace")
    if parser == "networks":
        try:
            parse_networks(text, "networks.json")
        except CampaignSpecError as exc:
            problems = exc.problems
        else:
            return
        assert all(problem.file == "networks.json" for problem in problems), problems
        return
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # not JSON: refused by the JSON reader before the parser
        return
    if parser == "spec":
        try:
            spec = CampaignSpec.from_dict(raw)
        except CampaignSpecError as exc:
            problems = exc.problems
        else:
            assert CampaignSpec.from_dict(spec.to_dict()) == spec
            return
        assert all(problem.file == "campaign spec" for problem in problems), problems
        return
    try:
        Campaign.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return


def tokens() -> list[str]:
    """The documents' JSON keys for libFuzzer's dictionary."""
    keys = fixtures.field_names(CampaignSpec, AbortRule, Window)
    state = ["members", "created", "phases", "status", "phase", "paused_reason", "tokens", "log", "spec"]
    return [*(f'"{key}":' for key in [*keys, *state]), "null", "[]", "{}", *fixtures.TRICKY]
