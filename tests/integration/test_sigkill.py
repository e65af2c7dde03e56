"""Real power cuts: the agent's CLI runs as a subprocess and SIGKILLs itself at a crash point.

``ALLWORX_CRASH_AT=name[:N]`` makes the process kill itself with SIGKILL at the N-th hit of the
point: no ``finally`` runs, no buffer is flushed by Python, exactly as when the power fails. The
server, as the kill left it, must boot its committed slot with every record and key; running the
same command again must recover the interrupted step and finish committed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.store import ServerDir
from simulator.chaos import Auditor, snapshot
from simulator.keyring import VendorKeyring
from simulator.publish import default_repository
from simulator.server import ServerSpec, create_server

pytestmark = pytest.mark.integration
NOW = datetime(2016, 1, 1, tzinfo=UTC)


def agent_cli(server: Path, target: str, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    """``allworx-agent upgrade --server-dir D --to R --now 2016-01-01 --json``, maybe crashing."""
    env = {k: v for k, v in os.environ.items() if k != "ALLWORX_CRASH_AT"}
    if crash_at is not None:
        env["ALLWORX_CRASH_AT"] = crash_at
    code = "import sys; from agent.cli import main; sys.argv[0] = 'allworx-agent'; main()"
    args = ["upgrade", "--server-dir", str(server), "--to", target, "--now", NOW.date().isoformat(), "--json"]
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("crash_at", "committed_at_kill"),
    [
        ("db.rebuild", "7.0"),  # the 7.1 rebuild, mid-way (new database built, not yet verified)
        ("journal.write:5", "7.0"),  # mid-write of the journal (persisting writing_slot)
        ("boot.trial", "7.0"),  # after the slot switch, before commit
        ("commit", "7.0"),  # mid-write of the bootloader's commit
        ("finish", "7.1"),  # committed, before the phone firmware offer and the journal removal
    ],
)
def test_sigkill_at_a_crash_point_then_rerun_finishes_committed(
    tmp_path: Path, keyring: VendorKeyring, crash_at: str, committed_at_kill: str
) -> None:
    """Killed with SIGKILL at the point: not bricked, nothing lost; the rerun recovers and commits 7.1."""
    spec = ServerSpec("6x", "7.0", users=12, call_log_rows=200, shipped=date(2009, 6, 1))
    server = create_server(tmp_path / "box", spec, keyring=keyring)
    before = snapshot(server)
    auditor = Auditor(default_repository(keyring), keyring.root_public, NOW)

    killed = agent_cli(server.root, "7.1", crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout == ""  # it died before printing anything
    assert ServerDir(server.root).committed().version == committed_at_kill
    assert auditor.problems(ServerDir(server.root), before, finished=False) == {}

    rerun = agent_cli(server.root, "7.1", None)
    assert rerun.returncode == 0, rerun.stderr
    document = json.loads(rerun.stdout)
    assert document["final_release"] == "7.1"
    assert document["recovered"]["outcome"] == "committed"
    assert ServerDir(server.root).committed().db_schema == 20
    assert auditor.problems(ServerDir(server.root), before, finished=True) == {}
