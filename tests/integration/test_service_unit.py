"""The shipped systemd unit passes ``systemd-analyze verify``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "allworx-agent.service"
INSTALLED_AS = "/usr/local/bin/allworx-agent"  # where the unit expects `pip install` to put the agent


def test_unit_file_verifies(tmp_path: Path) -> None:
    """The unit verifies, with ExecStart pointing at where this machine installed the agent."""
    analyze, agent = shutil.which("systemd-analyze"), shutil.which("allworx-agent")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed, and CI must verify the unit")
        pytest.skip("systemd-analyze is not installed")
    assert agent is not None, "allworx-agent is not on PATH"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_AS} run --config " in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED_AS, agent))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == ""


def test_unit_is_hardened_and_speaks_notify() -> None:
    """The unit is Type=notify with a watchdog, restarts on failure, and runs confined."""
    lines = {
        line.partition("=")[0]: line.partition("=")[2]
        for line in UNIT.read_text().splitlines()
        if "=" in line
    }
    assert lines["Type"] == "notify"
    assert int(lines["WatchdogSec"]) > 0
    assert lines["Restart"] == "on-failure"
    assert lines["NoNewPrivileges"] == "yes"
    assert lines["ProtectSystem"] == "strict"
    assert lines["ProtectHome"] == "yes"
    assert lines["PrivateTmp"] == "yes"
    assert lines["StateDirectory"] == "allworx-agent"
    assert lines["ReadWritePaths"] == "/var/lib/allworx-agent"
    assert lines["User"] == "allworx-agent"
