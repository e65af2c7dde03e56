"""The README's story, run as a new user types it: real CLIs in subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import run_tool as run

pytestmark = pytest.mark.integration


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_seq_2_swm_1_db_1_a_7_0_server_without_key_stops_on_7_1_then_reaches_8_0_with_a_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A 6x on 7.0 with no key ends on 7.1 (database rebuilt, intact); with an anytime key it reaches 8.0."""
    hq = tmp_path / "hq"
    made = run(
        "allworx-sim",
        "server",
        "create",
        str(hq),
        "--model",
        "6x",
        "--release",
        "7.0",
        "--shipped",
        "2009-06-01",
        "--users",
        "40",
        "--json",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    serial = as_json(made)["serial"]
    status = as_json(
        run("allworx-agent", "status", "--server-dir", str(hq), "--json", "--now", "2016-01-01", env=env)
    )
    assert status["keys"] == [], "shipped before the programme began: no ship key (SWM-4)"
    from agent import database
    from agent.store import ServerDir

    server = ServerDir(hq)
    before = database.digest(server.db_path(server.active_slot()))

    first = run(
        "allworx-agent",
        "upgrade",
        "--server-dir",
        str(hq),
        "--to",
        "8.0",
        "--now",
        "2016-01-01",
        "--json",
        env=env,
    )
    doc = as_json(first)
    assert first.returncode == 2
    assert doc["from"] == "7.0" and doc["to"] == "8.0" and doc["final_release"] == "7.1"
    assert doc["steps"][0]["release"] == "7.1" and doc["steps"][0]["outcome"] == "committed"
    assert {k: doc["steps"][1][k] for k in ("release", "outcome", "reason", "rule")} == {
        "release": "7.2",
        "outcome": "refused",
        "reason": "MAINTENANCE_KEY_REQUIRED",
        "rule": "SWM-1",
    }
    assert server.committed().db_schema == 20
    after = database.digest(server.db_path(server.active_slot()))
    assert (after.counts, after.checksum) == (before.counts, before.checksum)

    key = tmp_path / "anytime.key"
    issued = run(
        "allworx-sim",
        "keys",
        "issue",
        "--serial",
        serial,
        "--kind",
        "maintenance",
        "--plan",
        "anytime-1y",
        "--start",
        "2016-01-01",
        "--out",
        str(key),
        env=env,
    )
    assert issued.returncode == 0, issued.stderr
    installed = run(
        "allworx-agent", "keys", "install", "--server-dir", str(hq), str(key), "--now", "2016-01-01", env=env
    )
    assert installed.returncode == 0, installed.stderr

    second = as_json(
        run(
            "allworx-agent",
            "upgrade",
            "--server-dir",
            str(hq),
            "--to",
            "8.0",
            "--now",
            "2016-01-01",
            "--json",
            env=env,
        )
    )
    assert [s["release"] for s in second["steps"]] == ["7.2", "7.3", "7.4", "7.5", "7.6", "7.7", "8.0"]
    assert all(s["outcome"] == "committed" for s in second["steps"])
    final = as_json(
        run("allworx-agent", "status", "--server-dir", str(hq), "--json", "--now", "2016-01-01", env=env)
    )
    assert (final["release"], final["db_schema"], final["state"]) == ("8.0", 30, "idle")
    last = database.digest(server.db_path(server.active_slot()))
    assert (last.counts, last.checksum) == (before.counts, before.checksum)


@pytest.mark.parametrize(
    ("release", "install", "reason", "rule"),
    [("7.6", "8.0", "SEQUENTIAL_STEP_REQUIRED", "SEQ-1"), ("7.0", "7.3", "MUST_INSTALL_7_1_FIRST", "SEQ-2")],
)
def test_seq_install_of_a_farther_release_is_refused(
    tmp_path: Path, env: dict[str, str], release: str, install: str, reason: str, rule: str
) -> None:
    """``install --release`` of anything but the successor is refused with its own code, exit 2."""
    box = tmp_path / "box"
    assert (
        run(
            "allworx-sim",
            "server",
            "create",
            str(box),
            "--model",
            "6x",
            "--release",
            release,
            "--shipped",
            "2013-11-01",
            env=env,
        ).returncode
        == 0
    )
    proc = run(
        "allworx-agent",
        "install",
        "--server-dir",
        str(box),
        "--release",
        install,
        "--now",
        "2016-01-01",
        "--json",
        env=env,
    )
    doc = as_json(proc)
    assert proc.returncode == 2
    assert (doc["steps"][0]["reason"], doc["steps"][0]["rule"]) == (reason, rule)
    assert doc["final_release"] == release
    assert proc.stderr.startswith(f"error: {reason}") or reason in proc.stderr


def test_bad_input_gets_one_line_and_exit_1(tmp_path: Path, env: dict[str, str]) -> None:
    """A missing server directory or a bad date is one line on stderr, exit 1, no traceback."""
    proc = run("allworx-agent", "status", "--server-dir", str(tmp_path / "nope"), env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    box = tmp_path / "box"
    assert (
        run(
            "allworx-sim", "server", "create", str(box), "--model", "731", "--release", "8.0", env=env
        ).returncode
        == 0
    )
    proc = run(
        "allworx-agent", "plan", "--server-dir", str(box), "--to", "8.1", "--now", "yesterday", env=env
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    proc = run("allworx-sim", "server", "create", str(box), "--model", "731", "--release", "8.0", env=env)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    proc = run(
        "allworx-sim", "server", "create", str(tmp_path / "x"), "--model", "731", "--release", "7.0", env=env
    )
    assert proc.returncode == 1 and "MODEL_UNSUPPORTED" in proc.stderr
