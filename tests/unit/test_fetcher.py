"""Unit tests of the image fetcher: bounded, verified, resumable, retried, cancellable downloads."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock import exponential_backoff
from agent.crashpoints import PowerCut, injecting
from agent.fetcher import Source, fetch_image, open_source, require_verified, verify_file
from agent.limits import Limits
from common.errors import CancelledUpgrade, DigestError, TransportError, VerificationError
from common.reasons import Reason

CHUNK = 1024
FAST = Limits(chunk_size=CHUNK, bandwidth=None, progress_interval=4 * CHUNK, backoff_base=1.0, max_retries=3)


class FakeClock:
    """A clock that records sleeps and returns at once (no real waiting)."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.elapsed = 0.0

    def now(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds
        await asyncio.sleep(0)


class FakeClockReal(FakeClock):
    """A recording clock whose sleeps really wait."""

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)


@dataclass
class CountingOpener:
    """An opener that counts opens and bytes read, fails the first ``fail_opens`` opens, and may
    fail reads after ``fail_read_after`` bytes of an attempt, or call ``on_read`` after each read."""

    fail_opens: int = 0
    fail_read_after: int | None = None
    fail_reads: int = 0
    on_read: Callable[[int], None] | None = None
    opens: list[int] = field(default_factory=list)
    bytes_read: int = 0

    def __call__(self, path: Path, offset: int) -> Source:
        self.opens.append(offset)
        if len(self.opens) <= self.fail_opens:
            raise ConnectionResetError("portal vanished")
        return _Counted(self, open_source(path, offset))


class _Counted:
    def __init__(self, owner: CountingOpener, inner: Source) -> None:
        self.owner = owner
        self.inner = inner
        self.attempt_bytes = 0

    def readinto(self, buffer: memoryview, /) -> int | None:
        owner = self.owner
        limit = owner.fail_read_after
        if limit is not None and owner.fail_reads > 0 and self.attempt_bytes >= limit:
            owner.fail_reads -= 1
            raise TimeoutError("link dropped")
        count = self.inner.readinto(buffer) or 0
        self.attempt_bytes += count
        owner.bytes_read += count
        if owner.on_read is not None:
            owner.on_read(owner.bytes_read)
        return count

    def close(self) -> None:
        self.inner.close()


def _image(tmp: Path, data: bytes) -> tuple[Path, Path, str]:
    """Write a source image and return (source, part path, its digest)."""
    (tmp / "repo").mkdir(exist_ok=True)
    (tmp / "update").mkdir(exist_ok=True)
    source = tmp / "repo" / "image.img"
    source.write_bytes(data)
    return source, tmp / "update" / "image.img.part", hashlib.sha256(data).hexdigest()


DATA = random.Random(7).randbytes(10 * CHUNK + 123)


async def test_good_image_lands_with_right_bytes(tmp_path: Path) -> None:
    """A good image is staged under its final name with exactly the source's bytes and no .part."""
    source, part, digest = _image(tmp_path, DATA)
    final = await fetch_image(source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST)
    assert final == tmp_path / "update" / "image.img"
    assert final.read_bytes() == DATA
    assert not part.exists()
    assert require_verified(final, len(DATA), digest, CHUNK).ok


@dataclass(frozen=True)
class Tamper:
    """A way the source differs from what was signed, and the reason it must fail with."""

    name: str
    content: bytes
    reason: Reason
    error: type[VerificationError]


TAMPERS = [
    Tamper(
        "one byte changed",
        DATA[:500] + bytes([DATA[500] ^ 1]) + DATA[501:],
        Reason.IMAGE_DIGEST_MISMATCH,
        DigestError,
    ),
    Tamper(
        "last byte changed", DATA[:-1] + bytes([DATA[-1] ^ 0xFF]), Reason.IMAGE_DIGEST_MISMATCH, DigestError
    ),
    Tamper("truncated mid-chunk", DATA[: 5 * CHUNK + 7], Reason.IMAGE_TRUNCATED, VerificationError),
    Tamper("empty", b"", Reason.IMAGE_TRUNCATED, VerificationError),
    Tamper("one byte longer", DATA + b"x", Reason.IMAGE_TOO_LARGE, VerificationError),
    Tamper("much longer", DATA + bytes(50 * CHUNK), Reason.IMAGE_TOO_LARGE, VerificationError),
]


