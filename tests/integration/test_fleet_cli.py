"""``allworx-fleet`` as an operator types it, against a real Mosquitto and a running agent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from agent.store import ServerDir
from simulator.broker import Mosquitto
from tests.integration.conftest import running_agent

pytestmark = pytest.mark.integration


async def fleet_cli(*args: str) -> tuple[int, Any, str]:
    """Run ``allworx-fleet ARGS --json`` in a subprocess; return exit code, JSON document, stderr."""
    command = [sys.executable, "-c", "from fleet.cli import main; main()", *args, "--json"]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ)
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


async def test_send_stage_then_upgrade_wait_then_status(mosquitto: Mosquitto, server: ServerDir) -> None:
    """Stage stages without activating; upgrade --wait ends committed; status lists the server's state."""
    ident = server.identity()
    target = ["--broker", mosquitto.url, "--site", ident.site, "--serial", ident.serial]
    async with running_agent(server, mosquitto.url):
        code, reply, _ = await fleet_cli("send", "stage", *target, "--to", "7.1")
        assert code == 0 and reply["status"] == "accepted"
        for _ in range(50):
            if list(server.update_area.glob("*.img")):
                break
            await asyncio.sleep(0.1)
        assert [p.name for p in server.update_area.glob("*.img")] == ["7.1.4.7.img"]
        assert server.committed().version == "7.0", "staging activates nothing"

        code, reply, _ = await fleet_cli("send", "upgrade", *target, "--to", "7.1", "--wait")
        assert code == 0 and reply["result"]["outcome"] == "succeeded"
        assert server.committed().version == "7.1"

        code, reply, stderr = await fleet_cli("send", "upgrade", *target, "--to", "6.9")
        assert code == 2 and reply["reason"] == "DOWNGRADE_REFUSED" and "DOWNGRADE_REFUSED" in stderr

        code, states, _ = await fleet_cli("status", "--broker", mosquitto.url)
    mine = [
        s for s in (states if isinstance(states, list) else states["servers"]) if s["serial"] == ident.serial
    ]
    assert mine and mine[0]["release"] == "7.1"
