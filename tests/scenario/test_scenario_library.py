"""The rules and the scenario library: the code's rule IDs are those docs/rules.md states, every domain
rule has a scenario, every library file passes, and every claim is checked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from common.reasons import DOMAIN_RULES, PRODUCT_RULES, Reason
from simulator.scenario.model import SERVER_CHECKS, Scenario
from simulator.scenario.results import ScenarioResult
from simulator.scenario.runner import discover, load_all, run_files

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "scenarios"
RULES_DOC = REPO / "docs" / "rules.md"
PRODUCT_CODE = ("common", "releases", "agent", "fleet", "simulator")
FILES = sorted(LIBRARY.glob("*.toml"))

# How an expectation evidences a rule when no refusal names it (rule = "X" is evidence for any rule).
EVIDENCE: dict[str, set[str]] = {
    "SEQ-1": {"steps"},
    "SEQ-2": set(),
    "DB-1": {"records_intact"},
    "DB-2": {"records_intact"},
    "SWM-1": set(),
    "SWM-2": {"maintenance"},
    "SWM-3": {"features", "records_intact", "users"},
    "SWM-4": {"maintenance", "maintenance_expires", "hardware_warranty_until"},
    "SWM-5": {"maintenance_expires", "hardware_warranty_until"},
    "SWM-6": {"features", "inactive_features"},
    "SWM-7": {"build"},
    "PHONE-1": {"phone_firmware"},
    "DOWN-1": set(),
    "REL-1": set(),
    "TRADE-1": {"catalog_number", "partner_price", "credit"},
    "TRADE-2": {"maintenance_expires", "hardware_warranty_until"},
    "TRADE-3": {"penalty", "status"},
    "TRADE-4": {"free_user_key", "user_key"},
    "XFER-1": {"features", "transfer_fee", "user_key"},
    "XFER-2": {"features"},
    "XFER-3": {"user_key"},
    "SITE-1": {"site_target", "needs_maintenance_key"},
    "MIG-1": {"users"},
    "MIG-2": set(),
}
# A step expecting a refusal with one of these codes evidences the code's rule.
CODE_RULES = {
    "SEQUENTIAL_STEP_REQUIRED": "SEQ-1",
    "MUST_INSTALL_7_1_FIRST": "SEQ-2",
    "MAINTENANCE_KEY_REQUIRED": "SWM-1",
    "MAINTENANCE_KEY_EXPIRED": "SWM-2",
    "KEY_SERIAL_MISMATCH": "SWM-2",
    "KEY_SIGNATURE_INVALID": "SWM-2",
    "BUNDLE_WINDOW_CLOSED": "SWM-5",
    "DOWNGRADE_REFUSED": "DOWN-1",
    "NOT_YET_RELEASED": "REL-1",
    "MODEL_UNSUPPORTED": "REL-1",
    "SERVER_NOT_FUNCTIONAL": "TRADE-1",
    "MIGRATE_REQUIRES_8_0": "MIG-1",
    "TEMPORARY_KEY_CEILING": "MIG-2",
}
# The vendor documents' worked examples, each an end-to-end story in the library.
SEED_STORIES = {
    "7.6 goes through 7.7 before 8.0": "seq-1-one-release-at-a-time.toml",
    "a 2010 server in 2013 needs one anytime licence": "story-2010-server-in-2013-one-anytime-licence.toml",
    "24x traded for a 731 with transfer gets T1": "story-24x-to-731-gets-t1.toml",
    "6x with 60 user keys traded for a 731 gets 51-100": "story-6x-60-users-to-731-gets-51-100.toml",
    "multi-site aligns to the new Connect server": "story-multi-site-aligns-to-connect.toml",
    "Migrate needs 8.0 on both ends": "story-migrate-needs-8-0-on-both-ends.toml",
}


def documented_rule_ids() -> list[str]:
    """The first column of every table in docs/rules.md whose header starts ``| ID | rule |``."""
    ids: list[str] = []
    in_rules = False
    for line in RULES_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| ID | rule |"):
            in_rules = True
        elif not line.startswith("|"):
            in_rules = False
        elif in_rules and not line.startswith("|---"):
            ids.append(line.split("|")[1].strip())
    return ids


def cited_rule_ids() -> dict[str, str]:
    """Rule IDs the product code cites (in a Refusal, a ``rule=`` field or a ``# rule`` comment) -> a file."""
    pattern = re.compile(
        r'Refusal\(\s*[\w.]+(?:\s+or\s+[\w.]+)?,\s*"([^"]*)"'
        r'|\brule="([^"]*)"'
        r"|#\s*rules?\s+([A-Z]+-\d+)"
        r'|_refuse\([^()]*?,\s*"([A-Z][A-Z0-9-]*)",'
    )
    cited: dict[str, str] = {}
    for package in PRODUCT_CODE:
        for path in sorted((REPO / package).rglob("*.py")):
            for match in pattern.finditer(path.read_text(encoding="utf-8")):
                cited.setdefault(next(g for g in match.groups() if g), str(path.relative_to(REPO)))
    return cited


def raw(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def expects(path: Path) -> list[dict[str, Any]]:
    return [s for s in raw(path).get("step", []) if s.get("do") == "expect"]


@pytest.fixture(scope="module")
def library() -> dict[str, ScenarioResult]:
    """Every library file, validated, then run once (in parallel worker processes)."""
    scenarios: list[Scenario] = load_all(discover([LIBRARY]))
    return {Path(r.path).name: r for r in run_files(scenarios, jobs=2)}


def test_the_rules_the_code_knows_are_the_rules_docs_rules_md_states() -> None:
    """common/reasons.py's rule IDs and the IDs docs/rules.md's rule tables state are the same list."""
    documented = documented_rule_ids()
    assert len(documented) == len(set(documented)), "a rule ID is stated twice in docs/rules.md"
    assert sorted(documented) == sorted((*DOMAIN_RULES, *PRODUCT_RULES))


def test_every_rule_the_product_code_cites_is_a_known_rule() -> None:
    """No refusal, ``rule=`` field or ``# rule`` comment in the product cites an ID outside the rules."""
    unknown = {
        rule: path for rule, path in cited_rule_ids().items() if rule not in (*DOMAIN_RULES, *PRODUCT_RULES)
    }
    assert unknown == {}


def test_every_reason_code_is_documented_in_docs_rules_md() -> None:
    """docs/rules.md names every reason code of common/reasons.py, and no code the enum lacks."""
    text = RULES_DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Z][A-Z0-9_]{3,})`", text))
    assert named == {r.value for r in Reason}


def test_every_domain_rule_is_exercised_by_a_scenario() -> None:
    """Every domain rule ID is declared (``rules``) or asserted (``rule =``) by some library file."""
    covered: set[str] = set()
    for path in FILES:
        covered |= set(raw(path).get("rules", []))
        covered |= {e["rule"] for e in expects(path) if "rule" in e}
    assert set(DOMAIN_RULES) - covered == set()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_claimed_rule_is_checked_by_an_expectation(path: Path) -> None:
    """A rule a file claims is named by an expectation's ``rule`` or checked through a field evidencing it."""
    checks = expects(path)
    asserted = {e["rule"] for e in checks if "rule" in e}
    asserted |= {CODE_RULES.get(s.get("expect_refused", ""), "") for s in raw(path).get("step", [])}
    fields = {name for e in checks for name in e}
    for rule in raw(path).get("rules", []):
        assert rule in asserted or EVIDENCE[rule] & fields, (
            f"{path.name} claims {rule} but no expectation checks it"
        )


def test_evidence_fields_are_real_expect_fields() -> None:
    """The evidence table names only fields an ``expect`` can check."""
    from simulator.scenario.model import ORDER_CHECKS

    assert set().union(*EVIDENCE.values()) <= set(SERVER_CHECKS) | set(ORDER_CHECKS)
    assert set(EVIDENCE) == set(DOMAIN_RULES)


@pytest.mark.parametrize("story", SEED_STORIES)
def test_the_vendor_documents_worked_examples_are_stories(story: str) -> None:
    """Each worked example of the vendor's documents is a library file with expectations."""
    path = LIBRARY / SEED_STORIES[story]
    assert path.is_file(), story
    assert expects(path), story


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_library_scenario_passes(name: str, library: dict[str, ScenarioResult]) -> None:
    """Every expectation of every library scenario holds on fresh virtual servers."""
    result = library[name]
    assert result.passed, "\n".join(result.messages())
    assert result.steps_run == result.steps_total


# ---------------------------------------------------------------------------- the runner's semantics

HEAD = """
title = "t"
start = "2016-06-06"

[[server]]
name = "old"
model = "6x"
release = "8.0"
shipped = "2015-10-01"
"""


def run_text(tmp_path: Path, text: str) -> ScenarioResult:
    """Run scenario text written to a file."""
    from simulator.scenario.parse import parse_scenario
    from simulator.scenario.runner import run_scenario

    path = tmp_path / "s.toml"
    path.write_text(text)
    return run_scenario(parse_scenario(text, path))


def test_a_step_on_a_server_that_a_refused_order_never_made_is_an_error(tmp_path: Path) -> None:
    """The scenario ends as an error naming the step and the field; later steps do not run."""
    result = run_text(
        tmp_path,
        HEAD
        + """
[[step]]
do = "order"
type = "trade-in"
server = "old"
new_model = "320"
as = "new"

[[step]]
do = "upgrade"
server = "new"
to = "8.1"

[[step]]
do = "expect"
server = "old"
release = "8.0"
""",
    )
    assert result.status == "error"
    assert result.error is not None and "step 2 (upgrade), field 'server'" in result.error
    assert "refused" in result.error and result.steps_run == 1


def test_a_power_cut_the_request_never_reaches_is_a_failure(tmp_path: Path) -> None:
    """A refused request hits no crash point: the asked-for cut is reported, not silently skipped."""
    result = run_text(
        tmp_path,
        HEAD
        + """
[[step]]
do = "install"
server = "old"
release = "9.0"
power_cut = "random"
expect_refused = "NOT_YET_RELEASED"
""",
    )
    assert [(f.step, f.field, f.expected, f.observed) for f in result.failures] == [
        (1, "power_cut", "random", "never reached")
    ]


def test_a_failed_expectation_does_not_stop_the_scenario(tmp_path: Path) -> None:
    """Every expectation is checked, so one run shows all that did not hold."""
    result = run_text(
        tmp_path,
        HEAD
        + """
[[step]]
do = "expect"
server = "old"
release = "7.0"

[[step]]
do = "expect"
server = "old"
users = 41
maintenance = "valid"
""",
    )
    assert [(f.step, f.field, f.observed) for f in result.failures] == [
        (1, "release", "8.0"),
        (2, "users", 40),
        (2, "maintenance", "expired"),
    ]
    assert result.steps_run == 2 and result.status == "failed"
