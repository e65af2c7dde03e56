"""The release repository's TUF metadata at the agent's boundary (agent/releasetrust.py ``release_target``).

A release repository is published once per process with the project's tools (``simulator.publish``,
fixed role keys) into a temp folder, and a server's trust folder pins its root. The first byte of
an input picks the metadata file the rest replaces: the next root version, ``timestamp.json``,
``snapshot.json`` or ``targets.json`` (the others stay valid). The second byte's bits say whether
the harness signs the input again with the role's key, and the role above it again over the new
length and hash (a holder of the vendor's keys, so that the checks after the signatures see
fuzzed values too), and whether the server had trusted the valid metadata before (so that
rollback is judged against it). Documented: ``release_target`` returns the verified target of
the build asked for (each of its release facts of its type), or raises VerificationError with a
``RELEASE_*`` reason (or ``IMAGE_WRONG_TARGET``), or, for a file the repository does not have,
TransportError (``RELEASE_METADATA_UNAVAILABLE``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from securesystemslib.exceptions import FormatError
from securesystemslib.formats import encode_canonical

from agent.manifest import Manifest
from agent.releasetrust import METADATA_DIR, PINNED_ROOT, release_target
from common.errors import TransportError, VerificationError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.publish import DEFAULT_EXPIRES, ROLES, RoleSigners, metadata_path, new_root, publish, sign
from tests.fuzz import fixtures

FILES = ("root", "timestamp", "snapshot", "targets")
PARENT = {"targets": "snapshot", "snapshot": "timestamp"}  # the role whose metadata signs a file's hash
RESIGN, TRUSTED = 1, 2  # bits of the second byte
BUILD = default_catalog().releases[-1].build
IMAGE_SIZE = 64
FORMAT, PREFIX = "json", 2  # the structured mutator reads inputs after PREFIX bytes as JSON


@dataclass(frozen=True)
class FixedKeyring:
    """The vendor's TUF role keys, fixed so that every process publishes the same repository."""

    path: Path

    def release_keys(self) -> dict[str, bytes]:
        """The raw Ed25519 private key of each role."""
        return {role: fixtures.private_key(f"tuf-{role}") for role in ROLES}


@dataclass(frozen=True)
class Repository:
    """This process's published repository, a server's trust folder, and the valid metadata."""

    repo: Path
    trust: Path
    trusted_state: Path  # the trust folder's tuf/ after one valid refresh
    signers: RoleSigners
    valid: dict[str, bytes]  # by file: root is the next version's root
    next_roots: dict[int, bytes]  # valid roots by version


_repository: Repository | None = None


def repository() -> Repository:
    """The repository of this process (published once, removed at exit)."""
    global _repository  # noqa: PLW0603  # reason: one repository per fuzzing process, made on first use
    if _repository is None:
        folder = fixtures.scratch_folder("release")
        keyring = FixedKeyring(folder / "vendor")
        repo = publish(default_catalog(), keyring, folder / "repo", image_size=IMAGE_SIZE)
        signers = RoleSigners.of(keyring)
        roots = {v: sign(new_root(signers, DEFAULT_EXPIRES, v), signers.root) for v in (2, 3)}
        valid = {role: metadata_path(repo, role).read_bytes() for role in FILES[1:]}
        trust = folder / "trust"
        trust.mkdir()
        (trust / PINNED_ROOT).write_bytes(metadata_path(repo, "root").read_bytes())
        (repo / "metadata" / "2.root.json").write_bytes(roots[2])
        release_target(trust, str(repo), BUILD)
        shutil.copytree(trust / METADATA_DIR, folder / "trusted")
        _repository = Repository(repo, trust, folder / "trusted", signers, {"root": roots[2], **valid}, roots)
    return _repository


def seeds() -> list[bytes]:
    """Each file's valid content, as sent and signed again, to a server new to the repository or not."""
    here = repository()
    out = []
    for i, name in enumerate(FILES):
        for flags in range(4):
            content = here.next_roots[3] if name == "root" and flags & TRUSTED else here.valid[name]
            out.append(bytes([i, flags]) + content)
    return out


def resigned(content: bytes, role: str, signers: RoleSigners) -> bytes:
    """``content`` with its ``signed`` part signed again by ``role``'s key (as it is when it cannot be)."""
    try:
        raw = json.loads(content)
    except (ValueError, RecursionError):
        return content
    if not isinstance(raw, dict) or not isinstance(raw.get("signed"), dict):
        return content
    try:
        message = str(encode_canonical(raw["signed"])).encode()  # a str: no output function given
    except (FormatError, ValueError, RecursionError):  # a float, a lone surrogate: sent as it is
        return content
    signer = signers.of_role(role)[0]
    raw["signatures"] = [{"keyid": signer.public_key.keyid, "sig": signer.sign(message).signature}]
    return json.dumps(raw).encode()


