"""``allworx-sim scenario run`` and the pytest plugin as CI runs them: real subprocesses, real reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
XSD = xmlschema.XMLSchema(REPO / "tests" / "data" / "junit.xsd")
STORY = """
title = "{title}"
start = "2014-01-01"

[[server]]
name = "hq"
model = "6x"
release = "7.0"
shipped = "2009-06-01"
users = 12

[[step]]
do = "upgrade"
server = "hq"
to = "8.0"
expect_refused = "{refused}"

[[step]]
do = "expect"
server = "hq"
release = "{release}"
refused = "MAINTENANCE_KEY_REQUIRED"
rule = "SWM-1"
records_intact = true
"""
GOOD = {"title": "stops at 7.1", "refused": "MAINTENANCE_KEY_REQUIRED", "release": "7.1"}
WRONG_FILE = "scenarios/b-wrong.toml"
WRONG_RELEASE = f'{WRONG_FILE}: step 2 (expect), field \'release\': expected "8.0", observed "7.1"'
WRONG = {"title": "wrongly expects 8.0", "refused": "DOWNGRADE_REFUSED", "release": "8.0"}


def sim(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``allworx-sim`` as a user would (through the interpreter running the tests)."""
    code = "import sys; from simulator.cli import main; sys.argv[0] = 'allworx-sim'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300, check=False)  # fmt: skip


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A scenarios/ folder with two passing files and one holding two wrong expectations."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "a-good.toml").write_text(STORY.format(**GOOD))
    (folder / "b-wrong.toml").write_text(STORY.format(**WRONG))
    (folder / "c-good.toml").write_text(STORY.format(**GOOD | {"title": "also stops at 7.1"}))
    return folder


def test_a_wrong_expectation_fails_naming_file_step_field_expected_and_observed(
    library: Path, env: dict[str, str]
) -> None:
    """One line per scenario, each wrong expectation under its scenario, exit 1, a valid JUnit report."""
    report = library.parent / "reports" / "scenarios.xml"
    proc = sim("scenario", "run", "scenarios", "--junit", str(report), env=env, cwd=library.parent)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    verdicts = [ln.split()[:2] for ln in lines if ln.startswith(("PASS", "FAIL"))]
    assert verdicts == [
        ["PASS", "scenarios/a-good.toml"],
        ["FAIL", WRONG_FILE],
        ["PASS", "scenarios/c-good.toml"],
    ]
    assert WRONG_RELEASE in proc.stdout
    refused = 'expected "DOWNGRADE_REFUSED", observed "MAINTENANCE_KEY_REQUIRED"'
    assert f"{WRONG_FILE}: step 1 (upgrade), field 'expect_refused': {refused}" in proc.stdout
    XSD.validate(report)
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    failed = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failed] == ["wrongly expects 8.0"]
    failure = failed[0].find("failure")
    assert failure is not None and failure.text is not None
    assert "2 expectations did not hold" in (failure.get("message") or "")
    assert 'field \'release\': expected "8.0", observed "7.1"' in failure.text


def test_json_output_carries_every_failure(library: Path, env: dict[str, str]) -> None:
    """``--json`` prints one document with each scenario's status and structured failures."""
    proc = sim("scenario", "run", str(library), "--json", env=env, cwd=library.parent)
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    assert (document["ok"], document["passed"], document["failed"], document["errors"]) == (False, 2, 1, 0)
    wrong = next(s for s in document["scenarios"] if s["path"].endswith("b-wrong.toml"))
    assert wrong["status"] == "failed" and wrong["steps_run"] == wrong["steps_total"] == 2
    assert {(f["step"], f["field"], f["expected"], f["observed"]) for f in wrong["failures"]} == {
        (1, "expect_refused", "DOWNGRADE_REFUSED", "MAINTENANCE_KEY_REQUIRED"),
        (2, "release", "8.0", "7.1"),
    }


def test_every_expectation_holding_exits_zero(library: Path, env: dict[str, str]) -> None:
    """A run whose expectations all hold exits 0 and its report has no failure."""
    (library / "b-wrong.toml").unlink()
    report = library.parent / "ok.xml"
    proc = sim(
        "scenario", "run", str(library), "--junit", str(report), "--jobs", "1", env=env, cwd=library.parent
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scenarios: 2 passed, 0 failed, 0 errors" in proc.stdout
    XSD.validate(report)
    assert ET.parse(report).getroot().get("failures") == "0"


def test_a_malformed_file_runs_nothing_and_reports_an_error(library: Path, env: dict[str, str]) -> None:
    """A malformed file: its problem on stderr (file, step, field), exit 1, a valid report with an error."""
    (library / "d-bad.toml").write_text(STORY.format(**GOOD).replace('to = "8.0"', "to = 8.0"))
    report = library.parent / "bad.xml"
    proc = sim("scenario", "run", str(library), "--junit", str(report), env=env, cwd=library.parent)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert (
        f"error: BAD_INPUT: {library / 'd-bad.toml'}: step 1 (upgrade), field 'to': expected a string"
        in proc.stderr
    )
    XSD.validate(report)
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None and (suite.get("errors"), suite.get("skipped")) == ("1", "3")


def test_the_junit_schema_rejects_what_ci_systems_would(library: Path, env: dict[str, str]) -> None:
    """The XSD used above is strict enough to matter: an unknown attribute or a bad count fails it."""
    report = library.parent / "r.xml"
    sim("scenario", "run", str(library), "--junit", str(report), env=env, cwd=library.parent)
    text = report.read_text()
    assert XSD.is_valid(text)
    assert not XSD.is_valid(text.replace("<testcase ", '<testcase file="x.toml" ', 1))
    assert not XSD.is_valid(text.replace('tests="3"', 'tests="three"', 1))


@pytest.mark.parametrize("explicit", [True, False], ids=["with -p", "by entry point"])
def test_pytest_collects_each_scenario_file_as_an_item(
    library: Path, env: dict[str, str], explicit: bool
) -> None:
    """``pytest scenarios/`` runs each file as a test; a failure shows the scenario's lines, no traceback."""
    plugin = ["-p", "simulator.scenario.pytest_plugin"] if explicit else []
    report = library.parent / "pytest.xml"
    args = [sys.executable, "-m", "pytest", *plugin, "scenarios", "-p", "no:cacheprovider", "-q",
            "--junitxml", str(report), "-c", os.devnull, "--rootdir", str(library.parent)]  # fmt: skip
    proc = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=library.parent, timeout=300, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 2 passed" in proc.stdout
    assert WRONG_RELEASE in proc.stdout
    assert "Traceback" not in proc.stdout
    assert ET.parse(report).getroot().find("testsuite") is not None
