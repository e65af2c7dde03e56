"""Verification of signed operator commands (rules CMD-1 to CMD-4, docs/mqtt.md).

The checks run in this order and the first that fails decides the reason code:

1. size (``COMMAND_TOO_LARGE``), JSON object (``COMMAND_MALFORMED``), known command name
   (``COMMAND_UNKNOWN``) — rule CMD-4;
2. a signature is present (``COMMAND_UNSIGNED``), the fields are well-formed (``COMMAND_MALFORMED``);
3. ``key_id`` names a trusted operator key (``COMMAND_SIGNER_UNTRUSTED``) and the Ed25519
   signature over the canonical JSON of every other field verifies (``COMMAND_SIGNATURE_INVALID``)
   — rule CMD-1; the command names this server (``COMMAND_WRONG_TARGET``);
4. ``issued_at <= now + skew``, ``now <= expires_at`` and a lifetime of at most
   :data:`MAX_LIFETIME` (``COMMAND_EXPIRED``) — rule CMD-2;
5. the nonce was never accepted before (``COMMAND_REPLAYED``) — rule CMD-3.

Invariants: verification never raises for bad input (it returns a :class:`CommandCheck`), only
:func:`require_command` does. An accepted nonce is persisted (atomically) *before* the command
acts, and kept until its command expires: after that, the expiry check refuses a replay, so the
window stays small (at most the commands of the last :data:`MAX_LIFETIME`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent import crypto
from agent.fileio import DURABLE, Disk, read_json, write_json
from agent.mqtt.messages import ARGS_MODELS, MAX_COMMAND_BYTES, SCHEMA_VERSION, Command
from common.errors import CommandError, StoreError
from common.jsonedge import JsonObject  # a command as received (before its model) and as signed
from common.reasons import Reason, Refusal

MAX_LIFETIME = timedelta(minutes=15)  # the longest a signed command may stay valid
CLOCK_SKEW = timedelta(minutes=2)  # how far in the future ``issued_at`` may be
MAX_NONCES = 10_000  # remembered nonces; more than this many live commands is refused as a flood


@dataclass(frozen=True, slots=True)
class CommandCheck:
    """The outcome of verifying one command: the command, or the refusal and why."""

    name: str
    client_token: str | None
    command: Command | None = None
    refusal: Refusal | None = None

    @property
    def ok(self) -> bool:
        """Whether the command may act."""
        return self.refusal is None and self.command is not None


class NonceWindow:
    """The persisted set of accepted nonces, each kept until its command's expiry (rule CMD-3)."""

    def __init__(self, path: Path, *, disk: Disk = DURABLE) -> None:
        self.path = path
        self.disk = disk
        self._nonces: dict[str, datetime] = {}
        if path.exists():
            try:
                raw = read_json(path)
                self._nonces = {str(k): datetime.fromisoformat(v) for k, v in dict(raw).items()}
            except (StoreError, TypeError, ValueError, AttributeError):
                self._nonces = {}  # an unreadable window: stale commands are still refused by expiry

    def seen(self, nonce: str) -> bool:
        """Whether ``nonce`` was accepted before."""
        return nonce in self._nonces

    def full(self, now: datetime) -> bool:
        """Whether the window holds :data:`MAX_NONCES` live nonces."""
        return sum(1 for exp in self._nonces.values() if exp >= now) >= MAX_NONCES

    def remember(self, nonce: str, expires_at: datetime, now: datetime) -> None:
        """Persist ``nonce`` (forgetting the expired ones) before its command acts.

        Raises:
            StoreError: the window cannot be written.
        """
        self._nonces = {k: v for k, v in self._nonces.items() if v >= now}
        self._nonces[nonce] = expires_at
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {k: v.isoformat() for k, v in self._nonces.items()}, disk=self.disk)


def _refuse(name: str, token: str | None, reason: Reason, rule: str, message: str) -> CommandCheck:
    return CommandCheck(name, token, None, Refusal(reason, rule, message))


def _token(raw: Any) -> str | None:
    token = raw.get("client_token") if isinstance(raw, dict) else None
    return token if isinstance(token, str) and 0 < len(token) <= 64 and token.isprintable() else None


def _parse(payload: bytes, name: str) -> CommandCheck | JsonObject:  # noqa: PLR0911  # reason: one return per ordered check
    if len(payload) > MAX_COMMAND_BYTES:
        return _refuse(
            name,
            None,
            Reason.COMMAND_TOO_LARGE,
            "CMD-4",
            f"The command is {len(payload)} bytes; the limit is {MAX_COMMAND_BYTES}.",
        )
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _refuse(name, None, Reason.COMMAND_MALFORMED, "CMD-4", "The command is not UTF-8 JSON.")
    if not isinstance(raw, dict):
        return _refuse(name, None, Reason.COMMAND_MALFORMED, "CMD-4", "The command is not a JSON object.")
    token = _token(raw)
    if name not in ARGS_MODELS:
        return _refuse(name, token, Reason.COMMAND_UNKNOWN, "CMD-4", f"There is no command {name!r}.")
    if raw.get("schema") != SCHEMA_VERSION:
        return _refuse(
            name,
            token,
            Reason.COMMAND_MALFORMED,
            "CMD-4",
            f"The command's schema version is not {SCHEMA_VERSION}.",
        )
    if raw.get("signature") in (None, ""):
        return _refuse(name, token, Reason.COMMAND_UNSIGNED, "CMD-1", "The command is not signed.")
    return raw


