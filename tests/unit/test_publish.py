"""The signed release repository: deterministic images, signed manifests and their verification."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent import crypto
from agent.manifest import encode_signed_manifest, load_manifest
from common.errors import CatalogError, SignatureError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.keyring import VendorKeyring
from simulator.publish import (
    default_repository,
    image_bytes,
    image_path,
    manifest_path,
    publish,
    publish_command,
    verify_repository,
)

SIZE = 4096
TODAY = date(2020, 1, 1)


@pytest.fixture(scope="module")
def repo(keyring: VendorKeyring, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of small images published once for this module."""
    return publish(default_catalog(), keyring, tmp_path_factory.mktemp("repo"), image_size=SIZE)


def test_images_are_deterministic_and_distinct() -> None:
    """Image bytes depend only on the build and size: the same on every call, different per build."""
    assert image_bytes("7.6.4.1", SIZE) == image_bytes("7.6.4.1", SIZE)
    assert len(image_bytes("7.6.4.1", 1000)) == 1000
    assert image_bytes("7.6.4.1", 100) == image_bytes("7.6.4.1", 1000)[:100]
    assert image_bytes("7.6.4.1", SIZE) != image_bytes("7.7.3.8", SIZE)
    expected = hashlib.sha256(b"allworx-sim-image\x007.6.4.1\x00" + (0).to_bytes(8, "big")).digest()
    assert image_bytes("7.6.4.1", 32) == expected


def test_every_release_and_patch_is_published(repo: Path, keyring: VendorKeyring) -> None:
    """Each release and patch build has an image and a verified manifest whose digest matches it."""
    catalog = default_catalog()
    builds = [r.build for r in catalog.releases] + [p.build for p in catalog.patches]
    manifests = {m.build: m for m in verify_repository(repo, keyring.root_public, TODAY)}
    assert sorted(manifests) == sorted(builds)
    for build, manifest in manifests.items():
        data = image_path(repo, build).read_bytes()
        assert (manifest.size, manifest.sha256) == (SIZE, hashlib.sha256(data).hexdigest())
    patch = manifests["7.6.4.9"]
    assert (patch.kind, patch.version, patch.date) == ("patch", "7.6", date(2014, 3, 10))
    release = manifests["7.1.4.7"]
    assert (release.kind, release.db_schema, release.date) == ("release", 20, date(2009, 11, 9))


def test_publishing_again_rewrites_nothing(repo: Path, keyring: VendorKeyring) -> None:
    """A second publish of an unchanged catalogue leaves every file untouched (idempotent)."""
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in repo.rglob("*") if p.is_file()}
    publish(default_catalog(), keyring, repo, image_size=SIZE)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in repo.rglob("*") if p.is_file()}
    assert after == before


