"""Scenario files (simulator/scenario/parse.py ``parse_scenario``): people write them by hand.

Documented: parsing raises only ScenarioFileError, whose every problem names the file.
"""

from __future__ import annotations

from pathlib import Path

from simulator.scenario.model import STEP_KINDS, Header, Scenario, ScenarioFileError, ServerDecl
from simulator.scenario.parse import parse_scenario
from tests.fuzz import fixtures

SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"
FILE = Path("fuzz/story.toml")
SEEDS = (
    "seq-1-one-release-at-a-time.toml",
    "swm-2-invalid-keys-refused.toml",
    "mig-2-temporary-key-ceiling.toml",
    "db-1-power-cut-during-rebuild.toml",
    "trade-1-trade-in-eligibility-and-price.toml",
    "story-multi-site-aligns-to-connect.toml",
)
FORMAT, PREFIX = "toml", 0  # the structured mutator reads inputs after PREFIX bytes as TOML


def seeds() -> list[bytes]:
    """A few of the repository's own scenario files, of different step kinds."""
    return [(SCENARIOS / name).read_bytes() for name in SEEDS]


def check(data: bytes) -> None:
    """Parse ``data`` as a scenario file (text that is not UTF-8 is refused before parsing)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        scenario = parse_scenario(text, FILE)
    except ScenarioFileError as exc:
        problems = exc.problems
    else:
        assert isinstance(scenario, Scenario)
        return
    assert problems
    assert all(problem.file == str(FILE) for problem in problems), problems


def tokens() -> list[str]:
    """The format's keys and step kinds for libFuzzer's dictionary."""
    keys = fixtures.field_names(Header, ServerDecl, *STEP_KINDS.values())
    return [*(f"{key} = " for key in keys), *STEP_KINDS, "[[server]]", "[[step]]", *fixtures.TRICKY]
