"""The verifier a fleet simulation gives the agents it hosts: it remembers what it verified.

A fleet host runs thousands of virtual servers copied from a few templates: the same key files,
manifests and database contents are verified over and over. :class:`RememberingVerifier` keeps
each verified fact, keyed by every input of the verdict, so a changed input is simply not found:

- a valid signature, by the SHA-256 of (public key, signature, message);
- a verified release target, by the build, the :func:`fingerprint` of the repository's metadata
  folder, of the server's pinned release root and trusted metadata, and the UTC minute (python-tuf
  judges expiry by the wall clock); a remembered target is returned without the refresh, so the
  server's ``trust/tuf`` keeps what it held (remote repositories are always refreshed);
- a trust store and the key checks of a server, by a :func:`fingerprint` of the files they were
  read from (names and bytes), and for key checks also the trust store, serial and day; the
  parsed keys of a server by the fingerprint alone (a new day checks them again, unparsed); the
  fingerprint of a folder is read again only when a file's status says it may have changed
  (:class:`Fingerprints`: as safe as reading the bytes, for the reason given there);
- a database digest, by the file's path, device, inode, size and modification time once this
  process published it verified, and by the SHA-256 of its bytes (read while the file did not
  change, with no journal beside it) once it was computed;
- the ready check of a database this process published, while that file is unchanged;
- an image that matched its signed size and SHA-256, by the file's key (path, device, inode, size,
  modification time) and the digest: once hashed here while its key did not change, or once the
  agent says it hashed the file's bytes itself (the download it just staged) or just had it
  verified here and renamed it (the slot image). So a staged image is checked again, and the slot
  image boot-checked, without hashing; a copy (the slot's temp file) is a new file, hashed.

Invariant: a remembered fact is exactly what a fresh verification of the same inputs returns, and
a failure is never remembered; forgetting (the memories are bounded, least recently used first)
only costs a verification again. The one input a memory by file key cannot see is a change that
keeps size and modification time; a copy made from such a file then fails its own verification,
safely (a slot image so changed after its copy was verified passes the boot check). Real servers
use the agent's :data:`agent.verifier.DURABLE_VERIFIER`, which keeps nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Generic, TypeVar

from agent.database import RecordDigest
from agent.database.engine import FileKey, Read, file_key, read_stable
from agent.fetcher import VerifyResult
from agent.keys import KeyCheck, SignedKey, TrustStore, check_key, installed_keys, rejudge, utc_day
from agent.manifest import Manifest
from agent.releasetrust import METADATA_DIR, PINNED_ROOT, is_remote
from agent.verifier import DurableVerifier

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """A bounded, thread-safe memory: at most ``size`` values, the least recently used forgotten first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()  # databases are verified in worker threads too

    def get(self, key: K) -> V | None:
        """The value remembered for ``key`` (None when unknown or forgotten)."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key``, forgetting the least recently used past ``size``."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def fingerprint(folder: Path, suffix: str = "") -> bytes:
    """A SHA-256 over the names and contents of the regular files in ``folder`` ending with ``suffix``.

    Keyed by content, not by timestamps: any change of a file's bytes, any new or removed file
    changes it, however fast the edits come. A missing folder has the digest of nothing. Called on
    every key check and trust lookup of every agent of a host, so it reads with plain ``os`` calls.
    """
    digest = hashlib.sha256()
    try:
        with os.scandir(folder) as entries:
            found = sorted((e.name, e.path) for e in entries if e.name.endswith(suffix) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        found = []
    for name, path in found:
        data = _read(path)
        if data is not None:  # None: removed meanwhile, as if it were never there
            digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.digest()


SETTLE = 2.0  # seconds since its last change after which a file's status alone vouches for its bytes:
# two ticks of the coarsest file timestamps (whole seconds on some filesystems), 200 of the kernel's

Listing = tuple[tuple[str, int, int, int, int, int], ...]


class Fingerprints:
    """The :func:`fingerprint` of folders, each read again only when its files' status changed.

    A folder's fingerprint is kept with the status of each of its files (name, device, inode,
    size, modification and change times in ns) as listed just before the bytes were read, and only
    when every one of those files had last changed at least :data:`SETTLE` before that listing; it
    is returned while a new listing finds exactly the same.

    Why this is as safe as reading the bytes: the kernel sets a file's change time (ctime) to the
    current time on every change of its bytes or status (write, truncate, utime, chmod, rename, and
    the creation of the inode), and no call sets it to another value. A change after the listing
    happens later than the listing, so its ctime is later than the kept one by more than
    :data:`SETTLE` minus one timestamp tick, and differs; a new or removed file changes the names.
    A file changed within :data:`SETTLE` of a listing (a later change could get the same ctime,
    within one tick) keeps its folder from being kept: it is read again on every call until it
    settled (as git treats a "racily clean" file). The one assumption beyond the kernel's: the wall
    clock does not step back by more than :data:`SETTLE` while a fingerprint is kept.

    A kept folder is not listed again while its own status (device, inode, modification and change
    times) is the one taken just before its kept listing, also settled then: a file created, removed
    or renamed in it changes the folder's times (by the same argument), so its names are the kept
    ones, and only their status is taken again, each by name. A folder with a symbolic link among
    its names (or any other entry that is not a regular file) is listed on every call: what a link
    names can become a file by a change elsewhere, which leaves this folder's times as they were.
    """

    def __init__(self, size: int, settle: float = SETTLE) -> None:
        self.settle_ns = int(settle * 1e9)
        # by the folder's path text: (the folder's status, None when it is listed every call; its files'
        # status; the fingerprint)
        self._known: Memo[tuple[str, str], tuple[Status | None, Listing, bytes]] = Memo(size)

    def digest(self, folder: Path, suffix: str = "") -> bytes:
        """The :func:`fingerprint` of ``folder``'s files ending with ``suffix``."""
        started = time.time_ns()
        name = (str(folder), suffix)  # a str hashes and compares faster than a Path
        status = _status(name[0])
        known = self._known.get(name)
        if known is None:
            listing, plain = _listing(folder, suffix)
            digest = fingerprint(folder, suffix)
        elif status is not None and known[0] == status and _restat(name[0], known[1]) == known[1]:
            return known[2]  # the same names (the folder's status is kept): only their status again
        else:
            listing, plain = _listing(folder, suffix)
            digest = known[2] if known[1] == listing else fingerprint(folder, suffix)
        settled = started - self.settle_ns
        if status is not None and max(status[2], status[3], *(max(e[4], e[5]) for e in listing)) < settled:
            self._known.put(name, (status if plain else None, listing, digest))
        return digest


