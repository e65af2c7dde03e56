"""Fleet descriptions (``allworx-sim fleet --config`` TOML): loaded as written, or refused naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

import simulator.fleet.spec as spec_module
from simulator.cli import main
from simulator.fleet.spec import FleetFileError, FleetSpec, expand, load_toml, parse_toml

EXAMPLE = """
[fleet]
seed = 11
now = 2023-06-01
servers = 40
sites = ["hq", "east"]
multisite = 0
failing = 0.1
offline = 0
[fleet.models]
"6x" = 4
"731" = 1
[fleet.releases]
"7.0" = 2
"8.2" = 1
[fleet.keys]
anytime = 8
none = 2
"""


def test_the_documented_example_loads_as_written() -> None:
    """The TOML form in the module's docstring loads, every key with the value written."""
    doc = spec_module.__doc__ or ""
    block = doc.split("TOML form", 1)[1].split("::", 1)[1]
    text = "\n".join(line[4:] for line in block.splitlines() if line.startswith("    ") or not line.strip())
    spec = parse_toml(text.split("\n\n\n")[0], "doc")
    assert spec.seed == 7
    assert spec.now == date(2024, 3, 1)
    assert spec.sites == ("hq", "east", "west", "north")
    assert spec.models == {"6x": 4.0, "731": 1.0}
    assert spec.keys == {"anytime": 8.0, "expired": 1.0, "none": 1.0}


def test_a_described_fleet_keeps_its_digest(tmp_path: Path) -> None:
    """Descriptions have these digests (a fleet folder built from one is reused only while it matches)."""
    path = tmp_path / "fleet.toml"
    path.write_text(EXAMPLE)
    assert FleetSpec().digest() == "f5e719e1b454a67a"
    assert load_toml(path).digest() == "0b51e22a8664e6ec"
    assert load_toml(path, servers=5).digest() == "984889a561523be8"


def test_a_flag_replaces_the_files_value_even_a_bad_one(tmp_path: Path) -> None:
    """``--servers`` over a file's ``servers = 0`` builds the flag's count: the flag replaces the value."""
    path = tmp_path / "fleet.toml"
    path.write_text("[fleet]\nservers = 0\n")
    assert load_toml(path, servers=3).servers == 3
    assert len(expand(load_toml(path, servers=3))) == 3


@dataclass(frozen=True)
class Bad:
    """A malformed fleet description and what its error must say."""

    name: str
    text: str
    field: str | None
    fragments: tuple[str, ...]


BAD = [
    Bad("no [fleet] table", "servers = 3\n", None, ("no [fleet] table", "found: servers")),
    Bad("an empty file", "", None, ("no [fleet] table", "the file is empty")),
    Bad("not TOML", "[fleet\n", None, ("not valid TOML", "line 1")),
    Bad("[fleet] not a table", "fleet = 3\n", "fleet", ("expected a table", "the number 3")),
    Bad("unknown key", "[fleet]\nserver = 300\n", "fleet.server", ("unknown field", "servers")),
    Bad("count as text", '[fleet]\nservers = "x"\n', "fleet.servers", ("expected a whole number", "'x'")),
    Bad("count as a fraction", "[fleet]\nservers = 2.5\n", "fleet.servers", ("whole number", "2.5")),
    Bad("no server", "[fleet]\nservers = 0\n", "fleet.servers", ("must be at least 1",)),
    Bad("seed as a boolean", "[fleet]\nseed = true\n", "fleet.seed", ("expected a whole number", "true")),
    Bad("a date-time", "[fleet]\nnow = 2024-01-01T00:00:00\n", "fleet.now", ("a date (YYYY-MM-DD)",)),
    Bad("not a date", '[fleet]\nnow = "bad"\n', "fleet.now", ("a date (YYYY-MM-DD)", "'bad'")),
    Bad("sites as one string", '[fleet]\nsites = "abc"\n', "fleet.sites", ("a list of strings", "'abc'")),
    Bad("no site", "[fleet]\nsites = []\n", "fleet.sites", ("at least one site",)),
    Bad("share above 1", "[fleet]\nmultisite = 2\n", "fleet.multisite", ("share between 0 and 1", "2")),
    Bad("share not a number", '[fleet]\nfailing = "1%"\n', "fleet.failing", ("expected a number", "'1%'")),
    Bad("weights not a table", "[fleet]\nmodels = 3\n", "fleet.models", ("a table of numbers",)),
    Bad(
        "weight as text",
        '[fleet.releases]\n"7.0" = "two"\n',
        'fleet.releases."7.0"',
        ("expected a number", "'two'"),
    ),
    Bad("weight as a boolean", '[fleet.models]\n"6x" = true\n', "fleet.models.6x", ("a number", "true")),
    Bad("all weights zero", '[fleet.models]\n"6x" = 0\n', "fleet.models", ("not all zero",)),
    Bad(
        "weights past a float",
        '[fleet.models]\n"6x" = 1e308\n"731" = 1e308\n',
        "fleet.models",
        ("too large",),
    ),
    Bad("unknown key kind", "[fleet.keys]\nweird = 1\n", "fleet.keys", ("unknown key kind 'weird'",)),
]


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_a_malformed_description_is_refused_naming_file_and_key(case: Bad) -> None:
    """Each malformed description raises FleetFileError naming the file, the key and the problem."""
    with pytest.raises(FleetFileError) as caught:
        parse_toml(case.text, "fleet.toml")
    (problem,) = caught.value.problems
    assert problem.file == "fleet.toml"
    assert problem.field == case.field
    for fragment in case.fragments:
        assert fragment in problem.message, f"{fragment!r} not in {problem.message!r}"


def test_every_problem_of_a_description_is_reported_at_once() -> None:
    """Several bad keys are all listed."""
    with pytest.raises(FleetFileError) as caught:
        parse_toml('[fleet]\nservers = "x"\ncolour = 1\n[fleet.models]\n"6x" = "a"\n', "fleet.toml")
    assert sorted(p.field or "" for p in caught.value.problems) == [
        "fleet.colour",
        "fleet.models.6x",
        "fleet.servers",
    ]


def test_a_bad_flag_is_named_as_the_flag(tmp_path: Path) -> None:
    """A value out of range on the command line names the flag, not the file."""
    path = tmp_path / "fleet.toml"
    path.write_text("[fleet]\nservers = 3\n")
    with pytest.raises(FleetFileError) as caught:
        load_toml(path, multisite=2.0)
    assert str(caught.value) == "command line: field '--multisite': must be a share between 0 and 1, got 2"


def test_a_file_without_a_fleet_table_builds_nothing(tmp_path: Path) -> None:
    """``allworx-sim fleet --config`` on a file without ``[fleet]``: one BAD_INPUT line, exit 1, no fleet."""
    config = tmp_path / "fleet.toml"
    config.write_text("servers = 3\n")
    root = tmp_path / "fleet"
    result = CliRunner().invoke(main, ["fleet", "--dir", str(root), "--config", str(config), "--build-only"])
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: BAD_INPUT: {config}: no [fleet] table: " + (
        "a fleet description's keys go under [fleet] (found: servers)\n"
    )
    assert not root.exists()


def test_each_problem_is_its_own_error_line(tmp_path: Path) -> None:
    """Several problems: one ``error: BAD_INPUT: FILE: field ...`` line each, no traceback."""
    config = tmp_path / "fleet.toml"
    config.write_text('[fleet]\nservers = "x"\nsites = "abc"\n')
    result = CliRunner().invoke(main, ["fleet", "--dir", str(tmp_path / "f"), "--config", str(config)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith(f"error: BAD_INPUT: {config}: field 'fleet."), line
