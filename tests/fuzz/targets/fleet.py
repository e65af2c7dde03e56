"""Fleet descriptions (simulator/fleet/spec.py ``parse_toml``): ``allworx-sim fleet create --config``.

Documented: parsing raises only FleetFileError, whose every problem names the file.
"""

from __future__ import annotations

from simulator.fleet.spec import FleetFileError, FleetSpec, parse_toml
from tests.fuzz import fixtures

FILE = "fleet.toml"
SEEDS = (
    '[fleet]\nservers = 20\nseed = 3\nnow = 2024-03-01\nsites = ["hq", "east"]\n',
    "[fleet]\nservers = 5\nmultisite = 0.5\nfailing = 0.1\noffline = 0.0\n"
    '[fleet.models]\n"6x" = 2\n"10k" = 1\n[fleet.releases]\n"7.0" = 1\n"8.2" = 3\n'
    "[fleet.keys]\nanytime = 3\nexpired = 1\nnone = 1\n",
    "[fleet]\n",
)
FORMAT, PREFIX = "toml", 0  # the structured mutator reads inputs after PREFIX bytes as TOML


def seeds() -> list[bytes]:
    """Small fleet descriptions using every key."""
    return [seed.encode() for seed in SEEDS]


def check(data: bytes) -> None:
    """Parse ``data`` as a fleet description (text that is not UTF-8 is refused before parsing)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        spec = parse_toml(text, FILE)
    except FleetFileError as exc:
        problems = exc.problems
    else:
        assert isinstance(spec, FleetSpec)
        spec.digest()
        return
    assert problems
    assert all(problem.file == FILE for problem in problems), problems


def tokens() -> list[str]:
    """The format's keys for libFuzzer's dictionary."""
    keys = [f"{key} = " for key in fixtures.field_names(FleetSpec)]
    return [*keys, "[fleet]", "[fleet.models]", "[fleet.releases]", "[fleet.keys]", *fixtures.TRICKY]
