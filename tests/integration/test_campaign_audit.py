"""A campaign's audit log over a real Mosquitto: requests typed by two operators, read by ``campaign log``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent import crypto
from agent.opkeys import trust_operator
from fleet.campaign.controller import load_documents
from fleet.campaign.spec import CampaignSpec
from fleet.client import FleetClient
from fleet.operator import OperatorKey, default_operator
from tests.integration.conftest import BrokerUnderTest
from tests.integration.test_campaigns import TEST, drive, make_fleet, mosquitto_broker, running

__all__ = ["mosquitto_broker"]  # the fixture this module uses
pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def request(url: str, key_file: Path | None, campaign_id: str, action: str) -> dict[str, Any]:
    """``allworx-fleet campaign ACTION --id ID [--operator-key FILE]`` as an operator types it."""
    chosen = ["--operator-key", str(key_file)] if key_file else []
    done = await asyncio.to_thread(cli, "campaign", action, f"--id={campaign_id}", "--broker", url, *chosen,
                                   "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``allworx-fleet`` with ``args``."""
    command = [sys.executable, "-m", "fleet.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


async def test_requests_of_two_operators_are_logged_in_order(
    tmp_path: Path, mosquitto_broker: BrokerUnderTest
) -> None:
    """Two operators' requests (``campaign pause|resume|abort``) are logged with their key ids, in order;
    report and list read the campaign."""
    first = default_operator()
    private = crypto.generate_private_key()
    second = OperatorKey(private, crypto.public_key(private))
    second_file = tmp_path / "second.key"
    second_file.write_text(private.hex() + "\n")
    second_file.chmod(0o600)
    url = mosquitto_broker.url
    fleet = make_fleet(tmp_path, servers=8)
    for plan in fleet.plans:  # the servers trust the second operator too
        trust_operator(fleet.server_dir(plan), second.public, "second")
    spec = CampaignSpec(campaign_id=f"c{uuid.uuid4().hex[:8]}", canary=2, batch="3", gate_phases=True)
    async with asyncio.timeout(TEST), running(fleet, mosquitto_broker, spec.campaign_id) as run:
        run.controller.trusted[second.key_id] = second.public
        campaign = await run.controller.prepare(spec)
        await run.controller.publish(campaign)  # on the broker, as campaign start makes it
        answers = [await request(url, None, spec.campaign_id, "pause")]
        await drive(run, campaign, until="paused")
        target = fleet.plans[0]
        async with FleetClient.open(run.sim.settings, second, protocol=mosquitto_broker.protocol) as other:
            answer = await other.request(target.site, target.serial, "report", {}, timeout=20)
        assert answer.reply.status == "accepted"
        answers.append(await request(url, second_file, spec.campaign_id, "resume"))
        await drive(run, campaign, until="paused")
        answers.append(await request(url, None, spec.campaign_id, "abort"))
        await drive(run, campaign)
        retained: dict[str, Any] = await load_documents(run.client, spec.campaign_id)
        shown = cli("campaign", "log", spec.campaign_id, "--broker", mosquitto_broker.url, "--json")
        out = tmp_path / "report"
        reported = cli(
            "campaign", "report", spec.campaign_id, "--out", str(out), "--broker", mosquitto_broker.url
        )
        listed = cli("campaign", "list", "--broker", mosquitto_broker.url, "--json")
    expected = [
        ("pause", first.key_id),
        (f"send report {target.serial}", second.key_id),
        ("resume", second.key_id),
        ("abort", first.key_id),
    ]
    assert [(a["action"], a["key_id"]) for a in answers] == [expected[0], *expected[2:]]
    for log in (retained["log"], json.loads(shown.stdout)["log"]):
        requests = [e for e in log if e["event"] == "operator"]
        assert [(_action(e), e["key_id"]) for e in requests] == expected
        assert all(e["wall"] for e in requests)
        times = [e["t"] for e in requests]
        assert times == sorted(times)
    assert campaign.status == "cancelled"
    assert reported.returncode == 0, reported.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["servers"] == 8
    assert report["status"] == "cancelled"
    assert "<script>" in (out / "report.html").read_text()
    mine = [c for c in json.loads(listed.stdout)["campaigns"] if c["campaign_id"] == spec.campaign_id]
    assert [(c["status"], c["members"]) for c in mine] == [("cancelled", 8)]


def _action(entry: dict[str, Any]) -> str:
    return f"{entry['action']} {entry['serial']}" if "serial" in entry else str(entry["action"])
