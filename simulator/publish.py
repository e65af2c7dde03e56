"""The publishing tool: build a signed release repository from the catalogue.

Layout of a repository::

    images/<build>.img           a synthetic image (SIMULATED: derived from the build string)
    manifests/<build>.manifest   its signed manifest (see agent/manifest.py)
    index.json                   the builds published, the image size and the root they chain to

One image and manifest per release build and per patch build (rule SWM-7).

Invariants: images are deterministic (a SHA-256 counter stream seeded by the build string, the
same bytes on every run), and so are manifests (Ed25519 signatures are deterministic), so
publishing is idempotent: a file whose bytes are already right is not rewritten. Every write goes
to a temp file in the same folder and is renamed into place, so concurrent publishers are safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from agent import crypto
from agent.cliutil import guarded
from agent.crypto import SignedDocument
from agent.fileio import write_atomic
from agent.manifest import Manifest, encode_signed_manifest
from common.errors import StoreError
from releases.catalog import Catalog, default_catalog

if TYPE_CHECKING:
    from datetime import date

DEFAULT_IMAGE_SIZE = 256 * 1024  # bytes per synthetic image
MAX_IMAGE_SIZE = 64 * 1024 * 1024  # bytes: every build's image is made in memory, then written
INDEX_FILE = "index.json"
_SEED = b"allworx-sim-image\0"


class ReleaseSigner(Protocol):
    """What publishing needs of the vendor keyring (``simulator.keyring.VendorKeyring`` fits)."""

    path: Path
    root_public: bytes

    def sign(self, purpose: str, payload: bytes) -> SignedDocument:
        """Sign ``payload`` with the key for ``purpose``."""
        ...


def image_bytes(build: str, size: int = DEFAULT_IMAGE_SIZE) -> bytes:
    """Return the synthetic image of ``build``: ``size`` bytes, identical on every run (SIMULATED)."""
    out = bytearray()
    counter = 0
    prefix = _SEED + build.encode("utf-8") + b"\0"
    while len(out) < size:
        out += hashlib.sha256(prefix + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def image_path(repo: Path, build: str) -> Path:
    """Return where ``build``'s image lives in a repository."""
    return repo / "images" / f"{build}.img"


def manifest_path(repo: Path, build: str) -> Path:
    """Return where ``build``'s signed manifest lives in a repository."""
    return repo / "manifests" / f"{build}.manifest"


def manifests_for(catalog: Catalog, image_size: int = DEFAULT_IMAGE_SIZE) -> Iterator[Manifest]:
    """Yield the manifest of every release build, then of every patch build, in catalogue order."""
    for release in catalog.releases:
        digest = hashlib.sha256(image_bytes(release.build, image_size)).hexdigest()
        yield Manifest(release.version, release.build, "release", release.date, image_size, digest,
                       release.db_schema, tuple(sorted(release.models)), release.phone_firmware)  # fmt: skip
    for patch in catalog.patches:
        release = catalog.release(patch.release)
        digest = hashlib.sha256(image_bytes(patch.build, image_size)).hexdigest()
        yield Manifest(release.version, patch.build, "patch", patch.date, image_size, digest,
                       release.db_schema, tuple(sorted(release.models)), release.phone_firmware)  # fmt: skip


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically unless the file already holds exactly it; return whether written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data, shared=True)  # publishers in several processes may write it at once
    return True


def _index(catalog: Catalog, signer: ReleaseSigner, image_size: int) -> bytes:
    builds = [r.build for r in catalog.releases] + [p.build for p in catalog.patches]
    document = {
        "root": signer.root_public.hex(),
        "image_size": image_size,
        "builds": builds,
        "simulated": True,
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("ascii")


def publish(
    catalog: Catalog, keyring: ReleaseSigner, out_dir: Path, image_size: int = DEFAULT_IMAGE_SIZE
) -> Path:
    """Build (or bring up to date) the release repository at ``out_dir``; return ``out_dir``.

    Raises:
        StoreError: the repository cannot be written, or ``image_size`` is not positive.
    """
    if image_size <= 0:
        raise StoreError(f"the image size must be positive, got {image_size}")
    try:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        (out_dir / "manifests").mkdir(parents=True, exist_ok=True)
        for manifest in manifests_for(catalog, image_size):
            _write_if_changed(image_path(out_dir, manifest.build), image_bytes(manifest.build, image_size))
            doc = keyring.sign("releases", crypto.canonical_json(manifest.to_dict()))
            _write_if_changed(manifest_path(out_dir, manifest.build), encode_signed_manifest(doc))
        _write_if_changed(out_dir / INDEX_FILE, _index(catalog, keyring, image_size))
    except OSError as exc:
        raise StoreError(f"{out_dir}: cannot publish the release repository: {exc.strerror}") from exc
    return out_dir


_published: set[Path] = set()


def default_repository(keyring: ReleaseSigner, catalog: Catalog | None = None) -> Path:
    """Return ``<keyring dir>/../repo``, publishing the packaged catalogue there if needed (once).

    Raises:
        StoreError: the repository cannot be written.
    """
    catalog = catalog or default_catalog()
    repo = keyring.path.parent / "repo"
    if repo in _published:
        return repo
    index = repo / INDEX_FILE
    try:
        current = index.read_bytes() == _index(catalog, keyring, DEFAULT_IMAGE_SIZE)
    except OSError:
        current = False
    if not current:
        publish(catalog, keyring, repo)
    _published.add(repo)
    return repo


def verify_repository(repo: Path, root_public: bytes, today: date) -> list[Manifest]:
    """Load and verify every manifest of a repository (for tests and the vendor's own checks).

    Raises:
        CatalogError: a manifest is malformed.
        SignatureError: a manifest does not verify (``IMAGE_SIGNATURE_INVALID``).
    """
    from agent.manifest import load_manifest

    return [
        load_manifest(path, root_public, today) for path in sorted((repo / "manifests").glob("*.manifest"))
    ]


@click.command("publish")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The repository folder to build or update.")  # fmt: skip
@click.option("--image-size", type=click.IntRange(1, MAX_IMAGE_SIZE), default=DEFAULT_IMAGE_SIZE,
              show_default=True, help="Bytes per synthetic image.")  # fmt: skip
@click.option("--keyring", "keyring_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The vendor keyring folder (default: $ALLWORX_SIM_HOME/vendor).")  # fmt: skip
@guarded
def publish_command(out_dir: Path, image_size: int, keyring_dir: Path | None) -> None:
    """Publish every release and patch build of the catalogue as a signed repository."""
    from simulator.keyring import VendorKeyring  # lazy: the vendor's keyring lives in the simulator

    keyring = VendorKeyring.load_or_create(keyring_dir)
    publish(default_catalog(), keyring, out_dir, image_size)
    count = len(default_catalog().releases) + len(default_catalog().patches)
    click.echo(f"published {count} builds ({image_size} bytes each) to {out_dir}")
