"""``allworx-sim scenario run PATH... [--junit FILE] [--json] [--jobs N]``.

Prints one line per scenario (``PASS``, ``FAIL`` or ``ERROR``, the file, the title, the time)
and, under a failed one, one line per expectation that did not hold: file, step, field, expected
and observed. ``--json`` prints one JSON document instead. ``--junit FILE`` also writes a JUnit
XML report for CI.

Exit codes (agent/cliutil.py's convention): 0 every expectation held; 1 otherwise: a scenario
failed or could not run, or a file is malformed (then nothing runs, and every problem is printed
on stderr as ``error: BAD_INPUT: FILE: step N (KIND), field 'F': ...``), or the command line is
wrong, or the ``--junit`` file cannot be written (checked before anything runs). Never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from agent.cliutil import fail
from common.errors import AllworxError
from simulator.scenario.junit import render_junit, write_junit
from simulator.scenario.model import ScenarioFileError
from simulator.scenario.results import ScenarioResult

EXIT_FAILED = 1
EXIT_MALFORMED = 1  # bad input, like every other command's
_LABEL = {"passed": "PASS ", "failed": "FAIL ", "error": "ERROR"}


@click.group("scenario")
def scenario() -> None:
    """Upgrade stories as TOML files, run on fresh virtual servers (docs/scenarios.md)."""


def _human(results: list[ScenarioResult], elapsed: float) -> None:
    for result in results:
        click.echo(f"{_LABEL[result.status]} {result.path}  {result.title}  ({result.duration:.2f} s)")
        for line in result.messages():
            click.echo(f"    {line}")
    counts = {s: sum(1 for r in results if r.status == s) for s in ("passed", "failed", "error")}
    click.echo(f"scenarios: {counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors "
               f"in {elapsed:.1f} s")  # fmt: skip


def _document(
    results: list[ScenarioResult], elapsed: float, problems: list[str] | None = None
) -> dict[str, Any]:
    return {
        "ok": bool(results) and all(r.passed for r in results) and not problems,
        "passed": sum(1 for r in results if r.status == "passed"),
        "failed": sum(1 for r in results if r.status == "failed"),
        "errors": sum(1 for r in results if r.status == "error"),
        "malformed": problems or [],
        "duration": round(elapsed, 3),
        "scenarios": [r.as_dict() for r in results],
    }


def _malformed(exc: ScenarioFileError, files: list[Path], junit: Path | None, as_json: bool) -> None:
    bad = {p.file for p in exc.problems}
    if junit is not None:
        write_junit(junit, render_junit([], malformed=exc.problems,
                                        not_run=[str(f) for f in files if str(f) not in bad]))  # fmt: skip
    if as_json:
        click.echo(json.dumps(_document([], 0.0, [str(p) for p in exc.problems]), indent=2))
    for problem in exc.problems:
        click.echo(f"error: BAD_INPUT: {problem}", err=True)
    click.echo(
        f"error: BAD_INPUT: {len(bad)} malformed scenario file{'s' if len(bad) > 1 else ''}: nothing was run",
        err=True,
    )
    sys.exit(EXIT_MALFORMED)


def _check_writable(junit: Path) -> None:
    """Fail before anything runs when the JUnit report could not be written where asked."""
    probe = junit.with_name(f".{junit.name}.probe")
    try:
        junit.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        fail("BAD_INPUT", f"--junit {junit}: cannot write there: {exc.strerror or exc}")


@scenario.command("run")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--junit", "junit", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write a JUnit XML report to this file (for CI).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of lines.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes (0: one per core when there are several files).")  # fmt: skip
def run_command(paths: tuple[Path, ...], junit: Path | None, as_json: bool, jobs: int) -> None:
    """Run scenario files (a directory means every *.toml under it); exit 0 only if all pass."""
    from simulator.scenario.runner import discover, load_all, run_files

    if junit is not None:
        _check_writable(junit)
    files: list[Path] = []
    try:
        files = discover(paths)
        scenarios = load_all(files)
    except ScenarioFileError as exc:
        _malformed(exc, files, junit, as_json)
    started = time.perf_counter()
    try:
        results = run_files(scenarios, jobs)
    except AllworxError as exc:  # the shared keyring or release repository could not be prepared
        click.echo(f"error: {exc.reason.value}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    elapsed = time.perf_counter() - started
    if junit is not None:
        try:
            write_junit(junit, render_junit(results, duration=elapsed))
        except OSError as exc:
            fail("BAD_INPUT", f"--junit {junit}: {exc.strerror or exc}")
    if as_json:
        click.echo(json.dumps(_document(results, elapsed), indent=2))
    else:
        _human(results, elapsed)
    sys.exit(0 if all(r.passed for r in results) else EXIT_FAILED)
