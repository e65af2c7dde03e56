"""The fuzz run: every target under atheris with a fixed budget, then a table of what was found.

``python -m tests.fuzz.run [--runs N] [--target NAME ...] [--workdir DIR]`` (``tox -e fuzz``).
Each target starts from its seeds (written to ``DIR/NAME/seeds``; what libFuzzer learns goes to
``DIR/NAME/corpus``) and runs ``N`` inputs (default 100,000) in its own process
(:mod:`tests.fuzz.harness`). Findings go to ``DIR/NAME/findings``: the first input of each and
its traceback. A target's ``tokens()`` (the format's keys, and values that trip parsers of text)
are libFuzzer's dictionary (``DIR/NAME/tokens.dict``). An input that takes longer than
``--timeout`` seconds stops its target as a hang. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.targets import TARGETS, load

ROOT = Path(__file__).resolve().parents[2]
_DONE = re.compile(r"^Done (\d+) runs", re.MULTILINE)
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass(frozen=True)
class Outcome:
    """One target's run."""

    target: str
    budget: int
    inputs: int
    findings: dict[str, int]
    seconds: float
    hang: bool
    exit_code: int

    @property
    def crashes(self) -> int:
        """Inputs that escaped the parser's documented errors (a hang counts as one)."""
        return sum(self.findings.values()) + int(self.hang)


def escape(token: str) -> str:
    """``token`` as a libFuzzer dictionary entry (UTF-8; bytes other than printable ASCII as \\xNN)."""
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token.encode())


def fuzz(name: str, runs: int, workdir: Path, timeout: int, seed: int) -> Outcome:
    """Run one target's harness with its budget and read back what it did."""
    folder = workdir / name
    seeds, corpus, findings, scratch = (folder / part for part in ("seeds", "corpus", "findings", "tmp"))
    for path in (seeds, corpus, findings, scratch):
        path.mkdir(parents=True, exist_ok=True)
    target = load(name)
    for i, data in enumerate(target.seeds()):
        (seeds / f"seed-{i}").write_bytes(data)
    command = [sys.executable, "-m", "tests.fuzz.harness", name, f"-runs={runs}", f"-timeout={timeout}",
               f"-seed={seed}", "-rss_limit_mb=2048", f"-artifact_prefix={findings}/",
               str(corpus), str(seeds)]  # fmt: skip
    if hasattr(target, "tokens"):
        (folder / "tokens.dict").write_text("".join(f'"{escape(t)}"\n' for t in target.tokens()))
        command.insert(-2, f"-dict={folder / 'tokens.dict'}")
    # TMPDIR: the targets' scratch folders stay in the work folder (libFuzzer exits without atexit)
    env = {**os.environ, "FUZZ_FINDINGS": str(findings), "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)}
    started = time.monotonic()
    with open(folder / "libfuzzer.log", "wb") as log:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    text = (folder / "libfuzzer.log").read_text(errors="replace")
    finished = _DONE.search(text)
    progress = [int(n) for n in _PROGRESS.findall(text)]
    inputs = int(finished.group(1)) if finished else max(progress, default=0)
    summary = findings / "summary.json"
    counts = json.loads(summary.read_text()) if summary.exists() else {}
    hang = "timeout" in text.lower() and finished is None
    return Outcome(name, runs, inputs, counts, seconds, hang, done.returncode)


def table(outcomes: list[Outcome]) -> str:
    """The results as a plain-text table, each finding on a line of its own below its target."""
    lines = [f"{'target':<12} {'budget':>9} {'inputs run':>11} {'crashes':>8} {'seconds':>8}"]
    for o in outcomes:
        lines.append(f"{o.target:<12} {o.budget:>9} {o.inputs:>11} {o.crashes:>8} {o.seconds:>8.1f}")
        lines += [f"    {count:>7} x {key}" for key, count in sorted(o.findings.items())]
        if o.hang:
            lines.append("    hang: an input ran longer than --timeout (see libfuzzer.log)")
        elif o.exit_code != 0:
            lines.append(f"    the harness exited {o.exit_code} (see libfuzzer.log)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the targets asked for (all by default); print the table; 1 if anything was found."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="inputs per target (default 100000)")
    parser.add_argument(
        "--target", action="append", choices=TARGETS, help="a target (repeatable; default all)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where corpora and findings go (default: a temp dir)"
    )
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1)")
    options = parser.parse_args(argv)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="allworx-fuzz-"))
    outcomes = []
    for name in options.target or TARGETS:
        outcome = fuzz(name, options.runs, workdir, options.timeout, options.seed)
        print(
            f"{name}: {outcome.inputs} inputs, {outcome.crashes} crashes, {outcome.seconds:.1f} s", flush=True
        )
        outcomes.append(outcome)
    print(f"\nfuzz run in {workdir}\n{table(outcomes)}")
    failed = any(o.crashes or o.exit_code for o in outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
