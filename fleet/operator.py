"""The operator's signing key: the simulation's default one, created on first use, or a given file.

The default key lives beside the vendor keyring, in ``$ALLWORX_SIM_HOME/operator/`` (else
``~/.local/share/allworx-sim/operator/``): ``operator.key`` (raw Ed25519 private key, hex, mode
0600) and ``operator.pub`` (its public key, hex: the file a server's ``trust/operators/`` holds).

Invariant: creation is safe when processes race — the pair is built in a temp folder beside its
place and renamed into it; the loser loads the winner's key, so every process signs with one key.
(The home folder's rule is the same as :func:`simulator.keyring.sim_home`, repeated here because
``fleet`` does not import the simulator.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent import crypto
from agent.fileio import create_folder_once, read_bounded
from common.errors import StoreError

HOME_VARIABLE = "ALLWORX_SIM_HOME"
PRIVATE_FILE = "operator.key"
PUBLIC_FILE = "operator.pub"


@dataclass(frozen=True, slots=True)
class OperatorKey:
    """An operator's Ed25519 key pair."""

    private: bytes
    public: bytes

    @property
    def key_id(self) -> str:
        """The fingerprint commands carry as ``key_id``."""
        return crypto.fingerprint(self.public)


def default_operator_dir() -> Path:
    """Return where the simulation's default operator key lives."""
    configured = os.environ.get(HOME_VARIABLE)
    home = Path(configured) if configured else Path.home() / ".local" / "share" / "allworx-sim"
    return home / "operator"


def load_key_file(path: Path) -> OperatorKey:
    """Load an operator private key file (hex of the raw 32-byte Ed25519 private key).

    Raises:
        StoreError: unreadable or not a key.
    """
    try:
        private = crypto.decode_hex(read_bounded(path, 1024).decode(), crypto.KEY_SIZE)
    except (OSError, StoreError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{path}: not an operator private key (hex Ed25519): {exc}") from exc
    return OperatorKey(private, crypto.public_key(private))


def default_operator(folder: Path | None = None) -> OperatorKey:
    """Load the default operator key, creating it on first use (race-safe).

    Raises:
        StoreError: it exists but is unreadable, or cannot be created.
    """
    folder = folder if folder is not None else default_operator_dir()
    if not (folder / PRIVATE_FILE).exists():
        _create(folder)
    return load_key_file(folder / PRIVATE_FILE)


def _create(folder: Path) -> None:
    def build(work: Path) -> None:
        private = crypto.generate_private_key()
        (work / PRIVATE_FILE).write_text(private.hex() + "\n")
        os.chmod(work / PRIVATE_FILE, 0o600)
        (work / PUBLIC_FILE).write_text(crypto.public_key(private).hex() + "\n")

    create_folder_once(folder, PRIVATE_FILE, build, "operator key")
