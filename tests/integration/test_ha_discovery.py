"""``allworx-agent run --ha-discovery`` announces the server to Home Assistant over a real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.mqtt.connection import BrokerSettings
from agent.mqtt.discovery import Discovery
from agent.mqtt.topics import ServerTopics
from fleet.client import FleetClient
from simulator.broker import Mosquitto
from simulator.server import ServerSpec, create_server

pytestmark = pytest.mark.integration


async def test_discovery_configs_and_values_are_retained(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Three retained discovery configs (update, two sensors) and the values they read appear."""
    server = create_server(
        tmp_path / "server",
        ServerSpec(model="6x", release="7.0", users=5, call_log_rows=10, site=tmp_path.name[-20:]),
    )
    ident = server.identity()
    topics = ServerTopics(ident.site, ident.serial)
    expected = dict(Discovery(topics, "ha-test").configs("6x"))
    argv = [
        sys.executable,
        "-c",
        "from agent.cli import main; main()",
        "run",
        "--server-dir",
        str(server.root),
    ]
    argv += ["--broker", mosquitto.url, "--now", "2010-01-01", "--ha-discovery", "--ha-prefix", "ha-test"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)  # noqa: ASYNC220  # reason: stopped in finally
    seen: dict[str, bytes] = {}
    values_topic = Discovery(topics, "ha-test").values_topic
    try:
        async with FleetClient.open(BrokerSettings(url=mosquitto.url)) as client:
            with client.watch(lambda m: m.topic in expected or m.topic == values_topic) as messages:
                await client.link.subscribe("ha-test/#", qos=1)
                await client.link.subscribe(values_topic, qos=1)
                async with asyncio.timeout(30):
                    while len(seen) < len(expected) + 1:
                        message = await messages.get()
                        seen[message.topic] = message.payload
    finally:
        process.terminate()
        process.wait(timeout=15)
    for topic, config in expected.items():
        assert json.loads(seen[topic]) == config
    found = json.loads(seen[values_topic])
    assert found["update"]["installed_version"] == "7.0"
    assert found["update"]["latest_version"] == "7.1"  # at 2010-01-01, 7.1 needs no key (SWM-1)
    assert found["update"]["in_progress"] is False
