"""The service layer: systemd notifications, the health and metrics listener, the config file."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest

from agent.service.config import ConfigError, load_config
from agent.service.health import Health, HealthServer, Metrics
from agent.service.notify import Notifier


def _datagram_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock, path


def test_notifier_sends_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    """Each notification arrives as one datagram of newline-separated assignments."""
    sock, path = _datagram_socket(tmp_path)
    with sock:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        notifier.ready("connected, idle")
        notifier.status("connected, idle")  # unchanged: not sent again
        notifier.status("upgrading 7.4 -> 7.5")
        notifier.watchdog()
        notifier.stopping()
        got = [sock.recv(4096).decode() for _ in range(4)]
    assert got[0] == "READY=1\nSTATUS=connected, idle"
    assert got[1] == "STATUS=upgrading 7.4 -> 7.5"
    assert got[2] == "WATCHDOG=1"
    assert got[3].startswith("STOPPING=1")
    assert notifier.watchdog_interval == 2.0


def test_notifier_without_socket_does_nothing() -> None:
    """Outside systemd the notifier is silent and has no watchdog."""
    notifier = Notifier({})
    notifier.ready("idle")
    assert not notifier.enabled
    assert notifier.watchdog_interval is None


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    """WATCHDOG_PID naming another process switches the pings off."""
    notifier = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier.watchdog_interval is None


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_health_answers_200_then_503_when_the_broker_is_down_too_long() -> None:
    """/healthz is 200 while connected and 503 once the session was down past the threshold."""
    state = {"connected": True, "down": 0.0}

    def health() -> Health:
        return Health(
            broker_connected=state["connected"] is True,
            broker_down_seconds=float(state["down"]),
            seconds_since_state=1.5,
            outbox_depth=3,
            journal_state=None,
            journal_state_seconds=0.0,
            current_job=None,
        )

    server = HealthServer(health, Metrics(), down_after=10)
    _, port = await server.start("127.0.0.1", 0)
    try:
        status, body = await _get(port, "/healthz")
        assert status == 200
        assert json.loads(body)["outbox_depth"] == 3
        state.update(connected=False, down=5.0)
        assert (await _get(port, "/healthz"))[0] == 200  # a short outage is tolerated
        state.update(down=11.0)
        status, body = await _get(port, "/healthz")
        assert status == 503
        assert "broker" in json.loads(body)["reason"]
        assert (await _get(port, "/nope"))[0] == 404
    finally:
        await server.close()


async def test_metrics_count_steps_and_refusals() -> None:
    """/metrics is the Prometheus text format with the counters the agent bumped."""
    metrics = Metrics()
    metrics.steps.labels(outcome="committed").inc()
    metrics.refusals.labels(reason="MAINTENANCE_KEY_EXPIRED").inc()
    server = HealthServer(lambda: Health(True, 0, None, 0, None, 0, None), metrics)
    _, port = await server.start("127.0.0.1", 0)
    try:
        status, body = await _get(port, "/metrics")
    finally:
        await server.close()
    text = body.decode()
    assert status == 200
    assert 'allworx_upgrade_steps_total{outcome="committed"} 1.0' in text
    assert 'allworx_refusals_total{reason="MAINTENANCE_KEY_EXPIRED"} 1.0' in text


def test_metrics_of_two_agents_do_not_mix() -> None:
    """Each agent's metrics live in a registry of their own."""
    one, two = Metrics(), Metrics()
    one.rollbacks.inc()
    assert b"allworx_rollbacks_total 1.0" in one.render()
    assert b"allworx_rollbacks_total 0.0" in two.render()


def test_config_loads_options_under_run_parameter_names(tmp_path: Path) -> None:
    """Options come back under run's parameter names, typed."""
    path = tmp_path / "agent.toml"
    path.write_text(
        'broker = "mqtts://b:8883"\nkeepalive = 20\nlog_level = "debug"\npassword_file = "/etc/p"\n'
    )
    assert load_config(path) == {
        "broker": "mqtts://b:8883",
        "keepalive": 20,
        "log_level": "debug",
        "password_file": "/etc/p",
    }


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('brokr = "x"\n', "brokr", "Extra inputs are not permitted"),
        ('keepalive = "30"\n', "keepalive", "Input should be a valid integer"),
        ("keepalive = 0\n", "keepalive", "greater than or equal to 1"),
        ('log_level = "loud"\n', "log_level", "Input should be"),
        ("broker = \n", "(file)", "not TOML"),
    ],
)
def test_config_refuses_a_bad_file_naming_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    """An unknown key, a wrong type or broken TOML is one CONFIG_INVALID naming file and key."""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.reason.value == "CONFIG_INVALID"
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_config_refuses_a_missing_file_and_a_directory(tmp_path: Path) -> None:
    """A missing file, and a directory in its place, are refused."""
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)


def test_redaction_removes_key_material_and_keeps_digests() -> None:
    """Armoured keys, signatures and secret fields never reach a log line; SHA-256 digests stay."""
    from agent.logs import REDACTED, redact

    digest = "ab" * 32
    signature = "cd" * 64
    key = (
        "-----BEGIN ALLWORX KEY-----\nSerial: AWX1\nSignature:\n  "
        + "QUJD" * 20
        + "\n-----END ALLWORX KEY-----"
    )
    event = redact(
        None,
        "info",
        {
            "event": "key_installed",
            "text": f"installed {key}",
            "password": "hunter2",
            "doc": {"signature": signature, "sha256": digest, "nested": [f"sig {signature}"]},
            "image_sha256": digest,
        },
    )
    flat = repr(event)
    assert "hunter2" not in flat
    assert signature not in flat
    assert "QUJDQUJD" not in flat
    assert "BEGIN ALLWORX KEY" not in flat
    assert event["image_sha256"] == digest
    assert event["doc"]["sha256"] == digest
    assert event["password"] == REDACTED


def test_a_manager_that_does_not_read_never_stalls_the_agent(tmp_path: Path) -> None:
    """With the notify socket's queue full, notifications are dropped at once instead of blocking."""
    sock, path = _datagram_socket(tmp_path)
    with sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        for _ in range(1000):  # far past the kernel's datagram queue for an unread socket
            notifier.watchdog()
    assert notifier.dropped > 0
