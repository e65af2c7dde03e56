"""Run scenario files: each on fresh virtual servers in its own temporary directory.

:func:`run_scenario` runs one parsed scenario and returns a :class:`ScenarioResult`;
:func:`run_files` validates every file first (nothing runs if one is malformed: see
:func:`load_all`), then runs them, in parallel across processes when there are many.

Invariants: a scenario never raises for anything a scenario file can cause: refusals are data,
failed expectations are :class:`Failure` s, a step that cannot be carried out ends the scenario
with ``error`` set, naming the file and the step. Each scenario's temporary directory is removed
afterwards. Workers share only the vendor keyring and release repository, which the parent
prepares before starting them (both are race-safe anyway).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from agent.logs import configure_logging
from common.errors import AllworxError
from common.reasons import Refusal
from common.validation import Problem
from releases.catalog import Catalog, default_catalog
from simulator.keyring import VendorKeyring
from simulator.publish import default_repository
from simulator.scenario import model as m
from simulator.scenario.checks import NONE
from simulator.scenario.expect import check_expect
from simulator.scenario.model import Scenario, ScenarioFileError
from simulator.scenario.parse import load_scenario
from simulator.scenario.results import Failure, ScenarioResult
from simulator.scenario.world import StepError, World

PARALLEL_FROM = 3  # files: below this, run in-process (a worker's start-up would cost more)


def discover(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into every ``*.toml`` under them (sorted); keep files as given.

    Raises:
        ScenarioFileError: a path does not exist, or a directory holds no scenario file.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*.toml") if p.is_file())
            if not inside:
                raise ScenarioFileError(
                    [Problem(str(path), "", None, "no *.toml scenario files in this directory")]
                )
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise ScenarioFileError([Problem(str(path), "", None, "no such file or directory")])
    return list(dict.fromkeys(found))


def load_all(paths: Sequence[Path]) -> list[Scenario]:
    """Parse and validate every file before anything runs.

    Raises:
        ScenarioFileError: every problem of every malformed file.
    """
    scenarios, problems = [], []
    for path in paths:
        try:
            scenarios.append(load_scenario(path))
        except ScenarioFileError as exc:
            problems += exc.problems
    if problems:
        raise ScenarioFileError(problems)
    return scenarios


def _expect_refused(step: m.Step, refusal: Refusal | None) -> Failure | None:
    wanted = step.expect_refused
    observed = refusal.reason.value if refusal is not None else NONE
    if wanted is None or observed == wanted:
        return None
    return Failure(
        step.index, step.KIND, "expect_refused", wanted, observed, refusal.message if refusal else ""
    )


async def _run_steps(world: World, result: ScenarioResult) -> None:
    world.create_servers()
    for step in world.scenario.steps:
        if isinstance(step, m.Expect):
            result.failures += check_expect(world, step)
        else:
            refusal = await world.run(step)
            failure = _expect_refused(step, refusal)
            if failure is not None:
                result.failures.append(failure)
        while world.cut_failures:
            cut_step, point = world.cut_failures.pop(0)
            why = "the request hit no such crash point"
            result.failures.append(
                Failure(cut_step.index, cut_step.KIND, "power_cut", point, "never reached", why)
            )
        result.steps_run += 1


def run_scenario(
    scenario: Scenario,
    *,
    keyring: VendorKeyring | None = None,
    catalog: Catalog | None = None,
    workdir: Path | None = None,
) -> ScenarioResult:
    """Run one scenario on fresh virtual servers (in ``workdir``, else a temporary directory)."""
    started = time.perf_counter()
    result = ScenarioResult(str(scenario.path), scenario.title, sorted(scenario.rules),
                            steps_total=len(scenario.steps))  # fmt: skip
    keyring = keyring or VendorKeyring.load_or_create()
    with tempfile.TemporaryDirectory(prefix="allworx-scenario-", dir=workdir) as tmp:
        world = World(scenario, Path(tmp), keyring, catalog or default_catalog())
        try:
            asyncio.run(_run_steps(world, result))
        except StepError as exc:
            field = f", field '{exc.field_name}'" if exc.field_name else ""
            result.error = f"{scenario.path}: {exc.step.where()}{field}: {exc}"
        except AllworxError as exc:
            step = scenario.steps[result.steps_run] if result.steps_run < len(scenario.steps) else None
            where = step.where() if step is not None else "creating the servers"
            result.error = f"{scenario.path}: {where}: {exc.reason.value}: {exc}"
        except Exception as exc:  # reason: one broken scenario must not stop the others
            result.error = f"{scenario.path}: internal error: {type(exc).__name__}: {exc}"
            result.detail = traceback.format_exc()
    result.duration = time.perf_counter() - started
    return result


def run_path(path: str) -> ScenarioResult:
    """Load and run one file (the unit of work of a worker process)."""
    try:
        scenario = load_scenario(Path(path))
    except ScenarioFileError as exc:
        return ScenarioResult(path, Path(path).stem, error=str(exc))
    return run_scenario(scenario)


def prepare() -> VendorKeyring:
    """Create the shared vendor keyring and release repository once, before any worker starts."""
    keyring = VendorKeyring.load_or_create()
    default_repository(keyring)
    return keyring


def run_files(scenarios: Sequence[Scenario], jobs: int = 0) -> list[ScenarioResult]:
    """Run validated scenarios, in order of the input; ``jobs`` processes (0: one per core, if many)."""
    keyring = prepare()
    workers = jobs or min(os.cpu_count() or 1, len(scenarios))
    if workers <= 1 or len(scenarios) < PARALLEL_FROM:
        return [run_scenario(s, keyring=keyring) for s in scenarios]
    context = multiprocessing.get_context("spawn")  # reason: never fork a process that may hold threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=configure_logging) as pool:
        return list(pool.map(run_path, [str(s.path) for s in scenarios]))
