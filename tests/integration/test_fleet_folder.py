"""``allworx-sim fleet`` and ``allworx-fleet campaign`` given bad input: one line, a reason, no traceback.

And a fleet folder another live run hosts is refused, not rebuilt under that run's agents.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.broker import free_port
from simulator.fleet.build import in_use

pytestmark = pytest.mark.integration


def run(module: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run a console script's ``main`` in a subprocess, as a user would."""
    env = {**os.environ, "ALLWORX_SIM_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", f"from {module} import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], reason: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith(f"error: {reason}: "), proc.stderr


def test_a_fleet_folder_in_use_is_refused_and_left_as_it_is(tmp_path: Path, sim_home: Path) -> None:
    """A second run on a folder a live run holds exits with FLEET_IN_USE and rebuilds nothing."""
    root = tmp_path / "fleet"
    built = run("simulator.cli", "fleet", "--dir", str(root), "--servers", "3", "--build-only", home=sim_home)
    assert built.returncode == 0, built.stderr
    before = {p: p.stat().st_mtime_ns for p in (root / "servers").rglob("*")}
    with in_use(root):  # a live run holds it (this process)
        second = run(
            "simulator.cli", "fleet", "--dir", str(root), "--servers", "5", "--build-only", home=sim_home
        )
    one_line_error(second, "FLEET_IN_USE")
    assert f"pid {os.getpid()}" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in (root / "servers").rglob("*")} == before
    again = run("simulator.cli", "fleet", "--dir", str(root), "--servers", "3", "--build-only", home=sim_home)
    assert again.returncode == 0, again.stderr  # released with its holder


def test_fleet_bad_folder_or_description_is_one_line(tmp_path: Path, sim_home: Path) -> None:
    """An unusable folder or an unknown release in the description: BAD_INPUT-style errors, exit 1."""
    unusable = tmp_path / "file"
    unusable.write_text("not a folder\n")
    nested = str(unusable / "f")
    proc = run("simulator.cli", "fleet", "--dir", nested, "--servers", "2", home=sim_home)
    one_line_error(proc, "BAD_INPUT")
    one_line_error(
        run(
            "simulator.cli",
            "fleet",
            "--dir",
            str(tmp_path / "f"),
            "--servers",
            "2",
            "--releases",
            "9.9=1",
            "--build-only",
            home=sim_home,
        ),
        "BAD_INPUT",
    )


@pytest.mark.parametrize("action", ["status", "pause", "resume", "abort"])
def test_campaign_commands_without_a_broker_say_so_in_one_line(action: str, sim_home: Path) -> None:
    """No broker listening: BROKER_UNAVAILABLE, exit 1, no traceback."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    proc = run("fleet.cli", "campaign", action, "--broker", url, "--id", "c1", home=sim_home)
    one_line_error(proc, "BROKER_UNAVAILABLE")