def rechained(files: dict[str, bytes], name: str, signers: RoleSigners) -> None:
    """Sign the length and hash of ``files[name]`` into the role above it, and so on up (in place)."""
    while name in PARENT:
        parent = json.loads(files[PARENT[name]])
        meta = parent["signed"]["meta"][f"{name}.json"]
        meta["length"] = len(files[name])
        meta["hashes"] = {"sha256": hashlib.sha256(files[name]).hexdigest()}
        try:
            version = json.loads(files[name])["signed"]["version"]
        except (ValueError, RecursionError, KeyError, TypeError):
            version = meta["version"]
        meta["version"] = version
        files[PARENT[name]] = resigned(json.dumps(parent).encode(), PARENT[name], signers)
        name = PARENT[name]


def reset_trust(here: Repository, trusted: bool) -> None:
    """The server's trust folder: new to the repository, or having trusted its valid metadata."""
    shutil.rmtree(here.trust / METADATA_DIR, ignore_errors=True)
    if trusted:
        shutil.copytree(here.trusted_state, here.trust / METADATA_DIR)


def check(data: bytes) -> None:
    """Serve ``data[2:]`` as the file ``data[0]`` picks and ask the agent for the build's verified target."""
    if len(data) < PREFIX:
        return
    here = repository()
    name, flags, content = FILES[data[0] % len(FILES)], data[1], data[2:]
    files = dict(here.valid)
    files[name] = resigned(content, name, here.signers) if flags & RESIGN else content
    if flags & RESIGN:
        rechained(files, name, here.signers)
    next_root = files.pop("root")
    (here.repo / "metadata" / "2.root.json").write_bytes(here.valid["root"])
    if name == "root":  # as the version after the one the server trusts
        (here.repo / "metadata" / f"{3 if flags & TRUSTED else 2}.root.json").write_bytes(next_root)
    for role, written in files.items():
        metadata_path(here.repo, role).write_bytes(written)
    reset_trust(here, bool(flags & TRUSTED))
    try:
        manifest = release_target(here.trust, str(here.repo), BUILD)
    except (VerificationError, TransportError) as exc:
        refusal = exc
    else:
        well_formed(manifest)
        return
    finally:
        (here.repo / "metadata" / "3.root.json").unlink(missing_ok=True)
    if isinstance(refusal, TransportError):
        assert refusal.reason is Reason.RELEASE_METADATA_UNAVAILABLE, refusal.reason
    else:
        assert refusal.reason.name.startswith("RELEASE_") or refusal.reason is Reason.IMAGE_WRONG_TARGET


def well_formed(manifest: Manifest) -> None:
    """Assert that a verified target is the build asked for, each release fact of its own type."""
    assert manifest.build == BUILD, manifest
    assert manifest.kind in ("release", "patch"), manifest
    assert isinstance(manifest.size, int), manifest
    assert re.fullmatch("[0-9a-f]{64}", manifest.sha256), manifest
    texts = (manifest.version, manifest.phone_firmware, *manifest.models)
    assert all(isinstance(text, str) for text in texts), manifest
    assert isinstance(manifest.db_schema, int), manifest
    assert not isinstance(manifest.db_schema, bool), manifest
    assert isinstance(manifest.date, date), manifest


def tokens() -> list[str]:
    """TUF metadata's JSON keys and values for libFuzzer's dictionary."""
    keys = ["_type", "spec_version", "version", "expires", "consistent_snapshot", "keys", "roles",
            "keyids", "threshold", "keytype", "scheme", "keyval", "public", "meta", "length", "hashes",
            "sha256", "targets", "delegations", "custom", "signatures", "keyid", "sig", "signed",
            "build", "models", "kind", "db_schema", "date", "phone_firmware"]  # fmt: skip
    values = ["root", "timestamp", "snapshot", "ed25519", "1.0.31", "2040-12-31T00:00:00Z",
              "1970-01-01T00:00:00Z", "snapshot.json", "targets.json", f"images/{BUILD}.img",
              BUILD]  # fmt: skip
    return [*(f'"{key}":' for key in keys), *(f'"{v}"' for v in values), "null", "true", "[]", "{}",
            *fixtures.TRICKY]  # fmt: skip