@pytest.mark.parametrize("case", TAMPERS, ids=[t.name for t in TAMPERS])
async def test_tampered_source_is_refused_and_cleaned_up(tmp_path: Path, case: Tamper) -> None:
    """A source that differs from the signed size or digest fails with its reason and leaves no files."""
    source, part, _ = _image(tmp_path, case.content)
    digest = hashlib.sha256(DATA).hexdigest()
    opener = CountingOpener()
    with pytest.raises(case.error) as info:
        await fetch_image(
            source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST, opener=opener
        )
    assert info.value.reason is case.reason
    assert not part.exists()
    assert not (tmp_path / "update" / "image.img").exists()
    assert len(opener.opens) == 1  # bad data is never retried
    assert opener.bytes_read <= len(DATA) + CHUNK  # never read the rest of an oversized source


async def test_oversized_source_stops_one_byte_past_size(tmp_path: Path) -> None:
    """An oversized source is abandoned as soon as the count passes the signed size."""
    source, part, digest = _image(tmp_path, DATA + bytes(100 * CHUNK))
    opener = CountingOpener()
    with pytest.raises(VerificationError) as info:
        await fetch_image(
            source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST, opener=opener
        )
    assert info.value.reason is Reason.IMAGE_TOO_LARGE
    assert opener.bytes_read == len(DATA) + 1


async def test_signed_size_above_ceiling_is_refused_before_opening(tmp_path: Path) -> None:
    """A manifest claiming more than the size ceiling is refused without touching the source."""
    source, part, digest = _image(tmp_path, DATA)
    opener = CountingOpener()
    limits = Limits(chunk_size=CHUNK, bandwidth=None, max_image_size=len(DATA) - 1)
    with pytest.raises(VerificationError) as info:
        await fetch_image(
            source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=limits, opener=opener
        )
    assert info.value.reason is Reason.IMAGE_TOO_LARGE
    assert opener.opens == []


async def test_resume_hashes_existing_part_and_continues(tmp_path: Path) -> None:
    """A .part left by an interrupted run is hashed and the download continues from its end."""
    source, part, digest = _image(tmp_path, DATA)
    cut = 3 * CHUNK + 17
    part.write_bytes(DATA[:cut])
    opener = CountingOpener()
    final = await fetch_image(
        source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST, opener=opener
    )
    assert final.read_bytes() == DATA
    assert opener.opens == [cut]
    assert opener.bytes_read == len(DATA) - cut