def test_publishing_is_deterministic_and_safe_concurrently(keyring: VendorKeyring, tmp_path: Path) -> None:
    """Concurrent publishers into one folder produce the same bytes as a lone publisher elsewhere."""
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    threads = [
        threading.Thread(target=publish, args=(default_catalog(), keyring, shared, SIZE)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    publish(default_catalog(), keyring, alone, SIZE)
    files = sorted(p.relative_to(alone) for p in alone.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(shared) for p in shared.rglob("*") if p.is_file())
    assert all((shared / f).read_bytes() == (alone / f).read_bytes() for f in files)


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["manifest"].__setitem__(key, value)


@pytest.mark.parametrize(
    "change",
    [_set("size", 1), _set("sha256", "0" * 64), _set("db_schema", 99), _set("models", ["731"])],
    ids=["size", "sha256", "schema", "models"],
)
def test_altered_manifest_is_refused(repo: Path, keyring: VendorKeyring, tmp_path: Path, change: Any) -> None:
    """Changing any signed field of a manifest fails with IMAGE_SIGNATURE_INVALID."""
    path = tmp_path / "7.6.4.1.manifest"
    path.write_bytes(manifest_path(repo, "7.6.4.1").read_bytes())
    _edit(path, change)
    with pytest.raises(SignatureError, match="signature does not match") as caught:
        load_manifest(path, keyring.root_public, TODAY)
    assert caught.value.reason is Reason.IMAGE_SIGNATURE_INVALID


def test_manifest_from_another_vendor_is_refused(repo: Path) -> None:
    """A manifest verified against a different pinned root fails with IMAGE_SIGNATURE_INVALID."""
    other_root = crypto.public_key(crypto.generate_private_key())
    with pytest.raises(SignatureError, match="pinned root") as caught:
        load_manifest(manifest_path(repo, "7.6.4.1"), other_root, TODAY)
    assert caught.value.reason is Reason.IMAGE_SIGNATURE_INVALID


def test_manifest_signed_by_the_key_signing_certificate_is_refused(
    repo: Path, keyring: VendorKeyring, tmp_path: Path
) -> None:
    """Only a 'releases' certificate may sign manifests (a key-signing certificate may not)."""
    payload = json.loads(manifest_path(repo, "7.6.4.1").read_text())["manifest"]
    path = tmp_path / "7.6.4.1.manifest"
    path.write_bytes(encode_signed_manifest(keyring.sign("keys", crypto.canonical_json(payload))))
    with pytest.raises(SignatureError, match="lacks purpose 'releases'"):
        load_manifest(path, keyring.root_public, TODAY)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a allworx-signed-manifest file"),
        (b'{"format": "allworx-signed-manifest"}', "'manifest' object is missing"),
        (
            b'{"format": "allworx-signed-manifest", "manifest": {"build": "7.6.4.1"}, "certificate": 1}',
            "certificate",
        ),
    ],
    ids=["garbage", "wrong shape", "no manifest", "bad certificate"],
)
def test_malformed_manifest_names_file_and_problem(tmp_path: Path, content: bytes, problem: str) -> None:
    """A malformed manifest raises CatalogError naming the file and what is wrong."""
    path = tmp_path / "7.6.4.1.manifest"
    path.write_bytes(content)
    with pytest.raises(CatalogError, match=problem) as caught:
        load_manifest(path, b"\0" * 32, TODAY)
    assert caught.value.file == str(path)


def test_signed_but_malformed_manifest_is_a_catalog_error(keyring: VendorKeyring, tmp_path: Path) -> None:
    """A correctly signed manifest with a bad field raises CatalogError naming the entry."""
    bad = {"type": "allworx-release-manifest", "schema_version": 1, "build": "7.6.4.1", "size": -1}
    path = tmp_path / "7.6.4.1.manifest"
    path.write_bytes(encode_signed_manifest(keyring.sign("releases", crypto.canonical_json(bad))))
    with pytest.raises(CatalogError, match=r"manifest '7\.6\.4\.1'"):
        load_manifest(path, keyring.root_public, TODAY)


def test_manifest_served_under_another_name_is_refused(
    repo: Path, keyring: VendorKeyring, tmp_path: Path
) -> None:
    """A genuine 7.6 manifest renamed as 7.7's is refused (no substituting one release for another)."""
    path = tmp_path / "7.7.3.8.manifest"
    path.write_bytes(manifest_path(repo, "7.6.4.1").read_bytes())
    with pytest.raises(CatalogError, match="another build"):
        load_manifest(path, keyring.root_public, TODAY)


def test_default_repository_sits_next_to_the_keyring(keyring: VendorKeyring) -> None:
    """The default repository is published once into <keyring>/../repo with full-size images."""
    repo = default_repository(keyring)
    assert repo == keyring.path.parent / "repo"
    assert image_path(repo, "7.0.0.18").stat().st_size == 256 * 1024
    assert default_repository(keyring) == repo


def test_publish_command(tmp_path: Path) -> None:
    """`releases publish --out DIR --image-size N` builds a verifiable repository."""
    ring = tmp_path / "vendor"
    out = tmp_path / "repo"
    result = CliRunner().invoke(
        publish_command, ["--out", str(out), "--image-size", "512", "--keyring", str(ring)]
    )
    assert result.exit_code == 0, result.output
    manifests = verify_repository(out, VendorKeyring.load_or_create(ring).root_public, TODAY)
    assert {m.size for m in manifests} == {512}
