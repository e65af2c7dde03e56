"""The release repository as a TUF repository: deterministic images and metadata, the release facts
as target metadata, the role keys, root rotation, and the agent's verification of each target."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from tuf.api.metadata import Metadata

from agent import crypto
from agent.releasetrust import METADATA_DIR, pin_root, release_target
from common.errors import VerificationError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.keyring import TUF_ROLES_FILE, TUF_ROOT_FILE, VendorKeyring
from simulator.publish import (
    CATALOG_TARGET,
    RoleSigners,
    default_repository,
    image_bytes,
    image_path,
    metadata_path,
    publish,
    publish_command,
    publish_metadata,
    published_manifests,
    rotate_root,
    signer_for,
    target_file,
)

SIZE = 4096


@pytest.fixture(scope="module")
def repo(keyring: VendorKeyring, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of small images published once for this module."""
    return publish(default_catalog(), keyring, tmp_path_factory.mktemp("repo"), image_size=SIZE)


def trusting(repo: Path, where: Path) -> Path:
    """A server trust folder that pins ``repo``'s current root."""
    where.mkdir(parents=True, exist_ok=True)
    pin_root(where, metadata_path(repo, "root").read_bytes())
    return where


def refused(trust: Path, repo: Path, build: str) -> Reason:
    """The reason the agent's verification of ``build`` fails with."""
    with pytest.raises(VerificationError) as caught:
        release_target(trust, str(repo), build)
    return caught.value.reason


def test_images_are_deterministic_and_distinct() -> None:
    """Image bytes depend only on the build and size: the same on every call, different per build."""
    assert image_bytes("7.6.4.1", SIZE) == image_bytes("7.6.4.1", SIZE)
    assert len(image_bytes("7.6.4.1", 1000)) == 1000
    assert image_bytes("7.6.4.1", 100) == image_bytes("7.6.4.1", 1000)[:100]
    assert image_bytes("7.6.4.1", SIZE) != image_bytes("7.7.3.8", SIZE)
    expected = hashlib.sha256(b"allworx-sim-image\x007.6.4.1\x00" + (0).to_bytes(8, "big")).digest()
    assert image_bytes("7.6.4.1", 32) == expected


def test_every_release_and_patch_is_a_verified_target(repo: Path, tmp_path: Path) -> None:
    """Each release and patch build is a target the agent verifies, its facts as custom metadata."""
    catalog = default_catalog()
    trust = trusting(repo, tmp_path / "trust")
    for build in [r.build for r in catalog.releases] + [p.build for p in catalog.patches]:
        manifest = release_target(trust, str(repo), build)
        data = image_path(repo, build).read_bytes()
        assert manifest.size == SIZE
        assert manifest.sha256 == hashlib.sha256(data).hexdigest()
    patch = release_target(trust, str(repo), "7.6.4.9")
    assert (patch.kind, patch.version, patch.date) == ("patch", "7.6", date(2014, 3, 10))
    release = release_target(trust, str(repo), "7.1.4.7")
    assert (release.kind, release.db_schema, release.date) == ("release", 20, date(2009, 11, 9))
    assert release.models == tuple(sorted(catalog.release("7.1").models))


def test_the_catalogue_is_a_target(repo: Path) -> None:
    """The catalogue is published as a target whose signed hash matches its bytes."""
    targets = Metadata.from_bytes(metadata_path(repo, "targets").read_bytes()).signed
    data = (repo / "targets" / CATALOG_TARGET).read_bytes()
    assert targets.targets[CATALOG_TARGET].hashes["sha256"] == hashlib.sha256(data).hexdigest()
    assert [r["version"] for r in json.loads(data)["releases"]][:2] == ["6.9", "7.0"]


def test_each_role_has_its_own_key_and_the_root_key_its_own_file(repo: Path, keyring: VendorKeyring) -> None:
    """Root, targets, snapshot and timestamp are signed by four different keys; the root key is apart."""
    root = Metadata.from_bytes(metadata_path(repo, "root").read_bytes()).signed
    key_ids = [root.roles[role].keyids for role in ("root", "targets", "snapshot", "timestamp")]
    assert len({tuple(ids) for ids in key_ids}) == 4
    assert all(root.roles[role].threshold == 1 for role in root.roles)
    assert "root" not in json.loads((keyring.path / TUF_ROLES_FILE).read_text())["roles"]
    assert stat.S_IMODE((keyring.path / TUF_ROOT_FILE).stat().st_mode) == 0o600


def test_publishing_again_rewrites_nothing(repo: Path, keyring: VendorKeyring) -> None:
    """A second publish of an unchanged catalogue leaves every file untouched (idempotent)."""
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in repo.rglob("*") if p.is_file()}
    publish(default_catalog(), keyring, repo, image_size=SIZE)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in repo.rglob("*") if p.is_file()}
    assert after == before


def test_a_changed_target_raises_every_version_above_it(keyring: VendorKeyring, tmp_path: Path) -> None:
    """Publishing other images makes targets, snapshot and timestamp version 2; the root stays 1."""
    out = publish(default_catalog(), keyring, tmp_path / "repo", image_size=SIZE)
    publish(default_catalog(), keyring, out, image_size=SIZE + 1)
    versions = {r: Metadata.from_bytes(metadata_path(out, r).read_bytes()).signed.version for r in
                ("root", "targets", "snapshot", "timestamp")}  # fmt: skip
    assert versions == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}


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


