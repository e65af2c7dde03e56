"""A campaign selected by site and model, typed as a user would, on a Mosquitto requiring TLS and passwords.

Forty virtual servers over three sites and two models, each agent logged in as its own serial
(``allworx-sim pki init --fleet`` + ``allworx-sim broker config --passwords``). ``allworx-fleet
campaign start --select site=... --select model=...`` (a dry run, then the campaign) runs as the
controller; ``campaign list``, ``log`` and ``report``, ``status`` and ``watch`` run as an operator:
the README's story of a campaign and its report. The agents share this process's loop, the fleet's one
simulated clock, and the simulation's fast disk and verifier (as ``allworx-sim fleet`` hosts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.clock import SimClock
from agent.mqtt.connection import BrokerSettings, Inbound
from agent.mqtt.daemon import Agent, AgentOptions
from agent.store import ServerDir
from agent.upgrader import Timing
from fleet.client import FleetClient
from releases.catalog import default_catalog
from simulator.broker import free_port
from simulator.fleet.build import Fleet, build_fleet
from simulator.fleet.disk import FastDisk
from simulator.fleet.host import anchored_clock
from simulator.fleet.run import fleet_start
from simulator.fleet.spec import FleetSpec, ServerPlan, expand
from simulator.fleet.verifier import RememberingVerifier
from tests.integration.conftest import require_mosquitto
from tests.integration.test_broker_acl import _sim, mosquitto_with

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SERVERS = 40
FROM, TARGET = "8.1", "8.2"  # one step for both models
SPEED = 3000.0  # simulated seconds per real second: a 90 s reboot takes 30 ms
TEST = 120.0  # seconds: a hang fails the test instead of blocking the run
CLI = 60.0  # seconds for one allworx-fleet command


@dataclass(frozen=True)
class Lab:
    """The fleet, its PKI and the password listener's port."""

    fleet: Fleet
    pki: Path
    port: int
    site: str  # the selected site
    model: str  # the selected model

    @property
    def url(self) -> str:
        """The broker's URL."""
        return f"mqtts://127.0.0.1:{self.port}"

    def password(self, name: str) -> str:
        """Identity ``name``'s password (``allworx-sim broker config --passwords`` made it)."""
        return (self.pki / "clients" / f"{name}.password").read_text().splitlines()[0]

    def options(self, name: str) -> list[str]:
        """The broker options a user gives ``allworx-fleet`` to log in as ``name``."""
        secret = self.pki / "clients" / f"{name}.password"
        return [f"--broker={self.url}", f"--ca={self.pki / 'ca.crt'}", f"--username={name}",
                f"--password-file={secret}"]  # fmt: skip

    def settings(self, name: str) -> BrokerSettings:
        """In-process connection settings of identity ``name``."""
        return BrokerSettings(url=self.url, ca=str(self.pki / "ca.crt"), username=name,
                              password=self.password(name), keepalive=30, timeout=60.0,
                              connect_timeout=30.0)  # fmt: skip

    def selected(self) -> list[ServerPlan]:
        """The servers the selection names."""
        return [p for p in self.fleet.plans if p.site == self.site and p.model == self.model]


def fleet_spec(sites: tuple[str, str, str]) -> FleetSpec:
    """Forty servers over ``sites``, half 6x and half 530 on average, whose selection proves both clauses.

    The first seed is taken whose selected site has servers of both models and whose other sites
    have 6x servers too: a selection by site alone, or by model alone, would then take more.
    """
    for seed in range(1, 100):
        spec = FleetSpec(servers=SERVERS, seed=seed, sites=sites, models={"6x": 1.0, "530": 1.0},
                         releases={FROM: 1.0}, keys={"anytime": 1.0}, multisite=0.0, failing=0.0,
                         offline=0.0)  # fmt: skip
        plans = expand(spec)
        here = [p.model for p in plans if p.site == sites[0]]
        elsewhere = [p.model for p in plans if p.site != sites[0]]
        if 3 <= here.count("6x") < len(here) and "6x" in elsewhere:
            return spec
    raise AssertionError("no seed gives the selected site servers of both models")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """The fleet built, its PKI with passwords, and a Mosquitto running the generated configuration."""
    require_mosquitto()
    tag = uuid.uuid4().hex[:6]
    sites = (f"east{tag}", f"west{tag}", f"north{tag}")
    fleet = build_fleet(tmp_path / "fleet", fleet_spec(sites), workers=1)
    _sim("pki", "init", "pki", "--fleet", "fleet", "--operators", "operator,auditor", cwd=tmp_path)
    port = free_port()
    _sim("broker", "config", "--pki", "pki", "--port", str(port), "--out", "broker/mosquitto.conf",
         "--passwords", cwd=tmp_path)  # fmt: skip
    with mosquitto_with(tmp_path / "broker" / "mosquitto.conf", port):
        yield Lab(fleet, tmp_path / "pki", port, sites[0], "6x")


@contextlib.asynccontextmanager
async def hosted(lab: Lab) -> AsyncIterator[SimClock]:
    """Every server's agent in this loop, each logged in as its serial with its own password; yields
    the fleet's simulated clock."""
    clock = anchored_clock(fleet_start(lab.fleet), SPEED, time.time())
    disk, verifier, catalog = FastDisk(), RememberingVerifier(), default_catalog()
    agents = []
    for plan in lab.fleet.plans:
        options = AgentOptions(broker=lab.settings(plan.serial), progress_interval=1.0, state_interval=0.2,
                               cursor_interval=1.0, timing=Timing(), lock_server=False)  # fmt: skip
        server = ServerDir(lab.fleet.server_dir(plan), disk=disk, verifier=verifier)
        agents.append(Agent(server, options, clock=clock, catalog=catalog))
    tasks = [asyncio.create_task(agent.run(), name=f"agent-{agent.topics.serial}") for agent in agents]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(agent.connected.wait() for agent in agents))
        yield clock
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=30)


