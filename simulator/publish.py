"""The publishing tool: build the vendor's release repository, a TUF repository, from the catalogue.

Layout of a repository (docs/releases.md)::

    metadata/1.root.json ...     every root version (a client walks them to rotate its root)
    metadata/root.json           the newest root
    metadata/targets.json        every target: its length, SHA-256 and the release facts (``custom``)
    metadata/snapshot.json       the targets version (with its length and hash)
    metadata/timestamp.json      the snapshot version (with its length and hash)
    targets/catalog.json         the release catalogue
    targets/images/<build>.img   a synthetic image (SIMULATED: derived from the build string)

One image target per release build and per patch build (rule SWM-7). The four roles each have
their own Ed25519 key from the vendor keyring (the root's kept apart), threshold 1.

Invariants: images are deterministic (a SHA-256 counter stream seeded by the build string, the
same bytes on every run), and so is the metadata (fixed expiry dates, deterministic Ed25519
signatures, a role's version raised only when its content changes), so publishing is idempotent:
a file whose bytes are already right is not rewritten. Every write goes to a temp file in the
same folder and is renamed into place, so concurrent publishers are safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from agent.cliutil import guarded
from agent.fileio import write_atomic
from agent.manifest import Manifest, manifest_from_target
from common.errors import StoreError
from releases.catalog import Catalog, default_catalog

DEFAULT_IMAGE_SIZE = 256 * 1024  # bytes per synthetic image
MAX_IMAGE_SIZE = 64 * 1024 * 1024  # bytes: every build's image is made in memory, then written
CATALOG_TARGET = "catalog.json"
ROLES = ("root", "targets", "snapshot", "timestamp")
# SIMULATED: the simulation's vendor signs for the whole simulated era, so a repository published
# once stays valid and republishing is idempotent; a real one re-signs its timestamp often.
DEFAULT_EXPIRES = datetime(2040, 12, 31, tzinfo=UTC)
_SEED = b"allworx-sim-image\0"
_SERIALIZER = JSONSerializer(compact=False)


class ReleaseKeyring(Protocol):
    """What publishing needs of the vendor keyring (``simulator.keyring.VendorKeyring`` fits)."""

    path: Path

    def release_keys(self) -> dict[str, bytes]:
        """The raw Ed25519 private keys of the TUF roles, by role name."""
        ...


def signer_for(private: bytes) -> CryptoSigner:
    """A TUF signer for a raw Ed25519 private key."""
    key = Ed25519PrivateKey.from_private_bytes(private)
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))


@dataclass(frozen=True)
class RoleSigners:
    """One signer per role (a test or an attack may give a role several, or foreign ones)."""

    root: tuple[Signer, ...]
    targets: tuple[Signer, ...]
    snapshot: tuple[Signer, ...]
    timestamp: tuple[Signer, ...]

    @classmethod
    def of(cls, keyring: ReleaseKeyring) -> RoleSigners:
        """The keyring's signers.

        Raises:
            StoreError: the keyring's release keys are unreadable.
        """
        keys = keyring.release_keys()
        return cls(*((signer_for(keys[role]),) for role in ROLES))

    def of_role(self, role: str) -> tuple[Signer, ...]:
        """The signers of ``role``."""
        signers: tuple[Signer, ...] = getattr(self, role)
        return signers


def image_bytes(build: str, size: int = DEFAULT_IMAGE_SIZE) -> bytes:
    """Return the synthetic image of ``build``: ``size`` bytes, identical on every run (SIMULATED)."""
    out = bytearray()
    counter = 0
    prefix = _SEED + build.encode("utf-8") + b"\0"
    while len(out) < size:
        out += hashlib.sha256(prefix + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def target_name(build: str) -> str:
    """The TUF target path of ``build``'s image."""
    return f"images/{build}.img"


def image_path(repo: Path, build: str) -> Path:
    """Return where ``build``'s image lives in a repository."""
    return repo / "targets" / target_name(build)


def metadata_path(repo: Path, role: str) -> Path:
    """Return where ``role``'s current metadata lives in a repository."""
    return repo / "metadata" / f"{role}.json"


def manifests_for(catalog: Catalog, image_size: int = DEFAULT_IMAGE_SIZE) -> Iterator[Manifest]:
    """Yield what every release build, then every patch build, is, in catalogue order."""
    for release in catalog.releases:
        digest = hashlib.sha256(image_bytes(release.build, image_size)).hexdigest()
        yield Manifest(release.version, release.build, "release", release.date, image_size, digest,
                       release.db_schema, tuple(sorted(release.models)), release.phone_firmware)  # fmt: skip
    for patch in catalog.patches:
        release = catalog.release(patch.release)
        digest = hashlib.sha256(image_bytes(patch.build, image_size)).hexdigest()
        yield Manifest(release.version, patch.build, "patch", patch.date, image_size, digest,
                       release.db_schema, tuple(sorted(release.models)), release.phone_firmware)  # fmt: skip


