"""Parse scenario TOML into the typed steps of :mod:`simulator.scenario.model`.

The models are the schema: each ``[[server]]`` and ``[[step]]`` table, and the top-level keys, are
validated by their model (:func:`common.validation.validate`: allowed keys, types, required
fields), the step's model chosen by its ``do``; then :func:`~simulator.scenario.checks.check_scenario`
checks what spans tables (references, codes, dates).

Invariant: :func:`load_scenario` returns a fully typed, statically checked
:class:`~simulator.scenario.model.Scenario` or raises :class:`ScenarioFileError` listing every
problem found; nothing is run before that.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from agent.fileio import read_bounded
from common.errors import StoreError
from common.validation import FileModel, Problem, show, validate
from simulator.scenario.model import (
    STEP_KINDS,
    Header,
    Scenario,
    ScenarioFileError,
    ServerDecl,
    Step,
)

T = TypeVar("T")
M = TypeVar("M", bound=FileModel)
MAX_SCENARIO_BYTES = 1024 * 1024  # a scenario file is a few KiB


def _build(model: type[M], raw: dict[str, Any], file: str, where: str, index: int = 0) -> M:
    """Validate one table as ``model``, or raise ScenarioFileError naming each bad field."""
    return validate(model, raw, file=file, where=where, error=ScenarioFileError, context={"index": index})


def _table_list(raw: dict[str, Any], key: str, file: str) -> list[dict[str, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ScenarioFileError(
            [Problem(file, "", key, f"must be an array of tables ([[{key}]]), got {show(value)}")]
        )
    return value


def _step(raw: dict[str, Any], index: int, file: str) -> Step:
    kind = raw.get("do")
    if not isinstance(kind, str) or kind not in STEP_KINDS:
        known = ", ".join(STEP_KINDS)
        problem = (
            f"unknown step kind {show(kind)} (known: {known})"
            if kind is not None
            else f"is required ({known})"
        )
        raise ScenarioFileError([Problem(file, f"step {index}", "do", problem)])
    fields = {k: v for k, v in raw.items() if k != "do"}
    return _build(STEP_KINDS[kind], fields, file, f"step {index} ({kind})", index)


def _server(raw: dict[str, Any], index: int, file: str) -> ServerDecl:
    name = raw.get("name")
    where = f"server {index}" + (f" ({name!r})" if isinstance(name, str) else "")
    return _build(ServerDecl, raw, file, where, index)


def _attempt(problems: list[Problem], make: Callable[[], T]) -> T | None:
    """Return ``make()``, or None after adding its problems to ``problems``."""
    try:
        return make()
    except ScenarioFileError as exc:
        problems.extend(exc.problems)
        return None


def _tables(problems: list[Problem], raw: dict[str, Any], key: str, file: str) -> list[dict[str, Any]]:
    return _attempt(problems, partial(_table_list, raw, key, file)) or []


def parse_scenario(text: str, path: Path) -> Scenario:
    """Parse and validate scenario text read from ``path``.

    Raises:
        ScenarioFileError: bad TOML, unknown fields or step kinds, wrong types, missing fields,
            undeclared servers, unknown reason codes or rule IDs, dates out of order.
    """
    from simulator.scenario.checks import check_scenario

    file = str(path)
    try:
        raw = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or a number tomllib cannot convert
        raise ScenarioFileError([Problem(file, "", None, f"not valid TOML: {exc}")]) from None
    problems: list[Problem] = []
    servers = [_attempt(problems, partial(_server, t, i, file))
               for i, t in enumerate(_tables(problems, raw, "server", file), start=1)]  # fmt: skip
    steps = [_attempt(problems, partial(_step, t, i, file))
             for i, t in enumerate(_tables(problems, raw, "step", file), start=1)]  # fmt: skip
    top = {k: v for k, v in raw.items() if k not in ("server", "step")}
    head = _attempt(problems, partial(_build, Header, top, file, ""))
    if problems or head is None:
        raise ScenarioFileError(problems)
    scenario = Scenario(
        path=path, title=head.title, start=head.start, description=head.description, rules=head.rules,
        servers=tuple(s for s in servers if s is not None), steps=tuple(s for s in steps if s is not None),
    )  # fmt: skip
    check_scenario(scenario)
    return scenario


def load_scenario(path: Path) -> Scenario:
    """Read and validate one scenario file.

    Raises:
        ScenarioFileError: the file cannot be read, or any problem :func:`parse_scenario` finds.
    """
    try:  # bounded and non-blocking: /dev/zero or a FIFO is refused at once
        text = read_bounded(path, MAX_SCENARIO_BYTES).decode("utf-8")
    except (OSError, StoreError, UnicodeDecodeError) as exc:
        raise ScenarioFileError([Problem(str(path), "", None, f"cannot be read: {exc}")]) from None
    return parse_scenario(text, path)
