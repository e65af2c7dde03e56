"""Operator commands (agent/mqtt/commands.py ``check_command``, the models of agent/mqtt/messages.py).

Anyone who can publish on a server's ``cmd/`` topics can send any bytes. The first byte of an input
picks the topic's command name; the second whether the harness signs the payload itself with the
trusted operator key (so that the checks after the signature, freshness and replay, see fuzzed
values too). Documented: ``check_command`` never raises; ``require_command`` raises only
CommandError (or StoreError when the nonce window cannot be written).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from agent import crypto
from agent.mqtt.commands import CommandCheck, NonceWindow, check_command, require_command, sign_command
from agent.mqtt.messages import ARGS_MODELS, Command
from common.errors import CommandError, StoreError
from tests.fuzz import fixtures
from tests.fuzz.targets import key

NAMES = (*sorted(ARGS_MODELS), "reboot")
ARGS: dict[str, dict[str, Any]] = {
    "upgrade": {"to": "8.0"},
    "plan": {"to": "7.1.2"},
    "stage": {"to": "8.0.1.12"},
    "cancel": {},
    "report": {},
}
_window: NonceWindow | None = None
FORMAT, PREFIX = "json", 2  # the structured mutator reads inputs after PREFIX bytes as JSON


def seeds() -> list[bytes]:
    """A signed command of each name (install-key carrying a real key file), sent as signed or re-signed."""
    out = []
    for name in sorted(ARGS_MODELS):
        args = ARGS[name] if name in ARGS else {"key": key.seeds()[0].decode()}
        document = sign_command(
            fixtures.OPERATOR,
            name,
            args,
            site=fixtures.SITE,
            serial=fixtures.SERIAL,
            now=fixtures.NOW - timedelta(minutes=1),
            client_token=f"t-{name}",
        )
        payload = json.dumps(document).encode()
        out += [bytes([NAMES.index(name), 0]) + payload, bytes([NAMES.index(name), 1]) + payload]
    return out


def window() -> NonceWindow:
    """This process's nonce window (in a folder of its own)."""
    global _window  # noqa: PLW0603  # reason: one window per fuzzing process, made on first use
    if _window is None:
        folder = fixtures.scratch_folder("nonces")
        _window = NonceWindow(folder / "nonces.json")
    return _window


def resigned(payload: bytes) -> bytes:
    """``payload`` signed again by the trusted operator when it is a JSON object (else as it is)."""
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError):
        return payload
    if not isinstance(raw, dict):
        return payload
    unsigned = {k: v for k, v in raw.items() if k != "signature"}
    try:
        message = crypto.canonical_json(unsigned)
    except (ValueError, RecursionError):  # NaN or a number JSON cannot write back: sent as it is
        return payload
    return json.dumps({**unsigned, "signature": crypto.sign(fixtures.OPERATOR, message).hex()}).encode()


def check(data: bytes) -> None:
    """Verify ``data[2:]`` received on ``cmd/NAME``; then accept it if it passes (remembering its nonce)."""
    if len(data) < 2:
        return
    name, payload = NAMES[data[0] % len(NAMES)], data[2:]
    if data[1] % 2:
        payload = resigned(payload)
    where = {"trusted": fixtures.TRUSTED, "site": fixtures.SITE, "serial": fixtures.SERIAL}
    result = check_command(payload, name, now=fixtures.NOW, window=window(), **where)
    assert isinstance(result, CommandCheck)
    assert (result.command is None) != (result.refusal is None), result
    try:
        require_command(payload, name, now=fixtures.NOW, window=window(), **where)
    except (CommandError, StoreError):
        return


def tokens() -> list[str]:
    """The command's JSON keys and values for libFuzzer's dictionary."""
    keys = [f'"{name}":' for name in fixtures.field_names(Command, *ARGS_MODELS.values())]
    return [*keys, *NAMES, "null", "true", "[]", "{}", *fixtures.TRICKY]
