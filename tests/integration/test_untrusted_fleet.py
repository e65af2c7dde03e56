"""The operator tools on a broker they share with strangers: poisoned retained documents are
skipped and reported, and a simulation's campaign touches only its own servers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.mqtt.connection import BrokerSettings, Protocol, connect
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from simulator.broker import Mosquitto
from tests.integration.conftest import running_agent

pytestmark = pytest.mark.integration


def poisoned(site: str) -> dict[str, bytes]:
    """Retained documents a stranger could leave: topic -> payload, each invalid in its own way."""
    good = {"schema": 1, "model": "6x", "release": "7.0", "build": "7.0.0.18", "db_schema": 11,
            "state": "idle", "maintenance_key": None, "last_result": None,
            "updated_at": "2016-01-01T00:00:00+00:00"}  # fmt: skip
    docs = {
        "EVIL1": {**good, "serial": "EVIL1", "site": "bad site!"},  # a site outside the topic alphabet
        "EVIL2": {**good, "serial": "EVIL2", "site": site, "release": "seven"},  # not a release
        "EVIL3": {**good, "serial": "SOMEONE", "site": site},  # another serial than its topic's
        "EVIL4": {**good, "serial": "EVIL4", "site": site, "last_result": ["not", "an", "object"]},
    }
    out = {f"allworx/{site}/{serial}/state": json.dumps(doc).encode() for serial, doc in docs.items()}
    out[f"allworx/{site}/EVIL5/state"] = b"\xff not json"
    for serial in ("EVIL1", "EVIL2", "EVIL3", "EVIL4", "EVIL5"):
        out[f"allworx/{site}/{serial}/availability"] = b"online"
    out[f"allworx/{site}/EVIL6/availability"] = (
        b'{"schema": 1, "serial": "EVIL6", "status": "online"}'  # the JSON form is not the contract
    )
    return out


async def retain(url: str, documents: dict[str, bytes]) -> None:
    """Publish (or, with empty payloads, clear) retained documents."""
    async with connect(BrokerSettings(url=url), protocol=Protocol.V5) as link:
        for topic, payload in documents.items():
            await link.publish(topic, payload, qos=1, retain=True)


async def fleet_cli(*args: str) -> tuple[int, Any, str]:
    """Run ``allworx-fleet ARGS --json``; return exit code, JSON document and stderr."""
    command = [sys.executable, "-c", "from fleet.cli import main; main()", *args, "--json"]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


async def test_poisoned_retained_states_are_skipped_and_reported(
    mosquitto: Mosquitto, server: ServerDir, tmp_path: Path
) -> None:
    """A dry run and status beside poisoned retained states: exit 0, the real server planned and
    listed, every poisoned state reported invalid, none of them planned."""
    ident = server.identity()
    documents = poisoned(ident.site)
    members = tmp_path / "members.json"
    members.write_text(json.dumps([ident.serial, "EVIL1", "EVIL2", "EVIL3", "EVIL4", "EVIL5", "EVIL6"]))
    await retain(mosquitto.url, documents)
    try:
        async with running_agent(server, mosquitto.url):
            code, dry, err = await fleet_cli(
                "campaign", "start", "--broker", mosquitto.url, "--id", f"{ident.site}-dry",
                "--dry-run", "--members", str(members), "--target", "7.1", "--now", "2010-01-01",
            )  # fmt: skip
            status_code, status, _ = await fleet_cli(
                "status", "--broker", mosquitto.url, "--site", ident.site
            )
    finally:
        await retain(mosquitto.url, dict.fromkeys(documents, b""))
    assert code == 0, err
    assert [row["serial"] for row in dry["dry_run"]] == [ident.serial]
    assert dry["dry_run"][0]["outcome"] == "succeeded"
    state_topics = {t for t in documents if t.endswith("/state")}
    assert {entry["topic"] for entry in dry["invalid"]} >= state_topics
    assert "retained_document_invalid" in err
    assert status_code == 0
    assert [doc["serial"] for doc in status["servers"]] == [ident.serial]
    json_availability = f"allworx/{ident.site}/EVIL6/availability"  # the JSON form: not the plain word
    assert {entry["topic"] for entry in status["invalid"]} == state_topics | {json_availability}


async def test_the_demo_on_a_shared_broker_touches_only_its_own_servers(
    mosquitto: Mosquitto, server: ServerDir, tmp_path: Path
) -> None:
    """``allworx-sim demo --broker`` beside a real server online on that broker: the demo's campaign
    completes over its own servers, and the other server is not planned, commanded or upgraded."""
    topics = ServerTopics(server.identity().site, server.identity().serial)
    async with running_agent(server, mosquitto.url) as agent:
        before = agent.outbox.last_seq
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", "from simulator.cli import main; main()", "demo",
             "--dir", str(tmp_path / "demo"), "--servers", "12", "--workers", "0", "--speed", "3000",
             "--broker", mosquitto.url],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        events = agent.outbox.pending() if agent.outbox.last_seq > before else []
        commands = [e for e in events if e.get("type") == "command"]
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert report["servers"] == 12
    assert topics.serial not in {member["serial"] for member in report["per_server"]}
    assert agent.outbox.last_seq == before, commands  # no command reached it, not even a plan
    assert server.committed().version == "7.0"
    assert server.last_result() is None
