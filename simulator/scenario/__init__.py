"""Scenarios: upgrade stories written as TOML files, run on fresh virtual servers, checked in CI.

The format is a public contract (docs/scenarios.md): :mod:`~simulator.scenario.model` parses and
validates a file into typed steps, :mod:`~simulator.scenario.runner` runs it, :mod:`~simulator.scenario.junit`
reports in JUnit XML, ``allworx-sim scenario run`` (:mod:`~simulator.scenario.cli`) and the pytest
plugin (:mod:`~simulator.scenario.pytest_plugin`) are the two ways in.
"""

from common.validation import Problem
from simulator.scenario.model import Scenario, ScenarioFileError
from simulator.scenario.parse import load_scenario, parse_scenario

__all__ = ["Problem", "Scenario", "ScenarioFileError", "load_scenario", "parse_scenario"]
