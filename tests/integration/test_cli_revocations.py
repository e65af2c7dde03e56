"""SWM-2's "not revoked", as a lab administrator applies the vendor's revocation list from the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import tree_hash
from tests.integration.test_cli_story import run

pytestmark = pytest.mark.integration
NOW = "2014-10-01"


def as_json(proc: Any) -> Any:
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_a_revoked_maintenance_key_stops_upgrades_and_bad_lists_change_nothing(tmp_path: Path) -> None:
    """Revoke, install the list: KEY_REVOKED (SWM-2); a stale, garbled or repeated list changes nothing."""
    env = {**os.environ, "ALLWORX_SIM_HOME": str(tmp_path / "home")}  # its own keyring: revocation is global
    hq = tmp_path / "hq"
    made = run(  # shipped before 7.1: no ship key, so the anytime key is its only one
        "allworx-sim", "server", "create", str(hq), "--model", "6x", "--release", "7.6",
        "--shipped", "2009-06-01", "--json", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    serial = as_json(made)["serial"]
    key = tmp_path / "anytime.key"
    issued = run(
        "allworx-sim", "keys", "issue", "--serial", serial, "--kind", "maintenance", "--plan", "anytime-1y",
        "--start", "2014-01-01", "--out", str(key), "--json", env=env,
    )  # fmt: skip
    key_id = as_json(issued)["key_id"]
    assert (
        run(
            "allworx-agent", "keys", "install", "--server-dir", str(hq), str(key), "--now", NOW, env=env
        ).returncode
        == 0
    )
    allowed = run(
        "allworx-agent", "plan", "--server-dir", str(hq), "--to", "7.7", "--now", NOW, "--json", env=env
    )
    assert as_json(allowed)["steps"][0]["outcome"] == "would-install"
    first, second = tmp_path / "first.list", tmp_path / "second.list"
    assert (
        run(
            "allworx-sim",
            "keys",
            "revoke",
            "OTHER-KEY",
            "--today",
            "2014-09-01",
            "--out",
            str(first),
            env=env,
        ).returncode
        == 0
    )
    assert (
        run(
            "allworx-sim", "keys", "revoke", key_id, "--today", "2014-09-02", "--out", str(second), env=env
        ).returncode
        == 0
    )

    def install(path: Path) -> Any:
        return run(
            "allworx-agent",
            "keys",
            "install-revocations",
            "--server-dir",
            str(hq),
            str(path),
            "--now",
            NOW,
            "--json",
            env=env,
        )

    applied = install(second)
    assert applied.returncode == 0, applied.stderr
    assert as_json(applied) == {
        "installed": True,
        "sequence": 2,
        "revoked_count": 2,
        "installed_keys_revoked": [key_id],
    }
    again = install(second)
    assert (again.returncode, as_json(again)["installed"]) == (0, False)

    before = tree_hash(hq)
    stale = install(first)
    assert stale.returncode == 2 and "error: REVOCATION_LIST_STALE:" in stale.stderr
    garbled = tmp_path / "garbled.list"
    garbled.write_text(second.read_text().replace("A", "B", 40))
    bad = install(garbled)  # not a revocation list at all: an error (exit 1), not a refusal
    assert bad.returncode == 1, bad.stderr
    assert bad.stderr.startswith("error: KEY_FORMAT_INVALID:"), bad.stderr
    missing = install(tmp_path / "nope.list")
    assert missing.returncode == 1 and "error: BAD_INPUT:" in missing.stderr
    assert tree_hash(hq) == before, "a refused list changed the server"

    refused = run(
        "allworx-agent", "upgrade", "--server-dir", str(hq), "--to", "7.7", "--now", NOW, "--json", env=env
    )
    assert refused.returncode == 2
    step = as_json(refused)["steps"][0]
    assert (step["reason"], step["rule"]) == ("KEY_REVOKED", "SWM-2")