def catalog_bytes(catalog: Catalog) -> bytes:
    """The catalogue target: every release and patch as JSON."""
    releases = [
        {
            "version": r.version,
            "build": r.build,
            "date": r.date.isoformat(),
            "db_schema": r.db_schema,
            "rebuilds_database": r.rebuilds_database,
            "models": sorted(r.models),
            "phone_firmware": r.phone_firmware,
            "features": list(r.features),
        }
        for r in catalog.releases
    ]
    patches = [{"build": p.build, "release": p.release, "date": p.date.isoformat()} for p in catalog.patches]
    document = {"releases": releases, "patches": patches, "simulated": True}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("ascii")


def target_file(path: str, data_length: int, sha256: str, custom: Mapping[str, Any] | None) -> TargetFile:
    """A TUF target entry, the release facts (when given) as its ``custom`` metadata."""
    fields = {"custom": dict(custom)} if custom is not None else None
    return TargetFile(data_length, {"sha256": sha256}, path, unrecognized_fields=fields)


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically unless the file already holds exactly it; return whether written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, shared=True)  # publishers in several processes may write it at once
    return True


def _load(repo: Path, role: str) -> Metadata[Any] | None:
    try:
        return Metadata.from_bytes(metadata_path(repo, role).read_bytes())
    except FileNotFoundError:
        return None
    except Exception as exc:  # reason: tuf raises several types for a damaged file
        raise StoreError(f"{metadata_path(repo, role)}: not TUF metadata: {exc}") from exc


AnySigned = Root | Targets | Snapshot | Timestamp


def sign(signed: AnySigned, signers: tuple[Signer, ...]) -> bytes:
    """The metadata file of ``signed``, signed by every one of ``signers``."""
    metadata: Metadata[Any] = Metadata(signed)
    for signer in signers:
        metadata.sign(signer, append=True)
    return metadata.to_bytes(_SERIALIZER)


def _versioned(repo: Path, signed: AnySigned, signers: tuple[Signer, ...]) -> bytes:
    """Sign ``signed`` as the role's current version when its content is unchanged, else the next."""
    current = _load(repo, signed.type)
    if current is not None:
        signed.version = current.signed.version
        if current.signed.to_dict() == signed.to_dict():
            return metadata_path(repo, signed.type).read_bytes()
        signed.version += 1
    data = sign(signed, signers)
    _write_if_changed(metadata_path(repo, signed.type), data)
    return data


def _meta(version: int, data: bytes) -> MetaFile:
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def new_root(signers: RoleSigners, expires: datetime, version: int = 1) -> Root:
    """A root naming each role's first signer's key, threshold 1."""
    root = Root(version=version, expires=expires, consistent_snapshot=False)
    for role in ROLES:
        for signer in signers.of_role(role):
            root.add_key(signer.public_key, role)
    return root


def write_root(repo: Path, root: Root, signers: tuple[Signer, ...]) -> None:
    """Write ``root`` as ``metadata/<version>.root.json`` and ``metadata/root.json``."""
    data = sign(root, signers)
    _write_if_changed(repo / "metadata" / f"{root.version}.root.json", data)
    _write_if_changed(metadata_path(repo, "root"), data)


def rotate_root(repo: Path, old: RoleSigners, new: RoleSigners, expires: datetime = DEFAULT_EXPIRES) -> Root:
    """Publish the next root naming ``new``'s keys, signed by the old root keys and the new ones.

    Raises:
        StoreError: the repository has no root, or cannot be written.
    """
    current = _load(repo, "root")
    if current is None:
        raise StoreError(f"{repo}: no root to rotate from")
    root = new_root(new, expires, current.signed.version + 1)
    write_root(repo, root, old.root + new.root)
    return root


