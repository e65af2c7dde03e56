"""Campaigns over real brokers: fleets of tens of virtual servers, each agent its own MQTT session."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.store import ServerDir
from fleet.campaign.controller import Controller, control_topic, load, sign_control
from fleet.campaign.model import Campaign, Member
from fleet.campaign.setup import dry_run
from fleet.campaign.spec import AbortRule, CampaignSpec, Window
from fleet.client import FleetClient
from fleet.operator import default_operator
from simulator.fleet.build import Fleet, build_fleet
from simulator.fleet.run import Simulation, simulate
from simulator.fleet.spec import FleetSpec, networks
from tests.integration.conftest import BrokerUnderTest, require_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SPEED = 3000.0  # a 90 s reboot takes 30 ms
STARTUP = 180.0  # seconds for the agents to connect (simulate waits up to 120) and the controller to settle
TEARDOWN = 30.0  # seconds for them to stop
TEST = 600.0  # seconds for a whole test: a hang fails it instead of blocking the run
MODELS = {"6x": 1.0, "530": 1.0}
RELEASES = {"7.6": 1.0, "7.7": 1.0, "8.1": 1.0}


@pytest.fixture
def mosquitto_broker(mosquitto: Any) -> BrokerUnderTest:
    """Mosquitto only (tests that need one broker)."""
    require_mosquitto()
    return BrokerUnderTest("mosquitto", mosquitto.url, None)


def make_fleet(tmp_path: Path, servers: int = 20, **fields: Any) -> Fleet:
    """A small fleet with its own sites and seed (tests share the broker)."""
    tag = uuid.uuid4().hex[:6]
    spec = FleetSpec(
        servers=servers,
        seed=random.randrange(1 << 30),
        sites=(f"a{tag}", f"b{tag}"),
        models=fields.pop("models", MODELS),
        releases=fields.pop("releases", RELEASES),
        keys=fields.pop("keys", {"anytime": 1.0}),
        multisite=fields.pop("multisite", 0.0),
        failing=fields.pop("failing", 0.0),
        offline=fields.pop("offline", 0.0),
        **fields,
    )
    return build_fleet(tmp_path / "fleet", spec, workers=1)


@dataclass
class Run:
    """A running fleet and a controller listening to it."""

    sim: Simulation
    client: FleetClient
    controller: Controller


@contextlib.asynccontextmanager
async def running(fleet: Fleet, broker: BrokerUnderTest, campaign_id: str) -> AsyncIterator[Run]:
    """Start the fleet's agents in this loop and a controller scoped to the fleet (both bounded in time)."""
    stack = contextlib.AsyncExitStack()
    try:
        async with asyncio.timeout(STARTUP):
            sim = await stack.enter_async_context(
                simulate(fleet, broker=broker.url, speed=SPEED, workers=0, protocol=broker.protocol)
            )
            client = await stack.enter_async_context(
                FleetClient.open(sim.settings, default_operator(), protocol=broker.protocol)
            )
            controller = Controller(client, sim.clock(), scope={p.serial for p in fleet.plans})
            await stack.enter_async_context(controller.listening(campaign_id))
            await controller.settle(expected=len(fleet.plans), quiet=5.0, limit=30.0)
        yield Run(sim, client, controller)
    finally:
        async with asyncio.timeout(TEARDOWN):
            await stack.aclose()


async def drive(run: Run, campaign: Campaign, until: str | None = None) -> Campaign:
    """Run the controller until the campaign ends, or until its status becomes ``until`` (again)."""
    task = asyncio.create_task(run.controller.run(campaign, publish_interval=0.2))
    left = campaign.status != until
    try:
        async with asyncio.timeout(60):
            while not task.done():
                left = left or campaign.status != until
                if until is not None and left and campaign.status == until:
                    return campaign
                await asyncio.sleep(0.05)
    finally:
        if not task.done():  # stopped at ``until``, or timed out: the controller stops too
            task.cancel()
            await asyncio.wait({task}, timeout=10)  # never swallows a cancellation of this task
    return task.result()


async def request(run: Run, campaign_id: str, action: str) -> None:
    """Publish a signed operator request, as ``allworx-fleet campaign pause|resume|abort`` does."""
    payload = sign_control(default_operator(), campaign_id, action)
    await run.client.link.publish(control_topic(campaign_id), payload, qos=1, retain=True)


def accounted(campaign: Campaign) -> bool:
    """Every server is counted once and has a final outcome."""
    counted = sum(campaign.counts().values()) == len(campaign.members)
    return counted and all(m.done for m in campaign.members.values())


