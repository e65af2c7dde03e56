"""The daemon's configuration file, environment variables and flags, as an administrator meets them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ALLWORX_") or k == "ALLWORX_SIM_HOME"}
    return subprocess.run(
        ["allworx-agent", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_flags_override_environment_override_file(tmp_path: Path) -> None:
    """Each option comes from the highest of flag, ALLWORX_<OPTION>, file, default; secrets are masked."""
    config = tmp_path / "agent.toml"
    config.write_text(
        'broker = "mqtts://fleet.example:8883"\nkeepalive = 20\nsite = "west"\npassword = "hunter2"\n'
    )
    done = _agent(
        "config", "show", "--json", "--config", str(config), "--site", "east", env={"ALLWORX_KEEPALIVE": "25"}
    )
    assert done.returncode == 0, done.stderr
    options = {row["option"]: row for row in json.loads(done.stdout)["options"]}
    assert (options["broker"]["value"], options["broker"]["source"]) == (
        "mqtts://fleet.example:8883",
        "config file",
    )
    assert (options["keepalive"]["value"], options["keepalive"]["source"]) == (25, "environment")
    assert (options["site"]["value"], options["site"]["source"]) == ("east", "command line")
    assert (options["mqtt_version"]["value"], options["mqtt_version"]["source"]) == ("auto", "default")
    assert options["password"]["value"] == "********"
    assert "hunter2" not in done.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('brokr = "x"\n', "brokr: Extra inputs are not permitted"),
        ('keepalive = "30"\n', "keepalive: Input should be a valid integer"),
        ("broker = \n", "(file): not TOML: Invalid value (at line 1, column 10)"),
    ],
)
def test_a_bad_file_is_one_config_invalid_line(tmp_path: Path, text: str, expected: str) -> None:
    """An unknown key, a wrong type or broken TOML stops the daemon with one line naming file and key."""
    config = tmp_path / "agent.toml"
    config.write_text(text)
    done = _agent("run", "--config", str(config), "--server-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: CONFIG_INVALID: {config}: {expected}"


def test_a_missing_file_is_config_invalid(tmp_path: Path) -> None:
    """A --config that names no file is refused the same way."""
    done = _agent("run", "--config", str(tmp_path / "absent.toml"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: CONFIG_INVALID: {tmp_path / 'absent.toml'}: (file): no such file"