def publish_metadata(
    repo: Path,
    targets: Mapping[str, TargetFile],
    signers: RoleSigners,
    expires: Mapping[str, datetime] | None = None,
) -> None:
    """Write the root (version 1, when there is none), targets, snapshot and timestamp of ``repo``.

    Raises:
        StoreError: the repository cannot be written.
    """
    when = dict.fromkeys(ROLES, DEFAULT_EXPIRES) | dict(expires or {})
    if _load(repo, "root") is None:
        write_root(repo, new_root(signers, when["root"]), signers.root)
    targets_data = _versioned(repo, Targets(expires=when["targets"], targets=dict(targets)), signers.targets)
    version = Metadata.from_bytes(targets_data).signed.version
    snapshot = Snapshot(expires=when["snapshot"], meta={"targets.json": _meta(version, targets_data)})
    snapshot_data = _versioned(repo, snapshot, signers.snapshot)
    version = Metadata.from_bytes(snapshot_data).signed.version
    timestamp = Timestamp(expires=when["timestamp"], snapshot_meta=_meta(version, snapshot_data))
    _versioned(repo, timestamp, signers.timestamp)


def image_target(manifest: Manifest) -> TargetFile:
    """The target entry of an image: its length, SHA-256 and release facts."""
    custom = {
        "version": manifest.version,
        "build": manifest.build,
        "kind": manifest.kind,
        "date": manifest.date.isoformat(),
        "db_schema": manifest.db_schema,
        "models": list(manifest.models),
        "phone_firmware": manifest.phone_firmware,
    }
    return target_file(target_name(manifest.build), manifest.size, manifest.sha256, custom)


def publish(
    catalog: Catalog,
    keyring: ReleaseKeyring,
    out_dir: Path,
    image_size: int = DEFAULT_IMAGE_SIZE,
    *,
    expires: Mapping[str, datetime] | None = None,
) -> Path:
    """Build (or bring up to date) the release repository at ``out_dir``; return ``out_dir``.

    Raises:
        StoreError: the repository cannot be written, or ``image_size`` is not positive.
    """
    if image_size <= 0:
        raise StoreError(f"the image size must be positive, got {image_size}")
    try:
        targets: dict[str, TargetFile] = {}
        for manifest in manifests_for(catalog, image_size):
            _write_if_changed(image_path(out_dir, manifest.build), image_bytes(manifest.build, image_size))
            targets[target_name(manifest.build)] = image_target(manifest)
        data = catalog_bytes(catalog)
        _write_if_changed(out_dir / "targets" / CATALOG_TARGET, data)
        targets[CATALOG_TARGET] = target_file(
            CATALOG_TARGET, len(data), hashlib.sha256(data).hexdigest(), None
        )
        publish_metadata(out_dir, targets, RoleSigners.of(keyring), expires)
    except OSError as exc:
        raise StoreError(f"{out_dir}: cannot publish the release repository: {exc.strerror}") from exc
    return out_dir


_published: set[Path] = set()


def default_repository(keyring: ReleaseKeyring, catalog: Catalog | None = None) -> Path:
    """Return ``<keyring dir>/../repo``, publishing the packaged catalogue there if needed (once).

    Raises:
        StoreError: the repository cannot be written.
    """
    repo = keyring.path.parent / "repo"
    if repo not in _published:
        publish(catalog or default_catalog(), keyring, repo)
        _published.add(repo)
    return repo


def published_manifests(repo: Path) -> dict[str, Manifest]:
    """What the repository's targets metadata says each build is, read as the vendor (no verification:
    the vendor's own checks and the chaos checker read their own repository).

    Raises:
        StoreError: the targets metadata is missing or malformed.
    """
    targets = _load(repo, "targets")
    if targets is None:
        raise StoreError(f"{repo}: no targets metadata")
    found = {}
    for path, info in targets.signed.targets.items():
        if path.startswith("images/"):
            manifest = manifest_from_target(path, info.length, info.hashes, info.unrecognized_fields)
            found[manifest.build] = manifest
    return found


@click.command("publish")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The repository folder to build or update.")  # fmt: skip
@click.option("--image-size", type=click.IntRange(1, MAX_IMAGE_SIZE), default=DEFAULT_IMAGE_SIZE,
              show_default=True, help="Bytes per synthetic image.")  # fmt: skip
@click.option("--keyring", "keyring_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The vendor keyring folder (default: $ALLWORX_SIM_HOME/vendor).")  # fmt: skip
@guarded
def publish_command(out_dir: Path, image_size: int, keyring_dir: Path | None) -> None:
    """Publish every release and patch build of the catalogue as a TUF repository."""
    from simulator.keyring import VendorKeyring  # lazy: the vendor's keyring lives in the simulator

    keyring = VendorKeyring.load_or_create(keyring_dir)
    publish(default_catalog(), keyring, out_dir, image_size)
    count = len(default_catalog().releases) + len(default_catalog().patches)
    click.echo(f"published {count} builds ({image_size} bytes each) as a TUF repository in {out_dir}")
