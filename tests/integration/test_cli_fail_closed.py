"""A flipped byte in boot.json, as an administrator meets it: every command fails closed, one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tree_hash

pytestmark = pytest.mark.integration
NOW = "2010-01-01"  # 7.1 is out: one step 7.0 -> 7.1 needs no key


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a console script as a user would (through the interpreter running the tests)."""
    module = {"allworx-agent": "agent.cli", "allworx-sim": "simulator.cli"}[name]
    code = f"import sys; from {module} import main; sys.argv[0] = {name!r}; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_an_active_slot_out_of_range_fails_every_command_and_changes_nothing(tmp_path: Path) -> None:
    """boot.json says active "B" on a server committed in slot b: status, upgrade and run exit 1
    with STATE_INVALID naming the file and the field, instead of reporting the old slot's release."""
    hq = tmp_path / "hq"
    made = tool("allworx-sim", "server", "create", str(hq), "--model", "6x", "--release", "7.0",
                "--shipped", "2009-06-01", "--users", "5", "--call-log-rows", "20")  # fmt: skip
    assert made.returncode == 0, made.stderr
    upgraded = tool("allworx-agent", "upgrade", "--server-dir", str(hq), "--to", "7.1", "--now", NOW)
    assert upgraded.returncode == 0, upgraded.stderr
    boot = json.loads((hq / "boot.json").read_bytes())
    assert boot["active"] == "b"
    (hq / "boot.json").write_text(json.dumps({**boot, "active": "B"}))
    before = tree_hash(hq)
    for args in (
        ("status", "--server-dir", str(hq), "--now", NOW),
        ("upgrade", "--server-dir", str(hq), "--to", "7.1", "--now", NOW),
        ("run", "--server-dir", str(hq), "--broker", "mqtt://127.0.0.1:9", "--now", NOW),
    ):
        done = tool("allworx-agent", *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stdout == "", args
        assert done.stderr.startswith(f"error: STATE_INVALID: {hq / 'boot.json'}: field 'active' is 'B'"), (
            args
        )
        assert done.stderr.count("\n") == 1, done.stderr
    assert tree_hash(hq) == before
