"""Helpers the test layers share."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.server import ServerSpec, create_server

LOCK_FILE = ".lock"  # the server directory's lock (agent/lock.py): it holds its last holder's pid


def tree_hash(folder: Path, *, skip: tuple[str, ...] = ()) -> str:
    """A digest of every file under ``folder`` (names and bytes) but the lock file and the paths
    (relative, POSIX) starting with one of ``skip``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != LOCK_FILE):
        name = path.relative_to(folder).as_posix()
        if skip and name.startswith(skip):
            continue
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def keyed_server(folder: Path, keyring: VendorKeyring, release: str, on: date) -> Path:
    """A 6x on ``release`` in ``folder``, with a one-year maintenance key from ``keyring`` valid on ``on``."""
    spec = ServerSpec("6x", release, users=6, call_log_rows=60, shipped=date(2010, 9, 1))
    made = create_server(folder, spec, keyring=keyring)
    key = issue_key(keyring, serial=made.identity().serial, kind="maintenance", plan="anytime-1y", start=on)
    assert made.install_key(key, on).valid
    return made.root