async def test_phases_run_in_order(tmp_path: Path, broker: BrokerUnderTest) -> None:
    """No server of a phase starts before every server of the previous phase finished."""
    fleet = make_fleet(tmp_path, servers=16)
    spec = CampaignSpec(campaign_id=f"c{uuid.uuid4().hex[:8]}", canary=2, batch="6", max_in_flight=4)
    async with asyncio.timeout(TEST), running(fleet, broker, spec.campaign_id) as run:
        campaign = await drive(run, await run.controller.prepare(spec))
    assert campaign.status == "completed"
    assert accounted(campaign)
    assert len(campaign.phases) >= 3
    assert len(campaign.phases[0]) == 2
    for earlier, later in zip(campaign.phases, campaign.phases[1:], strict=False):
        ended = max(campaign.members[s].finished or 0.0 for s in earlier)
        begun = [t for s in later if (t := campaign.members[s].started) is not None]
        assert all(t >= ended for t in begun)
    assert campaign.counts().get("succeeded", 0) == 16


async def test_failure_threshold_pauses_then_resume_finishes(
    tmp_path: Path, mosquitto_broker: BrokerUnderTest
) -> None:
    """Failing images trip the abort rule (pause); a resume overrides it and the campaign completes."""
    fleet = make_fleet(tmp_path, servers=12, failing=0.5)
    spec = CampaignSpec(
        campaign_id=f"c{uuid.uuid4().hex[:8]}",
        batch="100%",
        max_in_flight=3,
        abort=AbortRule(threshold=0.2, min_finished=3, action="pause"),
    )
    async with asyncio.timeout(TEST), running(fleet, mosquitto_broker, spec.campaign_id) as run:
        campaign = await run.controller.prepare(spec)
        await drive(run, campaign, until="paused")
        assert campaign.paused_reason == "abort_rule"
        assert any(m.status in ("pending", "staged") for m in campaign.members.values())
        await request(run, spec.campaign_id, "resume")
        await drive(run, campaign)
    assert campaign.status == "completed"
    assert accounted(campaign)
    failing = {p.serial for p in fleet.plans if p.failing}
    assert {s for s, m in campaign.members.items() if m.status == "failed"} == failing
    assert all(campaign.members[s].reason == "IMAGE_DIGEST_MISMATCH" for s in failing)


async def test_abort_cancels_the_servers_not_started(
    tmp_path: Path, mosquitto_broker: BrokerUnderTest
) -> None:
    """An abort while paused between phases ends the campaign; the later phases never start."""
    fleet = make_fleet(tmp_path, servers=10)
    spec = CampaignSpec(campaign_id=f"c{uuid.uuid4().hex[:8]}", canary=2, batch="4", gate_phases=True)
    async with asyncio.timeout(TEST), running(fleet, mosquitto_broker, spec.campaign_id) as run:
        campaign = await run.controller.prepare(spec)
        await drive(run, campaign, until="paused")
        assert campaign.paused_reason == "phase_gate"
        await request(run, spec.campaign_id, "abort")
        await drive(run, campaign)
    assert campaign.status == "cancelled"
    assert accounted(campaign)
    first = set(campaign.phases[0])
    assert all(campaign.members[s].status == "succeeded" for s in first)
    rest = [m for s, m in campaign.members.items() if s not in first]
    assert rest
    assert all(m.status == "cancelled" for m in rest)
    assert all(m.reason == "CAMPAIGN_CANCELLED" for m in rest)
    assert all(m.current == m.release for m in rest)


async def test_multisite_networks_align_or_are_held(tmp_path: Path, broker: BrokerUnderTest) -> None:
    """SITE-1: a network whose members all can move ends on one release; one with a keyless member is held."""
    fleet = make_fleet(
        tmp_path,
        servers=10,
        multisite=1.0,
        keys={"anytime": 1.0},
        models={"6x": 1.0, "731": 1.0},
        releases={"7.7": 1.0, "8.0": 1.0, "8.2": 1.0},
    )
    nets = networks(fleet.plans)
    assert len(nets) == 2
    keyless = nets["net-2"][0]
    for key in (fleet.server_dir(p) / "keys" for p in fleet.plans if p.serial == keyless):
        for path in key.glob("*.key"):
            path.unlink()
    spec = CampaignSpec(campaign_id=f"c{uuid.uuid4().hex[:8]}", networks=nets)
    async with asyncio.timeout(TEST), running(fleet, broker, spec.campaign_id) as run:
        campaign = await drive(run, await run.controller.prepare(spec))
    assert accounted(campaign)
    net1 = [campaign.members[s] for s in nets["net-1"]]
    assert len({m.current for m in net1}) == 1
    assert all(m.status in ("succeeded", "current") for m in net1)
    net2 = [campaign.members[s] for s in nets["net-2"]]
    assert all(m.current == m.release for m in net2)
    assert {m.reason for m in net2 if m.serial != keyless} == {"SITE_ALIGNMENT_BLOCKED"}
    assert keyless in campaign.needing_keys["net-2"]


