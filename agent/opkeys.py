"""Operator trust: which fleet operators' Ed25519 keys may command this server.

Each trusted operator public key is one file ``SERVER_DIR/trust/operators/<name>.pub`` holding
the raw 32-byte key as hex. A key is named by its fingerprint (:func:`agent.crypto.fingerprint`),
which commands carry as ``key_id``. A virtual server trusts the simulation's default operator key
(``default.pub``); a lab server is given its operators' ``.pub`` files by its administrator.

Invariant: a malformed ``.pub`` file trusts nobody (it is skipped, never half-read).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from agent import crypto
from agent.fileio import read_bounded, write_atomic
from common.errors import StoreError

log = structlog.get_logger("agent.opkeys")
OPERATORS_DIR = Path("trust") / "operators"


def operators_dir(server_root: Path) -> Path:
    """The folder of trusted operator keys of a server directory."""
    return server_root / OPERATORS_DIR


def load_operator_keys(server_root: Path) -> dict[str, bytes]:
    """Return every trusted operator public key of a server, by fingerprint."""
    trusted: dict[str, bytes] = {}
    for path in sorted(operators_dir(server_root).glob("*.pub")):
        try:
            public = crypto.decode_hex(read_bounded(path, 1024).decode(), crypto.KEY_SIZE)
        except (OSError, StoreError, UnicodeDecodeError, ValueError) as exc:
            log.warning("operator_key_skipped", path=str(path), error=str(exc))
            continue
        trusted[crypto.fingerprint(public)] = public
    return trusted


def trust_operator(server_root: Path, public: bytes, name: str = "default") -> Path:
    """Write ``public`` as trusted operator key ``name`` of a server directory; return the file.

    Raises:
        ValueError: ``public`` is not a 32-byte key, or ``name`` is not a plain file name.
        StoreError: the file cannot be written.
    """
    if len(public) != crypto.KEY_SIZE:
        raise ValueError(f"an operator public key must be {crypto.KEY_SIZE} bytes")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a plain file name")
    folder = operators_dir(server_root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pub"
    write_atomic(path, (public.hex() + "\n").encode())
    return path