async def test_a_part_is_never_cut_when_it_holds_only_hashed_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new or resumed .part is not truncated (ext4 writes a file cut to nothing out at its close,
    and its unlink then waits for the disk)."""
    cuts: list[int] = []
    real = os.ftruncate
    monkeypatch.setattr(os, "ftruncate", lambda fd, size: cuts.append(size) or real(fd, size))
    source, part, digest = _image(tmp_path, DATA)
    final = await fetch_image(source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST)
    final.unlink()
    part.write_bytes(DATA[: 2 * CHUNK])
    final = await fetch_image(source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST)
    assert final.read_bytes() == DATA
    assert cuts == []


async def test_resume_from_corrupt_part_fails_digest_and_discards_it(tmp_path: Path) -> None:
    """A .part whose bytes differ from the source fails the digest and is deleted, so a rerun restarts."""
    source, part, digest = _image(tmp_path, DATA)
    part.write_bytes(bytes(2 * CHUNK))
    with pytest.raises(DigestError):
        await fetch_image(source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST)
    assert not part.exists()
    final = await fetch_image(source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST)
    assert final.read_bytes() == DATA


async def test_oversized_part_is_discarded_and_restarted(tmp_path: Path) -> None:
    """A .part longer than the signed size is thrown away and the download starts from zero."""
    source, part, digest = _image(tmp_path, DATA)
    part.write_bytes(DATA + b"junk")
    opener = CountingOpener()
    final = await fetch_image(
        source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST, opener=opener
    )
    assert final.read_bytes() == DATA
    assert opener.opens == [0]


async def test_flaky_source_succeeds_after_retries_on_fake_clock(tmp_path: Path) -> None:
    """A source failing twice then working is retried with jittered backoff slept on the injected clock."""
    source, part, digest = _image(tmp_path, DATA)
    opener = CountingOpener(fail_opens=2)
    clock = FakeClock()
    final = await fetch_image(
        source,
        part,
        size=len(DATA),
        sha256=digest,
        clock=clock,
        limits=FAST,
        opener=opener,
        rng=random.Random(1),
    )
    assert final.read_bytes() == DATA
    assert len(opener.opens) == 3
    expected = exponential_backoff(1.0, FAST.backoff_cap, jitter=FAST.backoff_jitter, rng=random.Random(1))
    assert clock.sleeps == [next(expected), next(expected)]  # the agent's one backoff, same draws


async def test_retry_resumes_from_bytes_already_written(tmp_path: Path) -> None:
    """A read failing mid-transfer is retried from the offset already written, not from zero."""
    source, part, digest = _image(tmp_path, DATA)
    opener = CountingOpener(fail_read_after=4 * CHUNK, fail_reads=1)
    final = await fetch_image(
        source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST, opener=opener
    )
    assert final.read_bytes() == DATA
    assert opener.opens == [0, 4 * CHUNK]
    assert opener.bytes_read == len(DATA)


async def test_permanent_failure_raises_after_max_retries(tmp_path: Path) -> None:
    """A source that never opens raises TransportError after one attempt plus max_retries retries."""
    source, part, digest = _image(tmp_path, DATA)
    opener = CountingOpener(fail_opens=1000)
    clock = FakeClock()
    with pytest.raises(TransportError) as info:
        await fetch_image(
            source, part, size=len(DATA), sha256=digest, clock=clock, limits=FAST, opener=opener
        )
    assert info.value.reason is Reason.IMAGE_UNAVAILABLE
    assert len(opener.opens) == FAST.max_retries + 1
    assert len(clock.sleeps) == FAST.max_retries
    assert not (tmp_path / "update" / "image.img").exists()


async def test_cancel_keeps_part_and_later_run_resumes(tmp_path: Path) -> None:
    """Cancel stops the download with CancelledUpgrade, keeps the .part, and a later run resumes it."""
    source, part, digest = _image(tmp_path, DATA)
    cancel = asyncio.Event()
    opener = CountingOpener(on_read=lambda done: cancel.set() if done >= 3 * CHUNK else None)
    with pytest.raises(CancelledUpgrade) as info:
        await fetch_image(
            source,
            part,
            size=len(DATA),
            sha256=digest,
            clock=FakeClock(),
            limits=FAST,
            opener=opener,
            cancel=cancel,
        )
    assert info.value.reason is Reason.CANCELLED
    assert part.read_bytes() == DATA[: 3 * CHUNK]
    again = CountingOpener()
    final = await fetch_image(
        source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST, opener=again
    )
    assert final.read_bytes() == DATA
    assert again.opens == [3 * CHUNK]


async def test_cancel_interrupts_throttled_sleep(tmp_path: Path) -> None:
    """Cancel wakes a download waiting out a slow link's transfer time instead of finishing the wait."""
    source, part, digest = _image(tmp_path, DATA)
    slow = Limits(chunk_size=CHUNK, bandwidth=1.0)  # one chunk takes 1024 s of real time
    cancel = asyncio.Event()
    task = asyncio.create_task(
        fetch_image(
            source, part, size=len(DATA), sha256=digest, clock=FakeClockReal(), limits=slow, cancel=cancel
        )
    )
    await asyncio.sleep(0.05)
    cancel.set()
    with pytest.raises(CancelledUpgrade):
        await asyncio.wait_for(task, timeout=2)
    assert part.read_bytes() == DATA[:CHUNK]


async def test_throttled_link_sleeps_nominal_time_on_clock(tmp_path: Path) -> None:
    """With a bandwidth set, each chunk sleeps its nominal transfer time on the injected clock."""
    source, part, digest = _image(tmp_path, DATA)
    clock = FakeClock()
    limits = Limits(chunk_size=CHUNK, bandwidth=1024.0)
    await fetch_image(source, part, size=len(DATA), sha256=digest, clock=clock, limits=limits)
    assert sum(clock.sleeps) == pytest.approx(len(DATA) / 1024.0)