def test_a_repository_of_another_vendor_is_refused(repo: Path, tmp_path: Path) -> None:
    """A server pinning another vendor's root refuses this repository (RELEASE_METADATA_UNSIGNED)."""
    other = publish(default_catalog(), VendorKeyring.load_or_create(tmp_path / "v"), tmp_path / "o", SIZE)
    assert refused(trusting(other, tmp_path / "trust"), repo, "7.6.4.1") is Reason.RELEASE_METADATA_UNSIGNED


def test_a_build_the_repository_does_not_sign_is_unknown(repo: Path, tmp_path: Path) -> None:
    """Asking for a build with no target fails with RELEASE_TARGET_UNKNOWN."""
    assert refused(trusting(repo, tmp_path / "trust"), repo, "9.9.9.9") is Reason.RELEASE_TARGET_UNKNOWN


def _republish_target(keyring: VendorKeyring, repo: Path, path: str, custom: dict[str, object]) -> None:
    """Sign the repository again with ``path``'s release facts replaced by ``custom``."""
    targets = dict(Metadata.from_bytes(metadata_path(repo, "targets").read_bytes()).signed.targets)
    info = targets[path]
    targets[path] = target_file(path, info.length, info.hashes["sha256"], custom)
    publish_metadata(repo, targets, RoleSigners.of(keyring))


def test_signed_but_malformed_release_facts_are_refused(keyring: VendorKeyring, tmp_path: Path) -> None:
    """A validly signed target whose release facts are malformed fails with RELEASE_METADATA_INVALID."""
    out = publish(default_catalog(), keyring, tmp_path / "repo", SIZE)
    trust = trusting(out, tmp_path / "trust")
    _republish_target(keyring, out, "images/7.6.4.1.img", {"build": "7.6.4.1", "db_schema": "22"})
    assert refused(trust, out, "7.6.4.1") is Reason.RELEASE_METADATA_INVALID


def test_a_target_signed_as_another_build_is_refused(keyring: VendorKeyring, tmp_path: Path) -> None:
    """A target whose signed facts name another build fails with IMAGE_WRONG_TARGET."""
    out = publish(default_catalog(), keyring, tmp_path / "repo", SIZE)
    trust = trusting(out, tmp_path / "trust")
    facts = Metadata.from_bytes(metadata_path(out, "targets").read_bytes()).signed.targets
    other = f"images/{default_catalog().release('7.5').build}.img"
    custom = dict(facts[other].unrecognized_fields["custom"])  # 7.5's genuine facts
    _republish_target(keyring, out, "images/7.6.4.1.img", custom)
    assert refused(trust, out, "7.6.4.1") is Reason.IMAGE_WRONG_TARGET


def test_a_root_rotated_with_the_old_keys_is_followed(keyring: VendorKeyring, tmp_path: Path) -> None:
    """A new root signed by the old root key and the new one is accepted and pins the new keys."""
    out = publish(default_catalog(), keyring, tmp_path / "repo", SIZE)
    trust = trusting(out, tmp_path / "trust")
    old = RoleSigners.of(keyring)
    new_private = crypto.generate_private_key()
    new = RoleSigners(root=(signer_for(new_private),), targets=old.targets, snapshot=old.snapshot,
                      timestamp=old.timestamp)  # fmt: skip
    rotate_root(out, old, new)
    assert release_target(trust, str(out), "7.6.4.1").build == "7.6.4.1"
    trusted = Metadata.from_bytes((trust / METADATA_DIR / "root.json").read_bytes()).signed
    assert trusted.version == 2


def test_a_root_not_signed_by_the_old_root_is_refused(keyring: VendorKeyring, tmp_path: Path) -> None:
    """A new root signed only by its own new key fails with RELEASE_ROOT_UNSIGNED."""
    out = publish(default_catalog(), keyring, tmp_path / "repo", SIZE)
    trust = trusting(out, tmp_path / "trust")
    old = RoleSigners.of(keyring)
    intruder = RoleSigners(root=(signer_for(crypto.generate_private_key()),), targets=old.targets,
                           snapshot=old.snapshot, timestamp=old.timestamp)  # fmt: skip
    rotate_root(out, intruder, intruder)
    assert refused(trust, out, "7.6.4.1") is Reason.RELEASE_ROOT_UNSIGNED


def test_published_manifests_read_the_vendors_own_targets(repo: Path) -> None:
    """The vendor's reading of its repository lists every image build with its digest."""
    found = published_manifests(repo)
    assert found["7.6.4.1"].sha256 == hashlib.sha256(image_path(repo, "7.6.4.1").read_bytes()).hexdigest()
    assert len(found) == len(default_catalog().releases) + len(default_catalog().patches)


def test_default_repository_sits_next_to_the_keyring(keyring: VendorKeyring) -> None:
    """The default repository is published once into <keyring>/../repo with full-size images."""
    repo = default_repository(keyring)
    assert repo == keyring.path.parent / "repo"
    assert image_path(repo, "7.0.0.18").stat().st_size == 256 * 1024
    assert default_repository(keyring) == repo


def test_publish_command(tmp_path: Path) -> None:
    """`releases publish --out DIR --image-size N` builds a repository the agent verifies."""
    ring = tmp_path / "vendor"
    out = tmp_path / "repo"
    result = CliRunner().invoke(
        publish_command, ["--out", str(out), "--image-size", "512", "--keyring", str(ring)]
    )
    assert result.exit_code == 0, result.output
    assert release_target(trusting(out, tmp_path / "trust"), str(out), "7.6.4.1").size == 512