async def fleet_cli(*args: str) -> tuple[int, str, str]:
    """``allworx-fleet ARGS`` as a user runs it (off a terminal): exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet.cli", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), CLI)
    assert b"Traceback" not in err, err.decode()
    return process.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def commands_seen(lab: Lab) -> AsyncIterator[list[str]]:
    """The serials every command on the broker was sent to while the block runs (read as ``auditor``)."""
    seen: list[str] = []
    async with FleetClient.open(lab.settings("auditor")) as client:

        def is_command(message: Inbound) -> bool:
            parts = message.topic.split("/")
            return len(parts) == 5 and parts[3] == "cmd"

        with client.watch(is_command) as queue:
            await client.link.subscribe("allworx/+/+/cmd/+", qos=1)
            try:
                yield seen
            finally:
                await asyncio.sleep(0.5)
                while not queue.empty():
                    seen.append(queue.get_nowait().topic.split("/")[2])


async def test_a_campaign_selected_by_site_and_model_touches_only_those(lab: Lab, tmp_path: Path) -> None:
    """``campaign start --select site=S --select model=6x`` over TLS and passwords plans, upgrades and
    reports only those servers; the others stay as they were; ``status --select`` and ``watch
    --select`` show the same servers on the target."""
    chosen = sorted(p.serial for p in lab.selected())
    campaign_id = f"sel{uuid.uuid4().hex[:6]}"
    selects = [f"--select=site={lab.site}", f"--select=model={lab.model}"]
    async with asyncio.timeout(TEST), hosted(lab) as clock:
        planned = await fleet_cli("campaign", "start", f"--id={campaign_id}", f"--target={TARGET}", *selects,
                                  "--dry-run", "--json", *lab.options("controller"))  # fmt: skip
        now = clock.now().isoformat()  # the campaign clock starts where the fleet's is
        async with commands_seen(lab) as commanded:
            started = await fleet_cli(
                "campaign", "start", f"--id={campaign_id}", f"--target={TARGET}", "--canary=1",
                *selects, f"--now={now}", f"--speed={SPEED:g}", *lab.options("controller"),
            )  # fmt: skip
        listed_campaigns = await fleet_cli("campaign", "list", "--json", *lab.options("operator"))
        listed_text = await fleet_cli("campaign", "list", *lab.options("operator"))
        logged = await fleet_cli("campaign", "log", campaign_id, *lab.options("operator"))
        reported = await fleet_cli("campaign", "report", campaign_id, f"--out={tmp_path / 'report'}",
                                   *lab.options("operator"))  # fmt: skip
        everyone = await fleet_cli("status", "--json", *lab.options("operator"))
        listed = await fleet_cli("status", "--json", *selects, *lab.options("operator"))
        watched = await fleet_cli("watch", "--duration=2", "--plain", *selects, *lab.options("operator"))
    assert planned[0] == 0, planned[2]
    assert sorted(row["serial"] for row in json.loads(planned[1])["dry_run"]) == chosen
    code, out, err = started
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"
    assert json.loads(out)["counts"] == {"succeeded": len(chosen)}
    assert "\r" not in err, "progress off a terminal is plain lines"
    assert f"campaign {campaign_id}: completed" in err
    assert sorted(set(commanded)) == chosen

    assert listed_campaigns[0] == 0, listed_campaigns[2]
    mine = [c for c in json.loads(listed_campaigns[1])["campaigns"] if c["campaign_id"] == campaign_id]
    assert [(c["status"], c["members"]) for c in mine] == [("completed", len(chosen))]
    assert mine[0]["selection"] == [f"site={lab.site}", f"model={lab.model}"]
    assert f"--select site={lab.site} --select model={lab.model}" in listed_text[1]
    assert logged[0] == 0, logged[2]
    assert " created " in logged[1]
    assert reported[0] == 0, reported[2]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert sorted(row["serial"] for row in report["per_server"]) == chosen
    assert {row["outcome"] for row in report["per_server"]} == {"succeeded"}
    assert report["spec"]["selection"] == [f"site={lab.site}", f"model={lab.model}"]

    assert everyone[0] == 0, everyone[2]
    states = {doc["serial"]: doc for doc in json.loads(everyone[1])["servers"]}
    assert len(states) == SERVERS
    assert sorted(s for s, doc in states.items() if doc["release"] == TARGET) == chosen
    untouched = [p for p in lab.fleet.plans if p.serial not in chosen]
    assert {states[p.serial]["release"] for p in untouched} == {FROM}
    assert [p.serial for p in untouched if states[p.serial]["last_result"] is not None] == []
    assert [p.serial for p in untouched if ServerDir(lab.fleet.server_dir(p)).facts().release != FROM] == []

    assert listed[0] == 0, listed[2]
    rows = json.loads(listed[1])["servers"]
    assert sorted(row["serial"] for row in rows) == chosen
    assert {row["release"] for row in rows} == {TARGET}
    assert {row["availability"] for row in rows} == {"online"}

    assert watched[0] == 0, watched[2]
    last = watched[1].strip().splitlines()
    assert f"servers {len(chosen)} upgrading 0 offline 0 | releases {TARGET}:{len(chosen)}" in last[-2]
    assert last[-1].startswith(f"campaign {campaign_id}: completed")
