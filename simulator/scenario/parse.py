"""Parse scenario TOML into the typed steps of :mod:`simulator.scenario.model`.

The dataclasses are the schema: a table's allowed keys are the dataclass's fields (by their
``toml`` metadata name), a field without a default is required, and each value must fit the
field's annotation (``str``, ``int``, ``bool``, ``date`` as a TOML date or an ISO string, a list
of strings, a ``Literal`` choice, or a union of those).

Invariant: :func:`load_scenario` returns a fully typed, statically checked
:class:`~simulator.scenario.model.Scenario` or raises :class:`ScenarioFileError` listing every
problem found; nothing is run before that.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields, is_dataclass
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from simulator.scenario.model import (
    STEP_KINDS,
    Header,
    Problem,
    Scenario,
    ScenarioFileError,
    ServerDecl,
    Step,
)

T = TypeVar("T")


class _TypeProblemError(Exception):
    pass


def describe(annotation: Any) -> str:
    """A reader's name for a field type: "a string", "a date (YYYY-MM-DD)", "one of 'a', 'b'"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe(a) for a in args if a is not type(None))
    if origin is list:
        return "a list of strings"
    names = {str: "a string", int: "a whole number", bool: "true or false", date: "a date (YYYY-MM-DD)"}
    return names.get(annotation, str(annotation))


def show(value: Any) -> str:
    """A reader's rendering of a TOML value in an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        kind = "date-time" if isinstance(value, datetime) else "date"
        return f"the {kind} {value.isoformat()}"
    shapes = ((int | float, f"the number {value}"), (dict, "a table"), (list, "a list"))
    return next((text for cls, text in shapes if isinstance(value, cls)), repr(value))


def coerce(value: Any, annotation: Any) -> Any:
    """Return ``value`` as ``annotation`` (dates may be TOML dates or ISO strings).

    Raises:
        _TypeProblemError: ``value`` does not fit.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        for member in (a for a in args if a is not type(None)):
            try:
                return coerce(value, member)
            except _TypeProblemError:
                continue
        raise _TypeProblemError(f"expected {describe(annotation)}, got {show(value)}")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
    elif origin is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif annotation is date:
        return _date(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, annotation):
        return value
    hint = ' (quote it: "8.0")' if annotation is str and isinstance(value, float) else ""
    raise _TypeProblemError(f"expected {describe(annotation)}, got {show(value)}{hint}")


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _TypeProblemError(f"expected a date (YYYY-MM-DD), got {show(value)}")


def build(cls: type[T], raw: dict[str, Any], file: str, where: str, skip: tuple[str, ...] = ()) -> T:
    """Build dataclass ``cls`` from a TOML table, or raise ScenarioFileError naming each bad field."""
    if not is_dataclass(cls):  # every schema class is a dataclass: anything else is a bug
        raise RuntimeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    spec = {f.metadata.get("toml", f.name): f for f in fields(cls) if "internal" not in f.metadata}
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in skip:
            continue
        if key not in spec:
            allowed = ", ".join(sorted(spec))
            problems.append(Problem(file, where, key, f"unknown field (allowed here: {allowed})"))
            continue
        try:
            values[spec[key].name] = coerce(value, hints[spec[key].name])
        except _TypeProblemError as exc:
            problems.append(Problem(file, where, key, str(exc)))
    for key, f in spec.items():
        if key not in raw and f.default is MISSING and f.default_factory is MISSING:
            problems.append(Problem(file, where, key, "is required"))
    if problems:
        raise ScenarioFileError(problems)
    return cls(**values)


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
    return _with_index(build(STEP_KINDS[kind], raw, file, f"step {index} ({kind})", skip=("do",)), index)


def _server(raw: dict[str, Any], index: int, file: str) -> ServerDecl:
    name = raw.get("name")
    where = f"server {index}" + (f" ({name!r})" if isinstance(name, str) else "")
    return _with_index(build(ServerDecl, raw, file, where), index)


def _with_index(item: T, index: int) -> T:
    object.__setattr__(item, "index", index)  # reason: frozen dataclasses, index set once after building
    return item


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
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError([Problem(file, "", None, f"not valid TOML: {exc}")]) from None
    problems: list[Problem] = []
    servers = [_attempt(problems, partial(_server, t, i, file))
               for i, t in enumerate(_tables(problems, raw, "server", file), start=1)]  # fmt: skip
    steps = [_attempt(problems, partial(_step, t, i, file))
             for i, t in enumerate(_tables(problems, raw, "step", file), start=1)]  # fmt: skip
    top = {k: v for k, v in raw.items() if k not in ("server", "step")}
    head = _attempt(problems, partial(build, Header, top, file, ""))
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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError([Problem(str(path), "", None, f"cannot be read: {exc}")]) from None
    return parse_scenario(text, path)
