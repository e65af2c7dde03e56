"""Inputs parser fuzzing turned up (by the fuzzers or in writing their targets), each refused in one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agent.cliutil import read_password
from agent.keys import parse_key
from agent.lock import _holder
from agent.mqtt.cli import _address, broker_settings_from
from agent.revocation import parse_revocation_list
from agent.service.config import ConfigError, load_config
from agent.service.notify import Notifier
from common.errors import KeyFormatError, StoreError
from fleet.campaign.controller import load_trusted
from fleet.campaign.model import Campaign
from fleet.campaign.spec import MAX_MEMBERS_FILE, CampaignSpecError, load_members, load_networks
from fleet.report import build_report
from fleet.report.html import render_html
from fleet.select import MAX_SERIAL_FILE, SelectionError, parse_selection
from fleet.status import FleetStatus, print_table
from simulator.fleet.spec import FleetFileError, load_toml
from simulator.scenario.model import ScenarioFileError
from simulator.scenario.parse import load_scenario
from tests.fuzz.targets import campaign, config, key, revocation
from tests.unit.test_select import state


def test_a_config_value_holding_a_nul_is_refused_naming_the_key(tmp_path: Path) -> None:
    """``ca = "\\u0000"`` is a ConfigError on ``ca`` (it was a bare ValueError from os.stat in click)."""
    path = tmp_path / "agent.toml"
    path.write_bytes(b'ca = "\\u0000"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "ca"
    assert "NUL" in caught.value.problem


@pytest.mark.parametrize("data", [b'ca = "\\u0000"\n', b'server_dir = "/srv/\\u0000"\n'])
def test_the_config_target_passes_the_nul_inputs(data: bytes) -> None:
    """The fuzz target's whole path (load, run's options, their checks) takes the found inputs."""
    config.check(data)


FEATURE_KEY = key.seeds()[2].decode()  # a signed feature key with "Count: 4"
FIRST_LIST = revocation.seeds()[0].decode()  # a signed revocation list with "Sequence: 3"


@pytest.mark.parametrize("count", ["²", "١٢"])
def test_a_key_count_of_other_digits_is_a_key_format_error(count: str) -> None:
    """``Count: ²`` (a digit to str.isdigit, not to int) is KeyFormatError, not a bare ValueError."""
    text = FEATURE_KEY.replace("Count: 4", f"Count: {count}")
    with pytest.raises(KeyFormatError, match="Count must be a whole number"):
        parse_key(text)


@pytest.mark.parametrize("sequence", ["²", "١٢"])
def test_a_revocation_sequence_of_other_digits_is_a_key_format_error(sequence: str) -> None:
    """``Sequence: ²`` is KeyFormatError, and ``Sequence: ١٢`` is not read as 12."""
    text = FIRST_LIST.replace("Sequence: 3", f"Sequence: {sequence}")
    with pytest.raises(KeyFormatError, match="Sequence must be a whole number"):
        parse_revocation_list(text)


def test_a_health_port_of_other_digits_is_refused_as_host_port() -> None:
    """``health = "h:²"`` is refused with the HOST:PORT message, not int()'s."""
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        _address("h:²")


def test_a_password_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """``password_file`` naming a FIFO of mode 0600 is a ValueError at once (reading it waited forever)."""
    fifo = tmp_path / "password"
    os.mkfifo(fifo, 0o600)
    raised = raised_within(lambda: read_password(None, fifo), 5)
    if raised is None:
        with open(fifo, "wb"):  # unblock the reader
            pass
    assert isinstance(raised, ValueError), raised
    assert "not a regular file" in str(raised)


def raised_within(call: Callable[[], Any], seconds: float) -> BaseException | None:
    """What ``call`` raised, if it returned within ``seconds`` (else None; it is left blocked)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except Exception as exc:  # the caller checks the type
            outcome.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=seconds)
    return outcome[0] if outcome else None


LOADERS = [
    pytest.param(load_scenario, ScenarioFileError, 1024 * 1024, id="scenario"),
    pytest.param(load_toml, FleetFileError, 1024 * 1024, id="fleet"),
    pytest.param(load_networks, CampaignSpecError, 16 * 1024 * 1024, id="networks"),
    pytest.param(load_members, CampaignSpecError, MAX_MEMBERS_FILE, id="members"),
]


@pytest.mark.parametrize(("load", "error", "limit"), LOADERS)
def test_a_file_loader_refuses_a_fifo_at_once(
    load: Any, error: type[Exception], limit: int, tmp_path: Path
) -> None:
    """A scenario, fleet, networks or members file that is a FIFO is its loader's error at once."""
    fifo = tmp_path / "input"
    os.mkfifo(fifo, 0o600)
    raised = raised_within(lambda: load(fifo), 5)
    if raised is None:
        with open(fifo, "wb"):  # unblock the reader
            pass
    assert isinstance(raised, error), raised
    assert "not a regular file" in str(raised)


