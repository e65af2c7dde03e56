"""Scenario files: typed parsing, and every kind of malformed file refused with file, step and field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulator.cli import main
from simulator.scenario import model as m
from simulator.scenario.model import ScenarioFileError
from simulator.scenario.parse import parse_scenario

HEAD = """
title = "a scenario"
start = "2014-01-01"

[[server]]
name = "hq"
model = "6x"
release = "7.0"
shipped = "2009-06-01"
"""
EXPECT = """
[[step]]
do = "expect"
server = "hq"
release = "7.1"
"""


@dataclass(frozen=True)
class Bad:
    """A malformed scenario and the fragments its error must contain."""

    name: str
    text: str
    fragments: tuple[str, ...]


def step(body: str) -> str:
    return HEAD + "\n[[step]]\n" + body.strip() + "\n" + EXPECT


BAD = [
    Bad("bad TOML", 'title = "x"\nstart = \n', ("not valid TOML", "line 2")),
    Bad(
        "unknown top-level field",
        HEAD.replace("[[server]]", 'colour = "red"\n[[server]]') + EXPECT,
        ("field 'colour'", "unknown field"),
    ),
    Bad(
        "unknown step field",
        step('do = "upgrade"\nserver = "hq"\nto = "7.1"\ncolour = "red"'),
        ("step 1 (upgrade)", "field 'colour'", "unknown field"),
    ),
    Bad("unknown server field", HEAD + "colour = 1\n" + EXPECT, ("server 1 ('hq')", "field 'colour'")),
    Bad(
        "release given as a number",
        step('do = "upgrade"\nserver = "hq"\nto = 8.0'),
        ("step 1 (upgrade)", "field 'to'", "expected a string", "the number 8.0", "quote it"),
    ),
    Bad(
        "users given as text",
        HEAD.replace('shipped = "2009-06-01"', 'shipped = "2009-06-01"\nusers = "forty"') + EXPECT,
        ("server 1 ('hq')", "field 'users'", "expected a whole number"),
    ),
    Bad(
        "boolean given as text",
        HEAD + '\n[[step]]\ndo = "expect"\nserver = "hq"\nrecords_intact = "yes"\n',
        ("step 1 (expect)", "field 'records_intact'", "true or false"),
    ),
    Bad(
        "not a date",
        HEAD.replace('start = "2014-01-01"', 'start = "2014-13-01"') + EXPECT,
        ("field 'start'", "expected a date (YYYY-MM-DD)", "'2014-13-01'"),
    ),
    Bad(
        "missing required field",
        step('do = "upgrade"\nserver = "hq"'),
        ("step 1 (upgrade)", "field 'to'", "is required"),
    ),
    Bad("missing title", HEAD.replace('title = "a scenario"', "") + EXPECT, ("field 'title'", "is required")),
    Bad(
        "undeclared server",
        step('do = "upgrade"\nserver = "branch"\nto = "7.1"'),
        ("step 1 (upgrade)", "field 'server'", "server 'branch' is not declared"),
    ),
    Bad(
        "undeclared server in an expect",
        HEAD + '\n[[step]]\ndo = "expect"\nserver = "branch"\nrelease = "7.0"\n',
        ("step 1 (expect)", "field 'server'", "'branch' is not declared"),
    ),
    Bad(
        "undeclared for_server",
        step('do = "issue-key"\nserver = "hq"\nfor_server = "x"\nkind = "feature"\nfeature = "T1"'),
        ("step 1 (issue-key)", "field 'for_server'"),
    ),
    Bad(
        "unknown step kind",
        step('do = "reboot"\nserver = "hq"'),
        ("step 1", "field 'do'", "unknown step kind 'reboot'"),
    ),
    Bad("missing step kind", step('server = "hq"'), ("step 1", "field 'do'", "is required")),
    Bad(
        "unknown reason code in expect_refused",
        step('do = "upgrade"\nserver = "hq"\nto = "7.1"\nexpect_refused = "NO_SUCH_CODE"'),
        ("step 1 (upgrade)", "field 'expect_refused'", "unknown reason code 'NO_SUCH_CODE'"),
    ),
    Bad(
        "unknown reason code in refused",
        HEAD + '\n[[step]]\ndo = "expect"\nserver = "hq"\nrefused = "NOPE"\n',
        ("step 1 (expect)", "field 'refused'", "unknown reason code 'NOPE'"),
    ),
    Bad(
        "unknown rule ID",
        HEAD + '\n[[step]]\ndo = "expect"\nserver = "hq"\nrule = "SWM-9"\n',
        ("step 1 (expect)", "field 'rule'", "unknown rule ID 'SWM-9'"),
    ),
    Bad(
        "unknown rule ID in rules",
        HEAD.replace("[[server]]", 'rules = ["SEQ-9"]\n[[server]]') + EXPECT,
        ("field 'rules'", "unknown rule ID 'SEQ-9'"),
    ),
    Bad(
        "dates out of order",
        step('do = "advance"\nto = "2013-06-01"'),
        ("step 1 (advance)", "field 'to'", "dates out of order", "2013-06-01", "2014-01-01"),
    ),
    Bad(
        "dates out of order after days",
        step('do = "advance"\ndays = 30\n[[step]]\ndo = "advance"\nto = "2014-01-15"'),
        ("step 2 (advance)", "field 'to'", "dates out of order", "2014-01-31"),
    ),
    Bad(
        "advance past the calendar's last day",
        step('do = "advance"\ndays = 10000000000'),
        ("step 1 (advance)", "field 'days'", "goes past 9999-12-31"),
    ),
    Bad(
        "advance with both to and days",
        step('do = "advance"\nto = "2014-02-01"\ndays = 3'),
        ("step 1 (advance)", "exactly one of 'to'"),
    ),
    Bad(
        "expect_refused on a step never refused",
        step('do = "advance"\ndays = 1\nexpect_refused = "NOT_YET_RELEASED"'),
        ("step 1 (advance)", "field 'expect_refused'", "never refused"),
    ),
    Bad(
        "expect naming neither server nor order",
        HEAD + '\n[[step]]\ndo = "expect"\nrelease = "7.1"\n',
        ("step 1 (expect)", "exactly one of 'server'"),
    ),
    Bad(
        "order field checked on a server",
        HEAD + '\n[[step]]\ndo = "expect"\nserver = "hq"\npenalty = 0\n',
        ("step 1 (expect)", "field 'penalty'", "not something an expect on a server checks"),
    ),
    Bad(
        "expect on an order never placed",
        HEAD + '\n[[step]]\ndo = "expect"\norder = "o1"\npenalty = 0\n',
        ("step 1 (expect)", "field 'order'", "no order named 'o1'"),
    ),
    Bad(
        "install of a key never issued",
        step('do = "install-key"\nserver = "hq"\nkey = "k1"'),
        ("step 1 (install-key)", "field 'key'", "no key named 'k1'"),
    ),
    Bad(
        "revocation of a key never issued",
        step('do = "revoke-key"\nkey = "k1"'),
        ("step 1 (revoke-key)", "field 'key'", "no key named 'k1'"),
    ),
    Bad(
        "revocation refused is not a thing",
        step('do = "issue-key"\nserver = "hq"\nkind = "maintenance"\nplan = "anytime-1y"\nas = "k1"')
        + '\n[[step]]\ndo = "revoke-key"\nkey = "k1"\nexpect_refused = "KEY_REVOKED"\n',
        ("step 3 (revoke-key)", "field 'expect_refused'", "never refused"),
    ),
    Bad(
        "tampering with a release that does not exist",
        step('do = "tamper-image"\nrelease = "7.8"'),
        ("step 1 (tamper-image)", "field 'release'", "unknown release or patch build '7.8'"),
    ),
    Bad(
        "tampering in an unknown way",
        step('do = "tamper-image"\nrelease = "7.3"\nhow = "shred"'),
        ("step 1 (tamper-image)", "field 'how'"),
    ),
    Bad(
        "key field for another kind",
        step('do = "issue-key"\nserver = "hq"\nkind = "feature"\nfeature = "T1"\nplan = "anytime-1y"'),
        ("step 1 (issue-key)", "field 'plan'"),
    ),
    Bad(
        "temporary key without ceiling",
        step('do = "issue-key"\nserver = "hq"\nkind = "maintenance"\nplan = "temporary"'),
        ("step 1 (issue-key)", "field 'ceiling'"),
    ),
    Bad(
        "unknown plan",
        step('do = "issue-key"\nserver = "hq"\nkind = "maintenance"\nplan = "forever"'),
        ("step 1 (issue-key)", "field 'plan'", "one of 'ship-90d'"),
    ),
    Bad(
        "unknown crash point",
        step('do = "upgrade"\nserver = "hq"\nto = "7.1"\npower_cut = "kettle"'),
        ("step 1 (upgrade)", "field 'power_cut'", "crash point"),
    ),
    Bad(
        "return of a server never traded",
        step('do = "return"\nserver = "hq"'),
        ("step 1 (return)", "field 'server'", "not the old server of an earlier order"),
    ),
    Bad(
        "site check of an unknown network",
        step('do = "site-check"\nnetwork = "acme"'),
        ("step 1 (site-check)", "field 'network'", "no server is declared in network 'acme'"),
    ),
    Bad(
        "unknown model",
        HEAD.replace('model = "6x"', 'model = "9x"') + EXPECT,
        ("server 1 ('hq')", "field 'model'"),
    ),
    Bad(
        "model that cannot run the release",
        HEAD.replace('model = "6x"', 'model = "731"') + EXPECT,
        ("server 1 ('hq')", "field 'release'", "cannot run release 7.0"),
    ),
    Bad(
        "server declared twice", HEAD + HEAD.split("\n", 4)[4] + EXPECT, ("server 2 ('hq')", "declared twice")
    ),
    Bad(
        "servers not an array of tables",
        'title = "t"\nstart = 2014-01-01\nserver = "hq"\n' + EXPECT,
        ("field 'server'", "array of tables"),
    ),
    Bad(
        "a scenario that checks nothing",
        HEAD + '\n[[step]]\ndo = "upgrade"\nserver = "hq"\nto = "7.1"\n',
        ("field 'step'", "checks nothing"),
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_malformed_scenario_is_refused_naming_file_step_and_field(case: Bad, tmp_path: Path) -> None:
    """Each malformed file raises ScenarioFileError whose message names the file, the step and the field."""
    path = tmp_path / "story.toml"
    with pytest.raises(ScenarioFileError) as caught:
        parse_scenario(case.text, path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_malformed_scenario_through_the_cli_is_one_clear_error_and_nothing_runs(
    case: Bad, tmp_path: Path
) -> None:
    """``allworx-sim scenario run`` prints the problems on stderr, exits 1 and runs nothing: no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text(case.text)
    good = tmp_path / "good.toml"
    good.write_text(step('do = "upgrade"\nserver = "hq"\nto = "7.1"'))
    result = CliRunner().invoke(main, ["scenario", "run", str(bad), str(good)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: BAD_INPUT: {bad}" in result.stderr
    assert (
        "PASS" not in result.stdout and str(good) not in result.stderr
    )  # nothing ran, the good file is fine


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Several problems in one file are all listed."""
    text = step('do = "upgrade"\nserver = "branch"\nto = "7.1"\nexpect_refused = "NOPE"')
    with pytest.raises(ScenarioFileError) as caught:
        parse_scenario(text, tmp_path / "x.toml")
    fields = [p.field for p in caught.value.problems]
    assert sorted(fields) == ["expect_refused", "server"]


def test_a_valid_file_parses_into_typed_steps(tmp_path: Path) -> None:
    """Dates become dates, ``as``/``from`` map to Python names, defaults fill the rest."""
    text = (
        HEAD.replace('name = "hq"', 'name = "hq"\nnetwork = "acme"')
        + """
[[step]]
do = "issue-key"
server = "hq"
kind = "maintenance"
plan = "anytime-1y"
install = false
as = "k1"

[[step]]
do = "install-key"
server = "hq"
key = "k1"
expect_refused = "none"

[[step]]
do = "advance"
to = 2014-02-01

[[step]]
do = "order"
type = "trade-in"
server = "hq"
new_model = "731"
key_transfer = true
as = "new"

[[step]]
do = "migrate"
from = "hq"
to = "new"

[[step]]
do = "site-check"
network = "acme"

[[step]]
do = "expect"
order = "new"
penalty = 0

[[step]]
do = "expect"
server = "new"
features = ["T1"]
maintenance_expires = "none"
"""
    )
    scenario = parse_scenario(text, tmp_path / "ok.toml")
    assert scenario.start == date(2014, 1, 1)
    assert scenario.servers[0].shipped == date(2009, 6, 1) and scenario.servers[0].network == "acme"
    kinds = [type(s) for s in scenario.steps]
    assert kinds == [m.IssueKey, m.InstallKey, m.Advance, m.Order, m.Migrate, m.SiteCheck, m.Expect, m.Expect]
    issue, _, advance, order, migrate, *_, last = scenario.steps
    assert (
        isinstance(issue, m.IssueKey) and issue.name == "k1" and issue.install is False and not issue.tamper
    )
    assert isinstance(advance, m.Advance) and advance.to == date(2014, 2, 1)
    assert isinstance(order, m.Order) and order.name == "new" and order.functional is True
    assert isinstance(migrate, m.Migrate) and (migrate.source, migrate.to) == ("hq", "new")
    assert isinstance(last, m.Expect) and last.features == ["T1"] and last.maintenance_expires == "none"
    assert [s.index for s in scenario.steps] == list(range(1, 9))


def test_every_step_kind_is_documented(tmp_path: Path) -> None:
    """docs/scenarios.md names every step kind and every expect field (the format is a public contract)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    for kind in m.STEP_KINDS:
        assert f"`{kind}`" in doc, kind
    for name in (*m.SERVER_CHECKS, *m.ORDER_CHECKS):
        assert f"`{name}`" in doc, name
