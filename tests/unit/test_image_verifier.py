"""Release images through the verifiers: the fleet's remembering verifier hashes an image it verified
only after the file changed and never remembers a failure; the agent's durable verifier hashes at
every check; a download tells its verifier of the image it staged."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import fetcher
from agent.clock import SimClock
from agent.fetcher import VerifyResult, fetch_image, verify_file
from agent.verifier import DurableVerifier
from common.errors import DigestError, VerificationError
from common.reasons import Reason
from simulator.fleet.verifier import RememberingVerifier

IMAGE = bytes(range(256)) * 1024  # 256 KiB, as the simulated releases' images
SHA = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the verifiers hash (each call of :func:`agent.fetcher.verify_file`)."""
    calls: list[Path] = []

    def counting(path: Path, size: int, sha256: str, chunk: int = 1 << 20) -> VerifyResult:
        calls.append(path)
        return verify_file(path, size, sha256, chunk)

    monkeypatch.setattr(fetcher, "verify_file", counting)
    return calls


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A good image file."""
    path = tmp_path / "7.3.img"
    path.write_bytes(IMAGE)
    return path


def _damaged() -> bytes:
    data = bytearray(IMAGE)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


def test_a_verified_unchanged_image_is_not_hashed_again(image: Path, hashes: list[Path]) -> None:
    """The second check of an unchanged file hashes nothing and answers as the first."""
    memory = RememberingVerifier()
    first = memory.image(image, len(IMAGE), SHA)
    assert memory.image(image, len(IMAGE), SHA) == first
    assert first.ok
    assert hashes == [image]


def test_an_image_rewritten_in_place_with_the_same_size_is_hashed_again(
    image: Path, hashes: list[Path]
) -> None:
    """Bytes rewritten in place (a write moves the modification time) are hashed again, and fail."""
    memory = RememberingVerifier()
    memory.image(image, len(IMAGE), SHA)
    before = image.stat()
    with image.open("r+b") as handle:
        handle.write(_damaged())
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))  # a write one tick later
    with pytest.raises(DigestError):
        memory.image(image, len(IMAGE), SHA)
    assert hashes == [image, image]


def test_an_image_replaced_by_another_file_is_hashed_again(image: Path, hashes: list[Path]) -> None:
    """A new file renamed over the verified one, even with its size and modification time, is hashed."""
    memory = RememberingVerifier()
    memory.image(image, len(IMAGE), SHA)
    before = image.stat()
    other = image.with_name("other.img")
    other.write_bytes(_damaged())
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, image)
    with pytest.raises(DigestError):
        memory.image(image, len(IMAGE), SHA)
    assert len(hashes) == 2


def test_a_failed_image_check_is_never_remembered(image: Path, hashes: list[Path]) -> None:
    """A damaged or truncated image fails at every check, each one hashing or sizing it again; a
    file told verified with another size than signed is not remembered."""
    memory = RememberingVerifier()
    image.write_bytes(_damaged())
    for _ in range(2):
        with pytest.raises(DigestError):
            memory.image(image, len(IMAGE), SHA)
    assert len(hashes) == 2
    image.write_bytes(IMAGE[:-1])
    memory.image_verified(image, len(IMAGE), SHA)
    with pytest.raises(VerificationError) as caught:
        memory.image(image, len(IMAGE), SHA)
    assert caught.value.reason is Reason.IMAGE_TRUNCATED


def test_the_durable_verifier_hashes_at_every_check(image: Path, hashes: list[Path]) -> None:
    """The agent's verifier hashes the file at each check, whatever it was told."""
    durable = DurableVerifier()
    durable.image(image, len(IMAGE), SHA)
    durable.image_verified(image, len(IMAGE), SHA)
    assert durable.image(image, len(IMAGE), SHA).ok
    assert hashes == [image, image]


def test_the_durable_verifier_fails_a_damaged_image(image: Path) -> None:
    """The agent's verifier raises the digest mismatch of a damaged image."""
    image.write_bytes(_damaged())
    with pytest.raises(DigestError) as caught:
        DurableVerifier().image(image, len(IMAGE), SHA)
    assert caught.value.reason is Reason.IMAGE_DIGEST_MISMATCH


async def test_a_staged_download_is_remembered_without_hashing_it_again(
    tmp_path: Path, image: Path, hashes: list[Path]
) -> None:
    """The download tells the verifier of the image it staged (its bytes hashed as written): the
    staged image's next check hashes nothing."""
    memory = RememberingVerifier()
    told: list[Path] = []

    def staged(path: Path) -> None:
        told.append(path)
        memory.image_verified(path, len(IMAGE), SHA)

    area = tmp_path / "update"
    area.mkdir()
    clock = SimClock(datetime(2016, 1, 1, tzinfo=UTC), speed=float("inf"))
    final = await fetch_image(
        image, area / "7.3.img.part", size=len(IMAGE), sha256=SHA, clock=clock, staged=staged
    )
    assert told == [final]
    assert memory.image(final, len(IMAGE), SHA).ok
    assert hashes == []