def _validate(raw: JsonObject, name: str) -> CommandCheck | Command:
    token = _token(raw)
    try:
        command = Command.model_validate_json(json.dumps(raw))
        ARGS_MODELS[name].model_validate(command.args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "command"
        return _refuse(name, token, Reason.COMMAND_MALFORMED, "CMD-4", f"{where}: {first['msg']}.")
    if command.command != name:
        return _refuse(
            name,
            token,
            Reason.COMMAND_MALFORMED,
            "CMD-4",
            f"The command names {command.command!r} but was sent on cmd/{name}.",
        )
    return command


def check_command(
    payload: bytes,
    name: str,
    *,
    trusted: Mapping[str, bytes],
    site: str,
    serial: str,
    now: datetime,
    window: NonceWindow,
) -> CommandCheck:
    """Verify a command received on ``cmd/{name}``; never raises. Does not remember the nonce."""
    parsed = _parse(payload, name)
    if isinstance(parsed, CommandCheck):
        return parsed
    command = _validate(parsed, name)
    if isinstance(command, CommandCheck):
        return command
    token = command.client_token
    public = trusted.get(command.key_id)
    if public is None:
        return _refuse(
            name,
            token,
            Reason.COMMAND_SIGNER_UNTRUSTED,
            "CMD-1",
            f"Operator key {command.key_id} is not trusted by this server.",
        )
    unsigned = {k: v for k, v in parsed.items() if k != "signature"}
    signature = bytes.fromhex(command.signature or "")
    if not crypto.verify(public, crypto.canonical_json(unsigned), signature):
        return _refuse(
            name,
            token,
            Reason.COMMAND_SIGNATURE_INVALID,
            "CMD-1",
            f"The signature does not verify under operator key {command.key_id}.",
        )
    if (command.site, command.serial) != (site, serial):
        return _refuse(
            name,
            token,
            Reason.COMMAND_WRONG_TARGET,
            "CMD-1",
            f"The command is for {command.site}/{command.serial}, not {site}/{serial}.",
        )
    return _check_fresh(command, name, now, window)


def _check_fresh(command: Command, name: str, now: datetime, window: NonceWindow) -> CommandCheck:
    token = command.client_token
    if command.expires_at - command.issued_at > MAX_LIFETIME or command.expires_at < command.issued_at:
        return _refuse(
            name,
            token,
            Reason.COMMAND_EXPIRED,
            "CMD-2",
            f"A command may be valid for at most {MAX_LIFETIME}.",
        )
    if command.issued_at > now + CLOCK_SKEW:
        return _refuse(name, token, Reason.COMMAND_EXPIRED, "CMD-2", "The command is dated in the future.")
    if now > command.expires_at:
        return _refuse(
            name,
            token,
            Reason.COMMAND_EXPIRED,
            "CMD-2",
            f"The command expired at {command.expires_at.isoformat()}.",
        )
    if window.seen(command.nonce):
        return _refuse(name, token, Reason.COMMAND_REPLAYED, "CMD-3", "This command was already received.")
    if window.full(now):
        return _refuse(name, token, Reason.COMMAND_REPLAYED, "CMD-3", "Too many live commands; try later.")
    return CommandCheck(name, token, command, None)


def require_command(
    payload: bytes,
    name: str,
    *,
    trusted: Mapping[str, bytes],
    site: str,
    serial: str,
    now: datetime,
    window: NonceWindow,
) -> Command:
    """Verify a command like :func:`check_command` and remember its nonce.

    Raises:
        CommandError: the command is refused (its ``reason`` is the reason code).
        StoreError: the nonce window cannot be written.
    """
    check = check_command(payload, name, trusted=trusted, site=site, serial=serial, now=now, window=window)
    if check.refusal is not None or check.command is None:
        refusal = check.refusal or Refusal(Reason.COMMAND_MALFORMED, "CMD-4", "The command is malformed.")
        raise CommandError(refusal.message, reason=refusal.reason)
    window.remember(check.command.nonce, check.command.expires_at, now)
    return check.command


def sign_command(
    private: bytes,
    name: str,
    args: Mapping[str, Any],
    *,
    site: str,
    serial: str,
    now: datetime,
    lifetime: timedelta = timedelta(minutes=5),
    client_token: str | None = None,
) -> JsonObject:
    """Return a signed command document (the operator's side).

    A plain JSON object, the JSON edge: the signature covers the canonical JSON of exactly these
    values, and the agent reads it back as a :class:`~agent.mqtt.messages.Command`.

    Raises:
        ValueError: ``private`` is not a 32-byte Ed25519 private key.
    """
    document: JsonObject = {
        "schema": SCHEMA_VERSION,
        "command": name,
        "args": dict(args),
        "site": site,
        "serial": serial,
        "client_token": client_token or secrets.token_hex(8),
        "key_id": crypto.fingerprint(crypto.public_key(private)),
        "nonce": secrets.token_hex(16),
        "issued_at": now.isoformat(),
        "expires_at": (now + lifetime).isoformat(),
    }
    document["signature"] = crypto.sign(private, crypto.canonical_json(document)).hex()
    return document