@pytest.mark.parametrize(("load", "error", "limit"), LOADERS)
def test_a_file_loader_refuses_a_file_past_its_limit(
    load: Any, error: type[Exception], limit: int, tmp_path: Path
) -> None:
    """A file one byte past the loader's limit is refused unread (/dev/zero ended in MemoryError)."""
    path = tmp_path / "big"
    with open(path, "wb") as handle:
        handle.truncate(limit + 1)
    with pytest.raises(error, match="larger than"):
        load(path)


def retained_campaign(**member: Any) -> dict[str, Any]:
    """The campaign target's retained state with these member fields changed."""
    raw: dict[str, Any] = json.loads(campaign.seeds()[2][1:])
    raw["members"][0].update(member)
    return raw


@pytest.mark.parametrize("release", ["7.²", "7.١٢", "7.x"])
def test_a_report_names_a_spoofed_release_as_it_is(release: str) -> None:
    """A member reporting release ``7.²`` (a digit to str.isdigit, not to int) is a row of the report."""
    report = build_report(Campaign.from_dict(retained_campaign(release=release, current=release)))
    assert list(report["releases_before"]) == [release]
    assert f"<td>{release}</td>" in render_html(report)


@pytest.mark.parametrize("usec", ["²", "١٢"])
def test_a_watchdog_interval_of_other_digits_is_no_watchdog(usec: str) -> None:
    """``WATCHDOG_USEC=²`` (int() refuses it) and ``١٢`` (int() takes it) leave the watchdog off."""
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_interval is None


def test_a_lock_holder_written_in_other_digits_is_another_process(tmp_path: Path) -> None:
    """A lock file holding ``²`` names no process (its holder is "another process")."""
    path = tmp_path / ".lock"
    path.write_text("²")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _holder(fd) == "another process"
    finally:
        os.close(fd)


def fifo_at(path: Path) -> Path:
    """A FIFO of mode 0600 at ``path``."""
    os.mkfifo(path, 0o600)
    return path


def unblock(fifo: Path) -> None:
    """Open ``fifo`` for writing without blocking, so that a reader left waiting on it returns."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("option", ["ca", "cert", "key"])
def test_a_tls_file_that_is_a_fifo_is_refused_at_once(option: str, tmp_path: Path) -> None:
    """``--ca``/``--cert``/``--key`` naming a FIFO is a ValueError naming it at once (ssl waited forever)."""
    fifo = fifo_at(tmp_path / option)
    params = {"broker": "mqtts://127.0.0.1:8883", "ca": None, "cert": None, "key": None, "username": None,
              "password": None, "password_file": None, option: str(fifo)}  # fmt: skip
    raised = raised_within(lambda: broker_settings_from(params).tls_context(), 5)
    if raised is None:
        unblock(fifo)
    assert isinstance(raised, ValueError), raised
    assert f"{fifo} is not a regular file" in str(raised)


def test_a_serial_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """``--select serial=@FIFO`` is a SelectionError at once (reading it waited forever)."""
    fifo = fifo_at(tmp_path / "serials")
    raised = raised_within(lambda: parse_selection([f"serial=@{fifo}"]), 5)
    if raised is None:
        unblock(fifo)
    assert isinstance(raised, SelectionError), raised
    assert "not a regular file" in str(raised)


def test_a_serial_file_past_its_limit_is_refused(tmp_path: Path) -> None:
    """A serial file one byte past its limit is a SelectionError, unread."""
    path = tmp_path / "serials"
    with open(path, "wb") as handle:
        handle.truncate(MAX_SERIAL_FILE + 1)
    with pytest.raises(SelectionError, match="larger than"):
        parse_selection([f"serial=@{path}"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("serial", 5), ("site", None), ("model", ["6x"]), ("release", 7.0), ("target", {}), ("phase", "0"),
     ("phase", True), ("current", 7), ("reason", 1), ("rule", []), ("message", {}), ("staged", "yes"),
     ("started", "soon"), ("finished", True), ("baseline", 3), ("last_at", 3.5), ("steps", "7.0"),
     ("prediction", [1])],
)  # fmt: skip
def test_a_retained_member_field_of_another_type_is_a_type_error(field: str, value: Any) -> None:
    """A member field of the wrong JSON type in a retained campaign is refused with TypeError naming it."""
    with pytest.raises(TypeError, match=field):
        Campaign.from_dict(retained_campaign(**{field: value}))


def test_the_status_table_goes_to_the_console_it_is_given() -> None:
    """``print_table`` writes to a Console given to it that is no terminal, not to stdout."""
    out = io.StringIO()
    print_table(FleetStatus([state(serial="AWX7")]), Console(file=out))
    assert "AWX7" in out.getvalue()


def test_an_operator_key_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A ``*.pub`` FIFO in the controller's ``--trust`` folder is a StoreError naming it at once."""
    fifo = fifo_at(tmp_path / "operator.pub")
    raised = raised_within(lambda: load_trusted(tmp_path), 5)
    if raised is None:
        unblock(fifo)
    assert isinstance(raised, StoreError), raised
    assert f"{fifo}: not an operator public key" in str(raised)
