"""Broker URLs are checked when the settings are made, so a bad one is BAD_INPUT, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.mqtt.connection import BrokerSettings
from simulator.server import ServerSpec, create_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real server folder, so the URL is the only thing wrong."""
    return create_server(
        tmp_path_factory.mktemp("s") / "hq", ServerSpec(model="6x", release="7.0", users=2)
    ).root


@pytest.mark.parametrize(
    "url",
    [
        "mqtts://127.0.0.1:true",
        "mqtt://host:0",
        "mqtt://host:70000",
        "http://host:1883",
        "mqtt://:1883",
        "host",
    ],
)
def test_bad_broker_url_is_refused_up_front(url: str, server: Path) -> None:
    """The settings refuse the URL, and ``allworx-agent run`` says so in one line with exit 1."""
    with pytest.raises(ValueError, match="must be mqtt://host:port"):
        BrokerSettings(url=url)
    result = CliRunner().invoke(main, ["run", "--server-dir", str(server), "--broker", url])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: BAD_INPUT: broker URL {url!r}"), result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("url", "port"), [("mqtt://h", 1883), ("mqtts://h", 8883), ("mqtt://h:2000", 2000)])
def test_default_ports(url: str, port: int) -> None:
    """mqtt:// defaults to 1883 and mqtts:// to 8883."""
    assert BrokerSettings(url=url).port == port
