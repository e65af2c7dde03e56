"""Benchmark: streaming image verification against ``openssl dgst -sha256`` on the same file.

Run ``python -m bench.bench_verify [--size-mib N] [--repeats R]``. It writes one file of
random-ish bytes into a temporary folder, reads it once to warm the page cache for every contender
equally, then times (best of R runs each):

- ``fetch_image`` (read + hash + write + fsync + rename into another file, unthrottled),
- ``verify_file`` (read + hash),
- ``openssl dgst -sha256`` as a subprocess (the baseline),

and prints MB/s, the ratio to openssl and our peak RSS before and after (memory must stay flat).
The goal line is judged on ``verify_file``, the like-for-like comparison with openssl.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.clock import SystemClock
from agent.fetcher import fetch_image, require_verified
from agent.limits import MIB, Limits

GOAL_RATIO = 0.8  # our verification rate over openssl's, at least
FLAT_RSS_MIB = 16.0  # growth of peak RSS we still call flat, MiB
UNTHROTTLED = Limits(bandwidth=None, max_image_size=1 << 40)


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_file(path: Path, size_mib: int) -> str:
    """Write ``size_mib`` MiB of random-ish bytes, one MiB at a time; return their SHA-256."""
    block = bytearray(random.Random(2024).randbytes(MIB))
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(size_mib):
            block[:8] = index.to_bytes(8, "little")  # every chunk differs
            out.write(block)
            hasher.update(block)
    return hasher.hexdigest()


def warm(path: Path) -> None:
    """Read the file once so every contender starts with the same page cache."""
    buffer = bytearray(MIB)
    with path.open("rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """Return the fastest of ``repeats`` timed runs of ``run``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def run_openssl(path: Path, digest: str) -> None:
    """Hash with openssl and check it agrees."""
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", str(path)], check=True, capture_output=True, text=True
    )
    if not out.stdout.strip().endswith(digest):
        raise SystemExit(f"openssl disagrees: {out.stdout!r}")


def run_fetch(path: Path, workdir: Path, size: int, digest: str) -> None:
    """Stage the file into the work folder with the real fetcher, then remove the copy."""
    part = workdir / "staged.img.part"
    final = asyncio.run(
        fetch_image(path, part, size=size, sha256=digest, clock=SystemClock(), limits=UNTHROTTLED)
    )
    final.unlink()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures; return 0 on PASS, 1 on MISS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best counts")
    args = parser.parse_args(argv)
    rss_start = peak_rss_mib()
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        path = tmp / "image.img"
        digest = make_file(path, args.size_mib)
        size = path.stat().st_size
        workdir = tmp / "update"
        workdir.mkdir()
        warm(path)
        rss_before = peak_rss_mib()
        t_openssl = best_seconds(lambda: run_openssl(path, digest), args.repeats)
        t_verify = best_seconds(
            lambda: require_verified(path, size, digest, UNTHROTTLED.chunk_size), args.repeats
        )
        t_fetch = best_seconds(lambda: run_fetch(path, workdir, size, digest), args.repeats)
        rss_after = peak_rss_mib()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(size, t_openssl, t_verify, t_fetch, (rss_start, rss_before, rss_after))
    return (
        0 if size / t_verify >= GOAL_RATIO * size / t_openssl and rss_after - rss_before < FLAT_RSS_MIB else 1
    )


def report(
    size: int, t_openssl: float, t_verify: float, t_fetch: float, rss: tuple[float, float, float]
) -> None:
    """Print rates, ratios, memory and the goal line."""
    rate = {
        name: size / t / 1e6 for name, t in (("openssl", t_openssl), ("verify", t_verify), ("fetch", t_fetch))
    }
    print(f"file: {size / MIB:.0f} MiB, best of runs, warm page cache")
    print(f"openssl dgst -sha256 (read+hash)           {rate['openssl']:8.1f} MB/s  {t_openssl:6.2f} s")
    print(f"verify_file (read+hash)                    {rate['verify']:8.1f} MB/s  {t_verify:6.2f} s")
    print(f"fetch_image (read+hash+write+fsync+rename) {rate['fetch']:8.1f} MB/s  {t_fetch:6.2f} s")
    ratio_verify = rate["verify"] / rate["openssl"]
    ratio_fetch = rate["fetch"] / rate["openssl"]
    print(f"ratio ours/openssl: verify_file {ratio_verify:.2f}x, fetch_image {ratio_fetch:.2f}x")
    start, before, after = rss
    print(f"peak RSS: at start {start:.1f} MiB, before timing {before:.1f} MiB, after {after:.1f} MiB")
    print(f"peak RSS delta over the timed runs: {after - before:+.1f} MiB (flat if < {FLAT_RSS_MIB:.0f} MiB)")
    flat = after - before < FLAT_RSS_MIB
    verdict = "PASS" if ratio_verify >= GOAL_RATIO and flat else "MISS"
    print(f"verification at {GOAL_RATIO}x openssl's rate or better with flat memory: {verdict}")
    if ratio_fetch < GOAL_RATIO:
        print(f"note: fetch_image also writes and fsyncs the copy, so it runs at {ratio_fetch:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
