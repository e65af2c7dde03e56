"""The agent's configuration file (agent/service/config.py ``load_config``) and what ``allworx-agent run``
makes of it before it starts (agent/mqtt/cli.py: the options, the broker settings, ``--site``,
``--health`` and ``--now``).

Documented: ``load_config`` raises only ConfigError; the command refuses the file with one error
line (``fail``: SystemExit 1); an option's value is refused by click (ClickException); the broker
settings, the site, the health address and the start instant raise ValueError.
"""

from __future__ import annotations

from pathlib import Path

import click

from agent.clock import parse_now
from agent.mqtt.cli import _address, broker_settings_from, run
from agent.mqtt.topics import check_level
from agent.service.config import AgentConfig, ConfigError, load_config
from tests.fuzz import fixtures

SEEDS = (
    'server_dir = "/var/lib/allworx"\nbroker = "mqtt://127.0.0.1:1883"\nsite = "hq"\nkeepalive = 30\n'
    'mqtt_version = "5"\nlog_level = "debug"\nlog_format = "json"\nhealth = "127.0.0.1:9464"\n'
    'health_down_after = 30.5\nha_discovery = true\nha_prefix = "homeassistant"\n',
    'broker = "mqtts://broker.example:8883"\nusername = "agent"\npassword = "s3cret"\n'
    'now = "2015-06-01"\nspeed = 60.0\nmqtt_version = "3.1.1"\n',
    'now = "2026-11-30T18:05:00+02:00"\nspeed = inf\nhealth = "[::1]:0"\n',
    "",
)
_folder: Path | None = None
FORMAT, PREFIX = "toml", 0  # the structured mutator reads inputs after PREFIX bytes as TOML


def seeds() -> list[bytes]:
    """Configuration files setting every option."""
    return [seed.encode() for seed in SEEDS]


def config_file() -> Path:
    """This process's configuration file path (in a folder of its own)."""
    global _folder  # noqa: PLW0603  # reason: one folder per fuzzing process, made on first use
    if _folder is None:
        _folder = fixtures.scratch_folder("config")
    return _folder / "agent.toml"


def check(data: bytes) -> None:
    """Write ``data`` as the configuration file; load it; parse ``run``'s options from it and check them."""
    path = config_file()
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError:
        return
    try:
        ctx = run.make_context("run", ["--config", str(path), "--server-dir", "/nonexistent"])
    except (SystemExit, click.ClickException):
        return
    p = ctx.params
    for step in (
        lambda: broker_settings_from(p),
        lambda: p["site"] is None or check_level(p["site"], "site"),
        lambda: p["health"] is None or _address(p["health"]),
        lambda: p["now"] is None or parse_now(p["now"]),
    ):
        try:
            step()
        except ValueError:
            continue


def tokens() -> list[str]:
    """The file's keys for libFuzzer's dictionary."""
    return [*(f"{key} = " for key in fixtures.field_names(AgentConfig)), *fixtures.TRICKY]
