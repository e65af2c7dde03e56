"""The armoured text block shared by key files and revocation lists.

A block is ``-----BEGIN <NAME>-----``, ``Field: value`` lines, then ``Certificate:`` and
``Signature:`` each followed by base64 continuation lines, then ``-----END <NAME>-----``.

Invariant: parsing tolerates what copy-and-paste and email do to text (CRLF or CR line ends,
a byte-order mark, blank lines, indentation, ``>`` quote markers, junk before BEGIN and after
END) and raises only :class:`~common.errors.KeyFormatError`, with a message saying what is wrong.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from datetime import date, datetime

from agent import crypto
from agent.crypto import Certificate
from common.errors import KeyFormatError

MAX_TEXT = 64 * 1024  # characters: a key or revocation list larger than this is not one of ours
BLOCK_FIELDS = ("Certificate", "Signature")
_FIELD_LINE = re.compile(r"([A-Za-z][A-Za-z-]*):(.*)")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]*")
_WRAP = 64  # base64 characters per line


def _lines_of(text: str | bytes) -> list[str]:
    """Decode and normalise: CRLF/CR, indentation, email quote markers (``> ``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KeyFormatError("the file is not UTF-8 text") from exc
    if len(text) > MAX_TEXT:
        raise KeyFormatError(f"the file is longer than {MAX_TEXT} characters")
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return [line.strip().lstrip(">").strip() for line in text.split("\n")]


def parse_block(text: str | bytes, begin: str, end: str) -> list[tuple[str, str]]:
    """Return the ``(name, value)`` pairs between ``begin`` and ``end`` (base64 blocks joined).

    Raises:
        KeyFormatError: no block, or a line that is neither a field nor a block continuation.
    """
    lines = _lines_of(text)
    try:
        start = lines.index(begin)
    except ValueError:
        raise KeyFormatError(f"no {begin!r} line found") from None
    try:
        stop = lines.index(end, start + 1)
    except ValueError:
        raise KeyFormatError(f"no {end!r} line after the BEGIN line") from None
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines[start + 1 : stop], start=start + 2):
        if not line:
            continue
        match = _FIELD_LINE.fullmatch(line)
        if match:
            pairs.append((match.group(1), match.group(2).strip()))
        elif pairs and pairs[-1][0] in BLOCK_FIELDS:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + line)
        else:
            raise KeyFormatError(f"line {number} is not a 'Field: value' line: {line[:40]!r}")
    return pairs


def single_fields(pairs: Iterable[tuple[str, str]], known: Iterable[str]) -> dict[str, str]:
    """Return the pairs as a mapping, each field at most once.

    Raises:
        KeyFormatError: an unknown or repeated field.
    """
    allowed = set(known)
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise KeyFormatError(f"unknown field {name!r}")
        if name in found:
            raise KeyFormatError(f"field {name!r} appears twice")
        found[name] = value
    return found


def signature_parts(found: dict[str, str]) -> tuple[Certificate, bytes]:
    """Decode the Certificate and Signature blocks.

    Raises:
        KeyFormatError: a block is missing or malformed.
    """
    if "Certificate" not in found or "Signature" not in found:
        raise KeyFormatError("the Certificate or Signature block is missing")
    try:
        certificate = Certificate.decode(found["Certificate"])
    except ValueError as exc:
        raise KeyFormatError(f"the Certificate block is malformed: {exc}") from exc
    try:
        signature = crypto.decode_base64(found["Signature"])
    except ValueError as exc:
        raise KeyFormatError("the Signature block is not valid base64") from exc
    if len(signature) != crypto.SIGNATURE_SIZE:
        raise KeyFormatError(f"the signature must be {crypto.SIGNATURE_SIZE} bytes, got {len(signature)}")
    return certificate, signature


def render_block(begin: str, end: str, lines: list[str], certificate: Certificate, signature: bytes) -> str:
    """Return the canonical text of a block (LF line ends, base64 wrapped and indented one space)."""

    def wrapped(data: str) -> list[str]:
        return [" " + data[i : i + _WRAP] for i in range(0, len(data), _WRAP)]

    body = [begin, *lines, "Certificate:", *wrapped(certificate.encode())]
    body += ["Signature:", *wrapped(base64.b64encode(signature).decode("ascii")), end]
    return "\n".join(body) + "\n"


def parse_date(name: str, value: str) -> date:
    """Parse an ISO date field.

    Raises:
        KeyFormatError: not a date.
    """
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise KeyFormatError(f"{name} must be a date like 2015-09-08, got {value[:20]!r}") from None


def parse_when(name: str, value: str) -> date | datetime:
    """Parse a date field that may also be an instant: ``2026-11-30`` or ``2026-11-30T18:05:00Z``.

    An instant must carry its UTC offset (``Z``, ``+00:00``, ``+02:00``...): a bare local time
    would mean different instants on different servers.

    Raises:
        KeyFormatError: neither a date nor an instant with a UTC offset.
    """
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        instant = None
    if instant is None or instant.utcoffset() is None:
        raise KeyFormatError(
            f"{name} must be a date like 2015-09-08 or an instant with a UTC offset like "
            f"2015-09-08T18:05:00Z, got {value[:32]!r}"
        )
    return instant


def parse_token(name: str, value: str) -> str:
    """Check a free-text field (an id, a serial, a feature, a release): letters, digits, ``._ -``.

    Raises:
        KeyFormatError: empty, too long or with other characters.
    """
    if not _TOKEN.fullmatch(value) or len(value) > 64:
        raise KeyFormatError(f"{name} has an invalid value {value[:20]!r}")
    return value
