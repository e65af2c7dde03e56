"""Structured logging: structlog, JSON in production, quiet by default on a terminal.

Events are snake_case with fields; ``bound_contextvars(job_id=..., serial=..., step=...)`` around
each upgrade step adds the context to every line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog


def configure_logging(*, json_logs: bool = False, verbose: bool = False) -> None:
    """Send logs to stderr: JSON lines, readable lines when ``verbose``, else warnings only."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    _configure(renderer, logging.INFO if (json_logs or verbose) else logging.WARNING, sys.stderr)


def _configure(
    renderer: structlog.types.Processor, level: int, stream: TextIO, *, key: str = "timestamp"
) -> None:
    """Every log line redacted (:func:`redact`), levelled, timestamped (UTC), then rendered."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            redact,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_service_logging(level: str = "info", fmt: str = "auto") -> None:
    """Logs of the daemon, for journald: lines on stdout at ``level`` and above.

    ``fmt`` ``auto`` writes JSON lines when stdout is not a terminal (a service) and readable,
    coloured lines on a terminal; ``json`` and ``console`` force one. Calling it again (SIGHUP)
    changes the level and format of every logger at once.
    """
    tty = sys.stdout.isatty()
    as_json = fmt == "json" or (fmt == "auto" and not tty)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=tty)
    )
    _configure(renderer, LEVELS[level], sys.stdout)


REDACTED = "[redacted]"
SECRET_FIELDS = frozenset(
    {"password", "passphrase", "secret", "private_key", "signature", "key_text", "certificate", "token"}
)
_ARMOUR = re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.DOTALL)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_HEX_RUN = re.compile(r"\b[0-9a-fA-F]{128,}\b")  # a hex signature (a SHA-256 digest is 64 and stays)


def _scrub(text: str) -> str:
    text = _ARMOUR.sub(REDACTED, text)
    text = _HEX_RUN.sub(REDACTED, text)
    return _BASE64_RUN.sub(lambda m: m.group(0) if _is_hex(m.group(0)) else REDACTED, text)


def _is_hex(run: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in run) and len(run) < 128


def redact(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: no key material (key files, signatures, private keys, passwords) leaves.

    A field named like a secret is replaced whole; in every other text, armoured key blocks,
    base64 runs of 40 characters and more, and hex runs of 128 and more are replaced.
    """
    for name, value in list(event.items()):
        if name.lower() in SECRET_FIELDS and value is not None:
            event[name] = REDACTED
        elif isinstance(value, str):
            event[name] = _scrub(value)
        elif isinstance(value, bytes):
            event[name] = REDACTED
        elif isinstance(value, (dict, list, tuple)):
            event[name] = _scrub_nested(value)
    return event


def _scrub_nested(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in SECRET_FIELDS else _scrub_nested(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub_nested(v) for v in value]
    if isinstance(value, str):
        return _scrub(value)
    return value
