"""JUnit XML for CI systems: one ``<testcase>`` per scenario file.

The document follows the common Jenkins/Ant JUnit format (the schema Jenkins, GitLab, GitHub
Actions reporters and Azure read; tests/data/junit.xsd is a compact copy of its rules and the
tests validate every report against it): ``<testsuites>`` holding one ``<testsuite>`` with a
``<properties>`` block, the test cases, ``<system-out>`` and ``<system-err>``. A failed
expectation is a ``<failure>``, a scenario that could not run an ``<error>``, a scenario not run
because another file was malformed ``<skipped>``.

Invariant: only attributes that schema allows are written (no ``file`` on a test case: the file
is the ``classname``, dotted, and appears in every message).
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.fileio import write_atomic
from common.errors import StoreError
from common.validation import Problem
from simulator.scenario.results import ScenarioResult

SUITE = "allworx-scenarios"


def classname(path: str) -> str:
    """A dotted class name for a scenario file: ``scenarios/swm-1.toml`` -> ``scenarios.swm-1``."""
    parts = Path(path).with_suffix("").parts
    return ".".join(p for p in parts if p not in ("/", "..", "."))


def _case(suite: ET.Element, result: ScenarioResult) -> None:
    case = ET.SubElement(suite, "testcase", name=result.title, classname=classname(result.path),
                         time=f"{result.duration:.3f}")  # fmt: skip
    if result.error is not None:
        error = ET.SubElement(case, "error", message=result.error.splitlines()[0], type="ScenarioError")
        error.text = "\n".join(filter(None, (result.error, result.detail)))
    if result.failures:
        lines = [f.describe(result.path) for f in result.failures]
        summary = f"{len(lines)} expectation{'s' if len(lines) > 1 else ''} did not hold: {lines[0]}"
        failure = ET.SubElement(case, "failure", type="ScenarioExpectationFailed", message=summary)
        failure.text = "\n".join(lines)
    out = ET.SubElement(case, "system-out")
    out.text = f"{result.path}: {result.steps_run} of {result.steps_total} steps run; rules: " + (
        ", ".join(result.rules) or "none declared"
    )


def _problem_case(suite: ET.Element, file: str, problems: Sequence[Problem]) -> None:
    case = ET.SubElement(suite, "testcase", name=Path(file).stem, classname=classname(file), time="0.000")
    error = ET.SubElement(case, "error", message=str(problems[0]), type="ScenarioFileError")
    error.text = "\n".join(str(p) for p in problems)


def _skipped_case(suite: ET.Element, file: str) -> None:
    case = ET.SubElement(suite, "testcase", name=Path(file).stem, classname=classname(file), time="0.000")
    ET.SubElement(case, "skipped").text = "not run: another scenario file is malformed"


def render_junit(
    results: Sequence[ScenarioResult],
    *,
    malformed: Sequence[Problem] = (),
    not_run: Sequence[str] = (),
    duration: float | None = None,
) -> bytes:
    """Return the JUnit XML document for a run (or for a run stopped by malformed files)."""
    by_file: dict[str, list[Problem]] = {}
    for problem in malformed:
        by_file.setdefault(problem.file, []).append(problem)
    tests = len(results) + len(by_file) + len(not_run)
    failures = sum(1 for r in results if r.status == "failed")
    errors = sum(1 for r in results if r.status == "error") + len(by_file)
    total = duration if duration is not None else sum(r.duration for r in results)
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(errors), "time": f"{total:.3f}"}
    root = ET.Element("testsuites", {"name": SUITE, **counts})
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    host = socket.gethostname() or "localhost"
    attributes = {"name": SUITE, "skipped": str(len(not_run)), **counts, "timestamp": stamp, "hostname": host}
    suite = ET.SubElement(root, "testsuite", attributes)
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="generator", value="allworx-sim scenario run")
    for result in results:
        _case(suite, result)
    for file, problems in by_file.items():
        _problem_case(suite, file, problems)
    for file in not_run:
        _skipped_case(suite, file)
    ET.SubElement(suite, "system-out").text = f"{tests} scenarios"
    ET.SubElement(suite, "system-err").text = ""
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_junit(path: Path, document: bytes) -> None:
    """Write a report, creating its folder; atomic (:func:`agent.fileio.write_atomic`) so CI never
    reads half.

    Raises:
        StoreError: the folder or the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: cannot create: {exc.strerror}") from exc
    write_atomic(path, document)
