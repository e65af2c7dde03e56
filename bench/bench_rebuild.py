"""Benchmark: the 7.1 rebuild (rule DB-1) against ``sqlite3 old.db .dump | sqlite3 new.db``.

Goal: the rebuild, its verification included, within 1.5x of dump-and-load measured in the same
run on the same data. Run: ``python -m bench.bench_rebuild [--rows N] [--users N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.database import digest, migrate_copy, rebuild

GOAL = 1.5


def _build_old(path: Path, users: int, rows: int) -> float:
    """Build the schema-11 database in a child process, so its memory does not count below."""
    code = (
        "from simulator.pbxdata import populate; import sys;"
        f"populate(sys.argv[1], 11, users={users}, seed=731, call_log_rows={rows}, model='731')"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return time.perf_counter() - started


def _dump_and_load(old: Path, new: Path) -> float:
    new.unlink(missing_ok=True)
    started = time.perf_counter()
    pipeline = f"sqlite3 {shlex.quote(str(old))} .dump | sqlite3 {shlex.quote(str(new))}"
    subprocess.run(pipeline, shell=True, check=True)
    return time.perf_counter() - started


def _ours(old: Path, new: Path) -> float:
    new.unlink(missing_ok=True)
    started = time.perf_counter()
    rebuild(old, new, 20)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="call-log rows (default 1,000,000)")
    parser.add_argument("--users", type=int, default=250, help="users (default 250)")
    parser.add_argument("--repeat", type=int, default=1, help="measure each side N times, keep the best")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
        folder = Path(tmp)
        old = folder / "old.db"
        built = _build_old(old, args.users, args.rows)
        size = old.stat().st_size / 2**20
        print(f"old database: schema 11, {args.users} users, {args.rows:,} call-log rows, {size:.1f} MiB")
        print(f"    built (populate, in a child process) in {built:.2f} s")
        baseline = min(_dump_and_load(old, folder / "dump.db") for _ in range(args.repeat))
        ours = min(_ours(old, folder / "new.db") for _ in range(args.repeat))
        started = time.perf_counter()
        digest(old)
        one_digest = time.perf_counter() - started
        started = time.perf_counter()
        migrate_copy(folder / "new.db", folder / "new21.db", 21)
        migrated = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = ours / baseline
    print(f"(a) rebuild() 11 -> 20, verification included: {ours:8.2f} s")
    print(f"(b) sqlite3 old.db .dump | sqlite3 new.db:      {baseline:8.2f} s")
    print(f"    one digest pass of the old database:        {one_digest:8.2f} s")
    print(f"    migrate_copy() 20 -> 21, verified:          {migrated:8.2f} s")
    print(f"ratio ours / baseline: {ratio:.2f}   peak RSS (this process): {peak:.0f} MiB")
    verdict = "PASS" if ratio <= GOAL else "MISS"
    print(f"goal: rebuild within {GOAL}x of dump-and-load -> {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
