"""A pytest plugin: ``pytest scenarios/`` collects each scenario file as one test item.

Registered as a ``pytest11`` entry point named ``simulator.scenario.pytest_plugin`` (so
``-p simulator.scenario.pytest_plugin`` works too, and is not loaded twice). Collected: every
``*.toml`` file inside a directory named ``scenarios`` (at any depth), or named on the command
line. A failed item shows one line per expectation that did not hold (file, step, field, expected,
observed), a malformed file every problem found, never a traceback; pytest's own ``--junitxml``
then reports them like any test.

Imports of the simulator are deferred to the first item run, so merely having the plugin
installed costs a test session nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCENARIO_DIR = "scenarios"


class ScenarioFailedError(Exception):
    """A scenario ran and some expectation did not hold, or it could not run to its end."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect ``*.toml`` files in a ``scenarios`` directory, or named on the command line."""
    if file_path.suffix != ".toml":
        return None
    inside = SCENARIO_DIR in file_path.parent.parts
    if inside or parent.session.isinitpath(file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """One scenario file: one item."""

    def collect(self) -> Iterator[pytest.Item]:
        """Yield the file's single item, named after the file."""
        yield ScenarioItem.from_parent(self, name=self.path.stem)


class ScenarioItem(pytest.Item):
    """Runs one scenario on fresh virtual servers."""

    def runtest(self) -> None:
        """Parse, validate and run the scenario; raise ScenarioFailedError listing what did not hold."""
        from simulator.scenario.model import ScenarioFileError
        from simulator.scenario.parse import load_scenario
        from simulator.scenario.runner import run_scenario

        try:
            scenario = load_scenario(self.path)
        except ScenarioFileError as exc:
            raise ScenarioFailedError([str(p) for p in exc.problems]) from None
        self.user_properties.append(("title", scenario.title))
        result = run_scenario(scenario)
        if not result.passed:
            raise ScenarioFailedError(result.messages())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        """Show a scenario's failures as plain lines; anything else as pytest would."""
        if isinstance(excinfo.value, ScenarioFailedError):
            return "\n".join(excinfo.value.lines)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        """Where the item comes from, for pytest's report headers."""
        return self.path, 0, f"scenario {self.path.name}"
