"""Campaign specs: the retained JSON form and a networks file read strictly, each problem naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet.campaign.spec import (
    AbortRule,
    CampaignSpec,
    CampaignSpecError,
    Window,
    load_networks,
    parse_networks,
)

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
RETAINED = {  # the JSON form as a controller retains it
    "campaign_id": "c1",
    "target": "8.0",
    "canary": 2,
    "batch": "25%",
    "rate_per_minute": 4.0,
    "max_in_flight": 3,
    "abort": {"threshold": 0.5, "min_finished": 2, "action": "cancel"},
    "window": {"opens": "2024-03-01T09:00:00+00:00", "closes": "2024-03-01T10:00:00+00:00"},
    "stage_early": False,
    "gate_phases": True,
    "networks": {"n1": ["S1", "S2"]},
    "members": ["S1", "S2"],
    "selection": ["site=east", "model=6x"],
}


def test_the_retained_json_form_reads_back_as_written() -> None:
    """A retained spec is read into the same values and written back byte for byte."""
    spec = CampaignSpec.from_dict(RETAINED)
    assert spec.abort == AbortRule(0.5, 2, "cancel")
    assert spec.window == Window(NOW, NOW + timedelta(hours=1))
    assert spec.networks == {"n1": ("S1", "S2")}
    assert spec.selection == ("site=east", "model=6x")
    assert spec.to_dict() == RETAINED


def test_an_older_state_without_optional_keys_reads_with_the_defaults() -> None:
    """Keys absent from the JSON take their defaults."""
    spec = CampaignSpec.from_dict({"campaign_id": "c1", "abort": None, "window": None})
    assert spec == CampaignSpec(campaign_id="c1")


BAD: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("no id", {}, "campaign_id", "is required"),
    ("id with a space", {"campaign_id": "c 1"}, "campaign_id", "1-64 letters"),
    ("id as a number", {"campaign_id": 5}, "campaign_id", "expected a string, got the number 5"),
    ("unknown key", {"campaign_id": "c", "colour": 1}, "colour", "unknown field (allowed here: abort,"),
    ("negative canary", {"campaign_id": "c", "canary": -1}, "canary", "must be at least 0"),
    ("canary as text", {"campaign_id": "c", "canary": "2"}, "canary", "expected a whole number, got '2'"),
    ("bad batch", {"campaign_id": "c", "batch": "0"}, "batch", "a count ('25') or a share ('20%')"),
    ("batch above 100%", {"campaign_id": "c", "batch": "150%"}, "batch", "at most 100%"),
    ("zero rate", {"campaign_id": "c", "rate_per_minute": 0}, "rate_per_minute", "must be positive"),
    ("flag as text", {"campaign_id": "c", "gate_phases": "yes"}, "gate_phases", "expected true or false"),
    ("abort not a table", {"campaign_id": "c", "abort": 0.5}, "abort", "expected a table"),
    ("abort threshold", {"campaign_id": "c", "abort": {"threshold": 2}}, "abort.threshold", "at most 1"),
    (
        "abort action",
        {"campaign_id": "c", "abort": {"threshold": 0.5, "action": "stop"}},
        "abort.action",
        "one of",
    ),
    (
        "naive window",
        {
            "campaign_id": "c",
            "window": {"opens": "2024-03-01T09:00:00", "closes": "2024-03-01T10:00:00+00:00"},
        },
        "window.opens",
        "must carry a timezone",
    ),
    (
        "window backwards",
        {"campaign_id": "c", "window": {"opens": "2024-03-01T10:00:00Z", "closes": "2024-03-01T09:00:00Z"}},
        "window",
        "closes must follow opens",
    ),
    ("network of numbers", {"campaign_id": "c", "networks": {"n1": [1]}}, "networks.n1", "a list of strings"),
]


@pytest.mark.parametrize(("raw", "field", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_malformed_spec_is_refused_naming_the_field(raw: dict[str, Any], field: str, fragment: str) -> None:
    """Each malformed JSON form raises CampaignSpecError naming the field and the problem."""
    with pytest.raises(CampaignSpecError) as caught:
        CampaignSpec.from_dict(raw, source="state of c")
    (problem,) = caught.value.problems
    assert problem.file == "state of c"
    assert problem.field == field
    assert fragment in problem.message, problem.message


def test_options_out_of_range_are_refused_with_a_readable_line() -> None:
    """The command line's values are checked the same way, one line naming the field."""
    with pytest.raises(CampaignSpecError) as caught:
        CampaignSpec.from_options(campaign_id="c", canary=-1, abort={"threshold": 0.0}, rate_per_minute=None)
    assert str(caught.value).splitlines() == [
        "campaign options: field 'canary': must be at least 0, got the number -1",
        "campaign options: field 'abort.threshold': must be a share above 0 and at most 1, got 0",
    ]


def test_a_networks_file_reads_into_tuples(tmp_path: Path) -> None:
    """A networks file (as ``allworx-sim fleet`` writes it) reads as network -> serials."""
    path = tmp_path / "networks.json"
    path.write_text('{"net-1": ["S1", "S2"]}')
    assert load_networks(path) == {"net-1": ("S1", "S2")}


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ('["S1", "S2"]', None, "expected a table of lists of strings, got a list"),
        ('{"net-1": "S1"}', "net-1", "expected a list of strings, got 'S1'"),
        ("{", None, "not valid JSON"),
    ],
)
def test_a_malformed_networks_file_is_refused_naming_the_file(
    text: str, field: str | None, fragment: str
) -> None:
    """A list where an object belongs, a bare serial, or not JSON: a CampaignSpecError naming the file."""
    with pytest.raises(CampaignSpecError) as caught:
        parse_networks(text, "networks.json")
    (problem,) = caught.value.problems
    assert problem.file == "networks.json"
    assert problem.field == field
    assert fragment in problem.message, problem.message
