"""Signed operator commands: every way a command can be bad is refused with its own reason code."""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import crypto
from agent.mqtt.commands import MAX_LIFETIME, NonceWindow, check_command, require_command, sign_command
from agent.mqtt.connection import BrokerSettings
from agent.mqtt.daemon import Agent, AgentOptions
from agent.store import ServerDir
from common.errors import CommandError
from common.reasons import Reason

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
OPERATOR = bytes(range(32))
STRANGER = bytes(range(1, 33))
TRUSTED = {crypto.fingerprint(crypto.public_key(OPERATOR)): crypto.public_key(OPERATOR)}
COMMAND_REASONS = {r for r in Reason if r.value.startswith("COMMAND_")}


def signed(name: str = "upgrade", args: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    key = overrides.pop("key", OPERATOR)
    document = sign_command(
        key,
        name,
        {"to": "7.1"} if args is None else args,
        site="lab",
        serial="AWX1",
        now=overrides.pop("now", NOW),
        lifetime=overrides.pop("lifetime", timedelta(minutes=5)),
    )
    document.update(overrides)
    return document


_SCRATCH = tempfile.TemporaryDirectory(prefix="test-commands-")  # removed when the session ends


def check(payload: bytes | dict[str, Any], name: str = "upgrade", window: NonceWindow | None = None) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    window = window or NonceWindow(Path(tempfile.mkdtemp(dir=_SCRATCH.name)) / "nonces.json")
    return check_command(raw, name, trusted=TRUSTED, site="lab", serial="AWX1", now=NOW, window=window)


@dataclass(frozen=True)
class Case:
    """A bad command and the reason it must be refused with."""

    name: str
    payload: bytes | dict[str, Any]
    reason: Reason
    topic: str = "upgrade"


def _forged() -> dict[str, Any]:
    document = signed()
    document["args"] = {"to": "8.0"}
    return document


CASES = [
    Case("too large", b"{" + b" " * 70_000 + b"}", Reason.COMMAND_TOO_LARGE),
    Case("not UTF-8", b"\xff\xfe", Reason.COMMAND_MALFORMED),
    Case("not JSON", b"{upgrade", Reason.COMMAND_MALFORMED),
    Case("a JSON list", b"[]", Reason.COMMAND_MALFORMED),
    Case("unknown command", signed(), Reason.COMMAND_UNKNOWN, topic="format-disk"),
    Case("wrong schema version", signed(schema=2), Reason.COMMAND_MALFORMED),
    Case("no signature", {k: v for k, v in signed().items() if k != "signature"}, Reason.COMMAND_UNSIGNED),
    Case("signature not hex", signed(signature="zz"), Reason.COMMAND_MALFORMED),
    Case("argument of the wrong type", signed(args={"to": 8}), Reason.COMMAND_MALFORMED),
    Case("unknown argument", signed(args={"to": "7.1", "force": True}), Reason.COMMAND_MALFORMED),
    Case("unknown field", signed(extra=1), Reason.COMMAND_MALFORMED),
    Case("sent on another command's topic", signed("plan"), Reason.COMMAND_MALFORMED),
    Case("untrusted operator", signed(key=STRANGER), Reason.COMMAND_SIGNER_UNTRUSTED),
    Case("forged arguments", _forged(), Reason.COMMAND_SIGNATURE_INVALID),
    Case("another server's", {**signed(), "serial": "AWX2"}, Reason.COMMAND_SIGNATURE_INVALID),
    Case("expired", signed(now=NOW - timedelta(minutes=6)), Reason.COMMAND_EXPIRED),
    Case("from the future", signed(now=NOW + timedelta(minutes=10)), Reason.COMMAND_EXPIRED),
    Case("lifetime too long", signed(lifetime=MAX_LIFETIME * 2), Reason.COMMAND_EXPIRED),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_commands_are_refused_with_their_reason(case: Case) -> None:
    """Each bad command is refused with its own reason code and a rule ID."""
    result = check(case.payload, case.topic)
    assert result.refusal is not None and result.refusal.reason is case.reason
    assert result.refusal.rule.startswith("CMD-")


def test_a_good_command_is_accepted_once(tmp_path: Path) -> None:
    """A signed, fresh command is accepted; the same bytes again are a replay, even after a restart."""
    payload = json.dumps(signed()).encode()
    window = NonceWindow(tmp_path / "nonces.json")
    command = require_command(
        payload, "upgrade", trusted=TRUSTED, site="lab", serial="AWX1", now=NOW, window=window
    )
    assert command.args == {"to": "7.1"}
    with pytest.raises(CommandError) as refused:
        require_command(
            payload,
            "upgrade",
            trusted=TRUSTED,
            site="lab",
            serial="AWX1",
            now=NOW,
            window=NonceWindow(tmp_path / "nonces.json"),
        )
    assert refused.value.reason is Reason.COMMAND_REPLAYED


def test_the_window_forgets_only_expired_nonces(tmp_path: Path) -> None:
    """Nonces are pruned once their command expired (the expiry check then refuses a replay)."""
    window = NonceWindow(tmp_path / "nonces.json")
    window.remember("a" * 16, NOW, NOW)
    window.remember("b" * 16, NOW + timedelta(minutes=5), NOW + timedelta(minutes=1))
    assert not window.seen("a" * 16) and window.seen("b" * 16)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_arbitrary_bytes_are_refused_never_raised(payload: bytes) -> None:
    """Whatever bytes arrive, verification returns a COMMAND_* refusal and never raises."""
    result = check(payload)
    assert result.refusal is not None and result.refusal.reason in COMMAND_REASONS


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(signed())), JSON, st.sampled_from(["upgrade", "plan", "cancel", "report", "x"]))
def test_any_tampered_field_is_refused(field: str, value: Any, topic: str) -> None:
    """Replacing any field of a signed command with any JSON value never yields an accepted command."""
    document = signed()
    if document[field] == value:
        return
    document[field] = value
    result = check(document, topic)
    assert result.refusal is not None and result.refusal.reason in COMMAND_REASONS


@cache
def _server() -> ServerDir:
    from simulator.server import ServerSpec, create_server

    root = Path(tempfile.mkdtemp(dir=_SCRATCH.name)) / "server"
    return create_server(root, ServerSpec(model="6x", release="7.0", users=5, call_log_rows=50, site="lab"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["upgrade", "plan", "cancel", "install-key", "report", "reboot"]),
    st.binary(max_size=512) | JSON.map(lambda v: json.dumps(v).encode()),
)
def test_the_agent_answers_every_malformed_command_and_keeps_its_state(
    sim_home: Path, name: str, payload: bytes
) -> None:
    """The daemon's dispatcher answers any malformed command rejected with a reason, state untouched."""
    server = _server()
    before = (server.committed(), server.key_digest(), server.journal.load())

    async def answer() -> Any:
        agent = Agent(server, AgentOptions(broker=BrokerSettings()), clock=_clock())
        try:
            return agent.dispatcher.handle(payload, name)
        finally:
            agent.close()

    reply = asyncio.run(answer())
    assert reply.status == "rejected" and reply.reason in {r.value for r in COMMAND_REASONS}
    assert (server.committed(), server.key_digest(), server.journal.load()) == before


def _clock() -> Any:
    from agent.clock import SimClock

    return SimClock(datetime(2010, 1, 1, tzinfo=UTC), speed=float("inf"))
