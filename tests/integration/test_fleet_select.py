"""Simulated fleets on Mosquitto: ``--select`` end to end (``campaign start --dry-run`` and ``status``), and
the host process they run in."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from simulator.fleet.build import Fleet, build_fleet
from simulator.fleet.host import HOST_GC_THRESHOLDS
from simulator.fleet.run import simulate
from simulator.fleet.spec import FleetSpec
from tests.integration.conftest import require_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SERVERS = 12


def three_site_fleet(tmp_path: Path) -> tuple[Fleet, str]:
    """Twelve servers over three sites of their own and two models, with east 6x servers among others."""
    tag = uuid.uuid4().hex[:6]
    sites = (f"east{tag}", f"west{tag}", f"north{tag}")
    for seed in range(1, 200):
        spec = FleetSpec(
            servers=SERVERS,
            seed=seed,
            sites=sites,
            models={"6x": 1.0, "530": 1.0},
            releases={"7.6": 1.0, "8.1": 1.0},
            keys={"anytime": 1.0},
            multisite=0.0,
            failing=0.0,
            offline=0.0,
        )
        fleet = build_fleet(tmp_path / f"fleet{seed}", spec, workers=1)
        chosen = [p for p in fleet.plans if p.site == sites[0] and p.model == "6x"]
        east = [p for p in fleet.plans if p.site == sites[0]]
        if chosen and len(chosen) < len(east):  # the model clause must leave some east servers out
            return fleet, sites[0]
    raise AssertionError("no seed gives east servers of both models")


async def fleet_cli(*args: str) -> tuple[int, Any, str]:
    """Run ``allworx-fleet`` with ``args``; return its exit code, JSON output and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, json.loads(out) if out.strip() else None, err.decode()


async def test_select_limits_the_dry_run_and_status(tmp_path: Path, mosquitto: Any) -> None:
    """``--select site=east --select model=6x`` plans exactly those; ``status --select`` lists east."""
    require_mosquitto()
    fleet, east = three_site_fleet(tmp_path)
    expected = sorted(p.serial for p in fleet.plans if p.site == east and p.model == "6x")
    in_east = sorted(p.serial for p in fleet.plans if p.site == east)
    broker = f"--broker={mosquitto.url}"
    async with simulate(fleet, broker=mosquitto.url, speed=3000.0, workers=0):
        code, planned, err = await fleet_cli(
            "campaign", "start", f"--id=sel{uuid.uuid4().hex[:6]}", broker,
            f"--select=site={east}", "--select=model=6x", "--dry-run", "--json",
        )  # fmt: skip
        status_code, listed, status_err = await fleet_cli("status", broker, f"--select=site={east}", "--json")
    assert code == 0, err
    assert sorted(row["serial"] for row in planned["dry_run"]) == expected
    assert status_code == 0, status_err
    assert sorted(s["serial"] for s in listed["servers"]) == in_east
    assert {s["availability"] for s in listed["servers"]} == {"online"}


async def test_a_bad_select_is_bad_input(mosquitto: Any) -> None:
    """A malformed expression is ``error: BAD_INPUT`` naming it, exit 1, no traceback."""
    require_mosquitto()
    code, _, err = await fleet_cli("status", f"--broker={mosquitto.url}", "--select=colour=red")
    assert code == 1
    assert err.startswith("error: BAD_INPUT: --select 'colour=red'")
    assert "Traceback" not in err


async def test_a_host_collects_garbage_less_often_while_its_agents_run(
    tmp_path: Path, mosquitto: Any
) -> None:
    """While a host runs its agents the process uses the host's collector thresholds; afterwards,
    the ones it had before."""
    require_mosquitto()
    spec = FleetSpec(servers=2, seed=1, keys={"anytime": 1.0}, multisite=0.0, failing=0.0, offline=0.0)
    fleet = build_fleet(tmp_path / "fleet", spec, workers=1)
    before = gc.get_threshold()
    async with simulate(fleet, broker=mosquitto.url, speed=3000.0, workers=0):
        hosting = gc.get_threshold()
    assert hosting == HOST_GC_THRESHOLDS
    assert hosting != before
    assert gc.get_threshold() == before
