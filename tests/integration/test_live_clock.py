"""``allworx-agent run`` without ``--now`` judges everything at the real current instant.

A maintenance key expiring at an instant stops authorising upgrades at that instant, while the
daemon runs, without a restart.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agent.keys import parse_key
from agent.mqtt.connection import BrokerSettings
from agent.mqtt.messages import JobReply, PlanReport, StateDocument
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from fleet.client import FleetClient
from fleet.operator import default_operator
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server
from tests.integration.conftest import Mosquitto, require_mosquitto

pytestmark = pytest.mark.integration


def _agent(server: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", "from agent.cli import main; main()", "run", "--server-dir", str(server)]
    return subprocess.Popen([*argv, "--broker", url, "--keepalive", "5", *extra])


async def _online(client: FleetClient, server: ServerDir) -> None:
    """Wait until the agent's retained availability says it is online."""
    ident = server.identity()
    topic = ServerTopics(ident.site, ident.serial).availability
    with client.watch(lambda m: m.topic == topic) as messages:
        await client.link.subscribe(topic, qos=1)
        async with asyncio.timeout(30):
            while (await messages.get()).payload != b"online":
                pass


async def _report(client: FleetClient, server: ServerDir) -> StateDocument:
    ident = server.identity()
    answer = await client.request(ident.site, ident.serial, "report", {}, timeout=20)
    assert answer.reply.status == "accepted", answer.reply
    assert isinstance(answer.reply.result, StateDocument), answer.reply.result
    return answer.reply.result


async def test_states_carry_the_real_time_and_advance(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Two reports a few seconds apart carry two real instants, not the start time twice."""
    require_mosquitto()
    server = create_server(
        tmp_path / "server", ServerSpec(model="6x", release="7.0", users=5, call_log_rows=10)
    )
    process = _agent(server.root, mosquitto.url)
    try:
        async with FleetClient.open(BrokerSettings(url=mosquitto.url), default_operator()) as client:
            await _online(client, server)
            first = await _report(client, server)
            await asyncio.sleep(2.5)
            second = await _report(client, server)
            now = datetime.now(UTC)
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert (second.updated_at - first.updated_at).total_seconds() >= 2.0
    assert abs((now - second.updated_at).total_seconds()) < 5


async def _plan(client: FleetClient, server: ServerDir, target: str) -> PlanReport:
    ident = server.identity()
    answer = await client.request(ident.site, ident.serial, "plan", {"to": target}, timeout=20)
    assert answer.reply.status == "accepted", answer.reply
    assert isinstance(answer.reply.result, PlanReport), answer.reply.result
    return answer.reply.result


async def test_a_key_expiring_while_the_agent_runs_stops_authorising_at_its_instant(
    tmp_path: Path, mosquitto: Mosquitto, keyring: VendorKeyring, unique_site: str
) -> None:
    """A plan seconds before the key's expiry instant would install; after it, plan and upgrade refuse."""
    require_mosquitto()
    spec = ServerSpec(
        model="6x", release="7.1", shipped=date(2009, 6, 1), users=5, call_log_rows=10, site=unique_site
    )
    server = create_server(tmp_path / "server", spec)  # shipped before ship keys: no key of its own
    process = _agent(server.root, mosquitto.url)
    try:
        async with FleetClient.open(BrokerSettings(url=mosquitto.url), default_operator()) as client:
            await _online(client, server)
            # issued once the agent is online, so a slow start under load cannot eat the margin
            expires = (datetime.now(UTC) + timedelta(seconds=7)).replace(microsecond=0)
            text = issue_key(
                keyring, serial=server.identity().serial, kind="maintenance", plan="anytime-1y",
                start=date(2026, 1, 1), expires=expires,
            )  # fmt: skip
            key_id = parse_key(text).info.key_id
            ident = server.identity()
            installed = await client.request(
                ident.site, ident.serial, "install-key", {"key": text}, timeout=20
            )
            before = await _plan(client, server, "7.2")
            answered_before = datetime.now(UTC)
            await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 1.0)
            after = await _plan(client, server, "7.2")
            upgrade = (
                await client.request(ident.site, ident.serial, "upgrade", {"to": "7.2"}, timeout=20)
            ).reply
            state = await _report(client, server)
            running = process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert installed.reply.status == "accepted", installed.reply
    assert answered_before < expires
    assert before.steps[0].outcome == "would-install"
    assert before.steps[0].authorised_by == f"maintenance:{key_id}"
    assert running
    assert (after.steps[0].outcome, after.steps[0].reason) == ("refused", "MAINTENANCE_KEY_EXPIRED")
    assert (upgrade.status, upgrade.reason, upgrade.rule) == ("rejected", "MAINTENANCE_KEY_EXPIRED", "SWM-2")
    assert isinstance(upgrade.result, JobReply)
    assert upgrade.result.job is None
    assert server.committed().version == "7.1"
    assert state.maintenance_key is not None
    assert (state.maintenance_key.valid, state.maintenance_key.expires) == (False, expires)
