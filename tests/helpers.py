"""Helpers the test layers share."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