async def test_progress_is_rate_limited(tmp_path: Path) -> None:
    """Progress is reported at most every progress_interval bytes, and once at the end with the total."""
    source, part, digest = _image(tmp_path, DATA)
    calls: list[tuple[int, int]] = []
    await fetch_image(
        source,
        part,
        size=len(DATA),
        sha256=digest,
        clock=FakeClock(),
        limits=FAST,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (len(DATA), len(DATA))
    assert len(calls) <= len(DATA) // FAST.progress_interval + 1
    assert len(calls) >= 2
    done = [0] + [d for d, _ in calls]
    assert all(b - a >= FAST.progress_interval for a, b in itertools.pairwise(done[:-1]))
    assert all(t == len(DATA) for _, t in calls)


async def test_power_cut_mid_download_keeps_part_for_resume(tmp_path: Path) -> None:
    """A power cut at the stage.download crash point leaves a .part that the next run completes."""
    source, part, digest = _image(tmp_path, DATA)
    hits: list[str] = []

    def cut_on_third(point: str) -> None:
        hits.append(point)
        if point == "stage.download" and hits.count(point) == 3:
            raise PowerCut(point)

    with injecting(cut_on_third), pytest.raises(PowerCut):
        await fetch_image(source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST)
    assert part.read_bytes() == DATA[: 3 * CHUNK]
    with injecting(hits.append):
        final = await fetch_image(source, part, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST)
    assert final.read_bytes() == DATA
    assert hits[-1] == "stage.verified"


@pytest.mark.parametrize(
    ("name", "content", "reason", "message"),
    [
        ("match", DATA, None, "match"),
        (
            "longer",
            DATA + b"x",
            Reason.IMAGE_TOO_LARGE,
            f"size {len(DATA) + 1} exceeds signed size {len(DATA)}",
        ),
        (
            "shorter",
            DATA[:-1],
            Reason.IMAGE_TRUNCATED,
            f"size {len(DATA) - 1} is short of signed size {len(DATA)}",
        ),
        ("changed", b"y" + DATA[1:], Reason.IMAGE_DIGEST_MISMATCH, "does not match signed sha256"),
    ],
)
def test_verify_file_says_why(
    tmp_path: Path, name: str, content: bytes, reason: Reason | None, message: str
) -> None:
    """verify_file returns a result naming what matched or why not, and require_verified raises its reason."""
    path = tmp_path / name
    path.write_bytes(content)
    digest = hashlib.sha256(DATA).hexdigest()
    result = verify_file(path, len(DATA), digest, CHUNK)
    assert result.ok is (reason is None)
    assert result.reason is reason
    assert message in result.message
    if reason is None:
        assert require_verified(path, len(DATA), digest, CHUNK) == result
    else:
        with pytest.raises(VerificationError) as info:
            require_verified(path, len(DATA), digest, CHUNK)
        assert info.value.reason is reason


@pytest.mark.parametrize("bad", ["image.img", ".part"])
async def test_part_name_must_end_with_part(tmp_path: Path, bad: str) -> None:
    """Passing a destination that is not <name>.part is misuse and raises ValueError."""
    source, _, digest = _image(tmp_path, DATA)
    with pytest.raises(ValueError, match="does not end with"):
        await fetch_image(
            source, tmp_path / "update" / bad, size=len(DATA), sha256=digest, clock=FakeClock(), limits=FAST
        )


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=6 * 64), cut=st.integers(min_value=0, max_value=6 * 64))
def test_resume_from_any_cut_yields_source(data: bytes, cut: int) -> None:
    """For any content and any resume point, the staged file equals the source."""
    cut = min(cut, len(data))
    limits = Limits(chunk_size=64, bandwidth=None, progress_interval=64)
    with tempfile.TemporaryDirectory() as tmp:
        source, part, digest = _image(Path(tmp), data)
        part.write_bytes(data[:cut])
        final = asyncio.run(
            fetch_image(source, part, size=len(data), sha256=digest, clock=FakeClock(), limits=limits)
        )
        assert final.read_bytes() == data
        assert not part.exists()
