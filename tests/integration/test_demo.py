"""The README's demo, run as a subprocess on a small fleet: it finishes and its report adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_small_fleet_report_adds_up(tmp_path: Path) -> None:
    """The demo off a terminal prints plain lines and a report counting every server exactly once."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from simulator.cli import main; main()",
            "demo",
            "--dir",
            str(tmp_path),
            "--servers",
            "30",
            "--workers",
            "0",
            "--speed",
            "3000",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "campaign demo:" in done.stdout and "\x1b[" not in done.stdout  # plain lines, no terminal codes
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["servers"] == 30 and report["accounted"]
    assert sum(report["outcomes"].values()) == 30
    assert len({s["serial"] for s in report["per_server"]}) == 30
    assert sum(report["releases_before"].values()) == sum(report["releases_after"].values()) == 30
    assert report["outcomes"]["succeeded"] > 0
    for member in report["per_server"]:  # the steps the controller saw are the steps committed
        (folder,) = (tmp_path / "fleet" / "servers").glob(f"*-{member['serial']}")
        result = folder / "last_result.json"
        done_steps = json.loads(result.read_text())["steps"] if result.exists() else []
        committed = sum(1 for step in done_steps if step["outcome"] == "committed")
        assert member["steps"] == committed, (member, done_steps)
    reasons = {(r["reason"], r["rule"]) for r in report["refusals"]}
    assert ("MAINTENANCE_KEY_EXPIRED", "SWM-2") in reasons, "expired keys refuse under SWM-2"
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<svg" in html and "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert str(tmp_path / "report" / "report.html") in done.stdout


def test_demo_default_fleet_outcomes_are_pinned(tmp_path: Path) -> None:
    """The README's demo (200 servers, its own defaults) ends with the same outcome for every server."""
    done = subprocess.run(
        [sys.executable, "-c", "from simulator.cli import main; main()", "demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    outcomes = {name: count for name, count in report["outcomes"].items() if count}
    assert outcomes == {"succeeded": 140, "rejected": 51, "failed": 2, "current": 3, "offline": 4}