Status = tuple[int, int, int, int]


def _status(folder: str) -> Status | None:
    """The device, inode, modification and change times (ns) of ``folder``, or None when it is gone."""
    try:
        st = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _restat(folder: str, listing: Listing) -> Listing:
    """The status of the files named in ``listing`` as :func:`_listing` gives it, taken again by name
    (a file gone or no longer a regular file ends it early: a listing that differs)."""
    found = []
    for entry in listing:
        try:
            st = os.stat(os.path.join(folder, entry[0]))
        except (FileNotFoundError, NotADirectoryError):
            break
        if not stat.S_ISREG(st.st_mode):
            break
        found.append((entry[0], st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(found)


def _listing(folder: Path, suffix: str) -> tuple[Listing, bool]:
    """The status of the regular files in ``folder`` ending with ``suffix``, by name, and whether
    every entry ending with ``suffix`` is a regular file itself (no symbolic link, no other kind)."""
    found, plain = [], True
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.endswith(suffix):
                    continue
                try:
                    regular = entry.is_file()
                    plain = plain and regular and not entry.is_symlink()
                    if not regular:
                        continue
                    st = entry.stat()
                except FileNotFoundError:  # removed meanwhile, as if it were never there
                    continue
                found.append((entry.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    except (FileNotFoundError, NotADirectoryError):
        return (), True
    return tuple(sorted(found)), plain


def _read(path: str) -> bytes | None:
    """The bytes of the file at ``path`` (opened non-blocking: a FIFO put there meanwhile reads as
    empty), or None when it is gone or no longer a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except BlockingIOError:
        return b""
    finally:
        os.close(fd)


ReleaseKey = tuple[str, bytes, bytes, int]


def _trusted(trust_dir: Path) -> bytes:
    """The fingerprint of a server's pinned release root and the release metadata it trusts."""
    local = trust_dir / METADATA_DIR
    return fingerprint(trust_dir, PINNED_ROOT) + fingerprint(local) + fingerprint(local / "root_history")


ChecksKey = tuple[bytes, TrustStore, str, date]


class RememberingVerifier(DurableVerifier):
    """A :class:`agent.verifier.Verifier` for one fleet host process, shared by all its agents.

    Each memory holds about one entry per server of a host (the database digests by file, two for
    the images: staged and slot) or per distinct content (signatures, manifests, database contents).
    """

    def __init__(self, servers: int = 20_000) -> None:
        self.signatures: Memo[bytes, bool] = Memo(32_768)
        self.releases: Memo[ReleaseKey, Manifest] = Memo(512)
        self.folders = Fingerprints(2 * servers)  # a server's trust and keys folders
        self.trusts: Memo[str, tuple[bytes, TrustStore]] = Memo(servers)  # by the folder's path text
        self.checks: Memo[str, tuple[ChecksKey, tuple[KeyCheck, ...]]] = Memo(servers)
        self.parsed: Memo[str, tuple[bytes, tuple[SignedKey, ...]]] = Memo(servers)
        self.by_file: Memo[FileKey, tuple[RecordDigest, int]] = Memo(servers)
        self.by_content: Memo[bytes, RecordDigest] = Memo(1_024)
        self.images: Memo[FileKey, str] = Memo(2 * servers)

    def signature(self, public: bytes, message: bytes, signature: bytes) -> bool:
        """Whether the signature is valid: remembered when it was, verified otherwise."""
        seen = hashlib.sha256(public + signature + message).digest()
        if self.signatures.get(seen):
            return True
        valid = super().signature(public, message, signature)
        if valid:
            self.signatures.put(seen, True)
        return valid

    def release(self, trust_dir: Path, repo: str, build: str) -> Manifest:
        """The target remembered for these metadata files, pinned root and minute, or refreshed,
        verified and remembered.

        Raises:
            VerificationError: the metadata or the target failed a check (its reason code).
            TransportError: the repository could not be reached.
            StoreError: the pinned root or the trusted metadata cannot be read or written.
        """
        if is_remote(repo):
            return super().release(trust_dir, repo, build)
        remote = fingerprint(Path(repo) / "metadata")
        key = (build, remote, _trusted(trust_dir), int(time.time() // 60))
        found = self.releases.get(key)
        if found is None:
            found = super().release(trust_dir, repo, build)
            self.releases.put(key, found)
            self.releases.put((build, remote, _trusted(trust_dir), key[3]), found)  # as refreshed now
        return found

    def trust(self, folder: Path) -> TrustStore:
        """The trust store, loaded again only when the files of ``folder`` changed.

        Raises:
            StoreError: the root is missing or malformed, or the revocation list unreadable.
            VerificationError: the stored revocation list is malformed or not signed by the root.
        """
        digest = self.folders.digest(folder)
        found = self.trusts.get(str(folder))
        if found is not None and found[0] == digest:
            return found[1]
        trust = super().trust(folder)
        self.trusts.put(str(folder), (digest, trust))
        return trust

    def key_checks(
        self, folder: Path, trust: TrustStore, serial: str, now: datetime | date
    ) -> list[KeyCheck]:
        """The key checks, done again only when a key file, the trust, the serial or the UTC day
        changed; each key's window is judged again at the instant ``now``.

        A new day (a simulated one passes in seconds) checks the keys again as parsed from the
        same files, without reading them again; changed files are parsed again.
        """
        digest = self.folders.digest(folder, ".key")
        inputs = (digest, trust, serial, utc_day(now))
        found = self.checks.get(str(folder))
        if found is None or found[0] != inputs:
            keys = self._parsed(folder, digest)
            found = (inputs, tuple(check_key(key, trust, serial, now, check=self.signature) for key in keys))
            self.checks.put(str(folder), found)
        return [rejudge(check, now) for check in found[1]]

    def _parsed(self, folder: Path, digest: bytes) -> tuple[SignedKey, ...]:
        """The keys of ``folder`` (:func:`agent.keys.installed_keys`), remembered by its key files' digest."""
        known = self.parsed.get(str(folder))
        if known is not None and known[0] == digest:
            return known[1]
        keys = tuple(installed_keys(folder))
        self.parsed.put(str(folder), (digest, keys))
        return keys

    def database_digest(
        self, path: Path, compute: Callable[[], RecordDigest], read: Read | None = None
    ) -> RecordDigest:
        """The digest remembered for this very file or for these bytes, or ``compute()``.

        The bytes are the caller's ``read`` of the file, or read here. A computed digest is
        remembered by the bytes' SHA-256 only when the file kept its key while it was read and
        digested, so it is the digest of exactly the bytes hashed.
        """
        known = self._recall(path)
        if known is not None:
            return known[0]
        if read is None:
            read = read_stable(path)
        if read is None:
            return compute()
        content, key = read
        found = self.by_content.get(content)
        if found is None:
            found = compute()
            if file_key(path) == key:
                self.by_content.put(content, found)
        return found

    def database_verified(self, path: Path, verified: RecordDigest, schema: int) -> None:
        """Remember the digest and schema of the file just published, by its key."""
        key = file_key(path)
        if key is not None:
            self.by_file.put(key, (verified, schema))

    def database_ready(self, path: Path, schema: int) -> bool:
        """True for a file this process published verified in ``schema`` and unchanged since;
        otherwise the boot check."""
        known = self._recall(path)
        if known is not None and known[1] == schema:
            return True
        return super().database_ready(path, schema)

    def _recall(self, path: Path) -> tuple[RecordDigest, int] | None:
        key = file_key(path)
        return self.by_file.get(key) if key is not None else None

    def image(self, path: Path, size: int, sha256: str) -> VerifyResult:
        """The passing result remembered for this very file and digest, or the file hashed and,
        when it matched and kept its key meanwhile, remembered.

        Raises:
            DigestError: the digest differs (``IMAGE_DIGEST_MISMATCH``).
            VerificationError: the size differs (``IMAGE_TOO_LARGE`` or ``IMAGE_TRUNCATED``).
            OSError: the file cannot be opened or read.
        """
        key = file_key(path)
        if key is not None and key[3] == size and self.images.get(key) == sha256:
            return VerifyResult.matching(size, sha256)
        result = super().image(path, size, sha256)  # raises on a mismatch: nothing remembered
        if key is not None and file_key(path) == key:
            self.images.put(key, sha256)
        return result

    def image_verified(self, path: Path, size: int, sha256: str) -> None:
        """Remember the file, by its key now, as holding the signed bytes."""
        key = file_key(path)
        if key is not None and key[3] == size:
            self.images.put(key, sha256)