async def test_dry_run_matches_the_real_run(tmp_path: Path, mosquitto_broker: BrokerUnderTest) -> None:
    """Server by server, the dry run's outcome and final release are what the campaign then does."""
    fleet = make_fleet(
        tmp_path,
        servers=20,
        keys={"anytime": 2.0, "none": 1.0, "expired": 1.0},
        offline=0.1,
        releases={"7.0": 1.0, "7.5": 1.0, "8.0": 1.0, "8.3": 1.0},
    )
    spec = CampaignSpec(campaign_id=f"c{uuid.uuid4().hex[:8]}", target="8.3", batch="50%")
    async with asyncio.timeout(TEST), running(fleet, mosquitto_broker, spec.campaign_id) as run:
        predicted = dry_run(await run.controller.prepare(spec))
        campaign = await drive(run, await run.controller.prepare(spec))
    assert accounted(campaign)
    outcomes = {row["outcome"] for row in predicted}
    assert {"succeeded", "rejected", "offline"} <= outcomes
    for row in predicted:
        member = campaign.members[row["serial"]]
        assert (member.status, member.current) == (row["outcome"], row["final_release"]), row
        assert member.reason == row["reason"], row


async def test_controller_restart_resumes_from_retained_state(
    tmp_path: Path, broker: BrokerUnderTest
) -> None:
    """A controller stopped mid-campaign is replaced by one that reads the retained state and finishes."""
    fleet = make_fleet(tmp_path, servers=12)
    spec = CampaignSpec(campaign_id=f"c{uuid.uuid4().hex[:8]}", canary=3, batch="5", gate_phases=True)
    async with asyncio.timeout(TEST), running(fleet, broker, spec.campaign_id) as run:
        first = await run.controller.prepare(spec)
        await drive(run, first, until="paused")
        await run.controller.publish(first)
    async with asyncio.timeout(TEST), running(fleet, broker, spec.campaign_id) as run:
        restored = await load(run.client, spec.campaign_id)
        assert restored is not None
        assert restored.status == "paused"
        assert restored.phase == 1
        await request(run, spec.campaign_id, "resume")
        for _ in range(len(restored.phases)):
            done = await drive(run, restored, until="paused")
            if done.status != "paused":
                break
            await request(run, spec.campaign_id, "resume")
    assert restored.status == "completed"
    assert accounted(restored)
    assert restored.counts() == {"succeeded": 12}


async def test_window_stages_first_and_starts_inside(
    tmp_path: Path, mosquitto_broker: BrokerUnderTest
) -> None:
    """Servers stage their images before the window opens and activate only inside it."""
    fleet = make_fleet(tmp_path, servers=8)
    dirs = {p.serial: ServerDir(fleet.server_dir(p)) for p in fleet.plans}
    async with asyncio.timeout(TEST), running(fleet, mosquitto_broker, "w") as run:
        now = run.sim.clock().now()
        opens = now + timedelta(minutes=150)  # 3 s at x3000
        spec = CampaignSpec(
            campaign_id=f"c{uuid.uuid4().hex[:8]}", window=Window(opens, opens + timedelta(hours=10))
        )
        campaign = await run.controller.prepare(spec)
        waiting = [m for m in campaign.members.values() if m.status == "pending"]
        assert waiting
        task = asyncio.create_task(drive(run, campaign))

        def staged(member: Member) -> bool:
            server = dirs[member.serial]
            return (
                member.status == "staged"
                and any(server.update_area.glob("*.img"))
                and not any(server.update_area.glob("*.part"))
            )

        async with asyncio.timeout(30):
            while True:  # polls the folders: no event says a download finished
                if all(staged(m) for m in waiting):
                    break
                await asyncio.sleep(0.02)
        assert run.sim.clock().now() < opens  # staged before the window opened
        assert all(m.staged for m in waiting)  # every agent accepted `stage`
        assert all(m.started is None for m in waiting)
        assert all(dirs[m.serial].committed().version == m.release for m in waiting)  # nothing activated
        assert all(dirs[m.serial].journal.load() is None for m in waiting)
        async with asyncio.timeout(90):
            campaign = await task
    assert campaign.status == "completed"
    assert accounted(campaign)
    start = (opens - campaign.created).total_seconds()
    assert all((m.started or 0) >= start for m in campaign.members.values())
    assert all(when >= start for m in campaign.members.values() for when, _ in m.steps)
    assert all(m.status == "succeeded" for m in waiting)
    assert any(e["event"] == "window_opened" for e in campaign.log)
