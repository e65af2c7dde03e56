"""An upgrade step on a server as a fleet host runs it (its fast disk and remembering verifier) and
as a real agent runs it: the fleet hashes the release image once beyond the download (the slot
copy), a real server at every check, and both catch a staged image damaged before activation."""

from __future__ import annotations

import os
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import fetcher
from agent.clock import SimClock
from agent.crashpoints import Injector, injecting
from agent.fetcher import VerifyResult, verify_file
from agent.limits import Limits
from agent.releasetrust import image_location
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.fleet.disk import FastDisk
from simulator.fleet.verifier import RememberingVerifier
from simulator.keyring import VendorKeyring
from tests.helpers import keyed_server

NOW = datetime(2016, 1, 1, tzinfo=UTC)
SOURCE, TARGET = "7.2", "7.3"
KINDS = ["fleet", "real"]


@pytest.fixture
def root(tmp_path: Path, keyring: VendorKeyring) -> Path:
    """A 6x on 7.2 with a maintenance key valid on NOW."""
    return keyed_server(tmp_path / "box", keyring, SOURCE, NOW.date())


def _server(root: Path, kind: str) -> ServerDir:
    """The server as a fleet host opens it, or as ``allworx-agent`` does (its defaults)."""
    return (
        ServerDir(root, disk=FastDisk(), verifier=RememberingVerifier())
        if kind == "fleet"
        else ServerDir(root)
    )


def _upgrader(server: ServerDir) -> Upgrader:
    return Upgrader(server, default_catalog(), SimClock(NOW, speed=float("inf")))


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def _staged(root: Path) -> Path:
    (path,) = ServerDir(root).update_area.glob("*.img")
    return path


@pytest.mark.parametrize(("kind", "hashed"), [("fleet", 1), ("real", 3)], ids=KINDS)
async def test_a_step_hashes_the_image_once_beyond_the_download_in_a_fleet(
    root: Path, kind: str, hashed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the download, the fleet hashes only the slot's copy; a real server also checks the
    staged image again and boot-checks the slot image by hashing them."""
    calls: list[str] = []

    def counting(path: Path, size: int, sha256: str, chunk: int = 1 << 20) -> VerifyResult:
        calls.append(path.name)
        return verify_file(path, size, sha256, chunk)

    monkeypatch.setattr(fetcher, "verify_file", counting)
    result = await _upgrader(_server(root, kind)).upgrade(TARGET)
    assert [step.outcome for step in result.steps] == ["committed"]
    assert ".image.img.tmp" in calls
    assert len(calls) == hashed


def _rewrite_staged(root: Path) -> Injector:
    """When the image is first staged, rewrite it damaged in place, as a later write does (its
    modification time moves)."""
    done: list[str] = []

    def inject(point: str) -> None:
        if point == "stage.verified" and not done:
            done.append(point)
            path = _staged(root)
            before = path.stat()
            with path.open("r+b") as handle:
                handle.write(b"\0" * 64)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))

    return inject


@pytest.mark.parametrize("kind", KINDS)
async def test_a_staged_image_rewritten_before_activation_is_fetched_again(root: Path, kind: str) -> None:
    """The staged image's check before activation sees the rewrite, discards the image and fetches
    it again: the step commits the signed image."""
    server = _server(root, kind)
    with injecting(_rewrite_staged(root)):
        result = await _upgrader(server).upgrade(TARGET)
    assert [step.outcome for step in result.steps] == ["committed"]
    committed = ServerDir(root)
    assert committed.committed().version == TARGET
    (step,) = result.steps
    signed = Path(image_location(str(committed.identity().repo), step.build))
    assert _bytes(committed.slot_dir(committed.active_slot()) / "image.img") == _bytes(signed)


def _damage_staged_keeping_its_key(root: Path) -> Injector:
    """While the new database is built (after the staged image's last check), damage the staged
    image keeping its size and modification time (as a bad sector would)."""

    def inject(point: str) -> None:
        if point == "db.verified":
            path = _staged(root)
            before = path.stat()
            with path.open("r+b") as handle:
                handle.write(b"\0" * 64)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    return inject


@pytest.mark.parametrize("kind", KINDS)
async def test_a_staged_image_damaged_unseen_fails_the_slot_copys_own_check(root: Path, kind: str) -> None:
    """A damage that keeps the staged image's size and modification time is caught by the hash of
    the slot's copy: the step fails with the digest mismatch and the server keeps its release."""
    with injecting(_damage_staged_keeping_its_key(root)):
        result = await _upgrader(_server(root, kind)).upgrade(TARGET)
    (step,) = result.steps
    assert step.outcome == "failed"
    assert step.refusal is not None
    assert step.refusal.reason is Reason.IMAGE_DIGEST_MISMATCH
    assert ServerDir(root).committed().version == SOURCE


@pytest.mark.parametrize(
    ("chunk", "on_loop"), [(1 << 20, True), (64 * 1024, False)], ids=["one-chunk", "larger"]
)
async def test_an_image_of_one_chunk_is_copied_into_the_slot_on_the_loop(
    root: Path, chunk: int, on_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image no larger than one download chunk is copied into the slot on the event loop's own
    thread (a worker thread's hand-off costs more than such a copy); a larger one in a worker thread."""
    threads: list[bool] = []
    copy = shutil.copyfile

    def recording(src: Path, dst: Path) -> object:
        threads.append(threading.current_thread() is threading.main_thread())
        return copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", recording)
    upgrader = Upgrader(
        _server(root, "fleet"), default_catalog(), SimClock(NOW, speed=float("inf")),
        limits=Limits(chunk_size=chunk, bandwidth=None),
    )  # fmt: skip
    result = await upgrader.upgrade(TARGET)
    assert [step.outcome for step in result.steps] == ["committed"]
    assert threads == [on_loop]
