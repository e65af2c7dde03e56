"""The one way the files people write are validated: scenarios, fleet and campaign descriptions.

A format is a tree of pydantic models deriving from :class:`FileModel`: frozen, unknown keys
refused, no silent coercion (a number is not a string, ``true`` is not a number, ``2.5`` is not a
whole number). A date may be a TOML date or an ISO string (:data:`IsoDate`), an instant an aware
datetime or ISO 8601 text (:data:`Instant`); a list may stand where a tuple is kept
(:data:`Strings`). :func:`validate` turns pydantic's errors into :class:`Problem` s in a reader's
words, each naming the file, the place (a step, a server) and the field by its key as written (a
dotted path inside nested tables: ``fleet.releases."7.0"``).

Invariant: :func:`validate` returns a model or raises the caller's :class:`InputError` listing
every problem found, never a pydantic error. (A model built in code with bad values raises
pydantic's ``ValidationError``, a ``ValueError``: a programming error, not a reader's.)
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, RootModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from common.errors import AllworxError

M = TypeVar("M", bound=BaseModel)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PRINTABLE_BITS = 4096  # str() refuses an int of more than 4300 digits (about 14,000 bits)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file: where it is, which field, what is wrong."""

    file: str  # the file's path, or what the values are ("campaign spec") when there is no file
    where: str  # "", "step 3 (upgrade)", "server 1 ('hq')"
    field: str | None  # the key as written; a dotted path inside nested tables
    message: str

    def __str__(self) -> str:
        place = ", ".join(p for p in (self.where, f"field '{self.field}'" if self.field else "") if p)
        return f"{self.file}: {place}: {self.message}" if place else f"{self.file}: {self.message}"


class InputError(AllworxError, ValueError):
    """Something a person wrote is malformed; ``problems`` lists everything found, one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


def _from_text(parse: Callable[[str], object]) -> Callable[[object], object]:
    """A before-validator: text that ``parse`` reads becomes its value.

    Anything else is left as it is, for the strict check to refuse in the reader's words
    ("expected a date (YYYY-MM-DD), got 'tomorrow'").
    """

    def convert(value: object) -> object:
        if isinstance(value, str):
            try:
                return parse(value)
            except ValueError:
                return value
        return value

    return convert


def _listed(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


IsoDate = Annotated[date, BeforeValidator(_from_text(date.fromisoformat))]  # a TOML date or "YYYY-MM-DD"
Instant = Annotated[AwareDatetime, BeforeValidator(_from_text(datetime.fromisoformat))]  # aware, or ISO text
Strings = Annotated[tuple[str, ...], BeforeValidator(_listed)]  # a list of strings, kept as a tuple


FILE_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class FileModel(BaseModel):
    """Base of every model of a file people write: frozen, unknown keys refused, strict types."""

    model_config = FILE_CONFIG


class PositionalFileModel(FileModel):
    """A :class:`FileModel` code may also build positionally, fields in order: ``AbortRule(0.5, 2)``.

    A subclass states that constructor for type checkers under ``TYPE_CHECKING``; reading a file
    validates it as any other model (pydantic passes the table's keys as keyword arguments).
    """

    def __init__(self, /, *args: Any, **data: Any) -> None:
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        super().__init__(**dict(zip(names, args, strict=False)), **data)


def validate(
    model: type[M],
    raw: object,
    *,
    file: str,
    where: str = "",
    error: Callable[[list[Problem]], Exception] = InputError,
    context: dict[str, Any] | None = None,
) -> M:
    """Validate ``raw`` (a parsed TOML or JSON document, or a part of one) as ``model``.

    Raises:
        InputError: (or what ``error`` makes) every problem found, each naming file, place and field.
    """
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        raise error(explain(exc, model, raw, file, where)) from None


def explain(
    exc: ValidationError, model: type[BaseModel], raw: object, file: str, where: str = ""
) -> list[Problem]:
    """Pydantic's errors as problems in a reader's words, one per field (a union's tries are one)."""
    found: dict[str | None, str] = {}
    for error in exc.errors(include_url=False):
        path, message = _explain_one(error, model, raw)
        found.setdefault(".".join(_key(p) for p in path) or None, message)
    return [Problem(file, where, field, message) for field, message in found.items()]


def _key(part: str) -> str:
    return part if _BARE_KEY.fullmatch(part) else f'"{part}"'


def _explain_one(error: ErrorDetails, model: type[BaseModel], raw: object) -> tuple[list[str], str]:
    """The path to the field an error is about (keys as written) and what is wrong with it."""
    loc, kind = error["loc"], error["type"]
    annotation: Any = model.model_fields["root"].annotation if issubclass(model, RootModel) else model
    value: Any = raw
    path: list[str] = []
    for position, part in enumerate(loc):
        fields = _fields_of(annotation)
        if fields is not None and isinstance(part, str):
            if kind == "extra_forbidden" and position == len(loc) - 1:
                allowed = ", ".join(sorted(f.alias or n for n, f in fields.items()))
                return [*path, part], f"unknown field (allowed here: {allowed})"
            annotation = next((f.annotation for n, f in fields.items() if (f.alias or n) == part), Any)
        elif typing.get_origin(_bare(annotation)) is dict and isinstance(part, str):
            annotation = typing.get_args(_bare(annotation))[1]
        else:
            break  # a list item or a union's member: the field reached is what the reader wrote
        path.append(part)
        value = value.get(part) if isinstance(value, Mapping) else None
    return path, _message(error, kind, annotation, value)


_BOUNDS = {
    "greater_than_equal": ("must be at least", "ge"),
    "greater_than": ("must be more than", "gt"),
    "less_than_equal": ("must be at most", "le"),
    "less_than": ("must be less than", "lt"),
}
_FIXED = {
    "finite_number": "must be a finite number",
    "timezone_aware": "must carry a timezone (e.g. 2024-03-01T02:00:00+00:00)",
}


def _message(error: ErrorDetails, kind: str, annotation: Any, value: Any) -> str:
    ctx = error.get("ctx", {})
    if kind == "missing":
        return "is required"
    if kind == "value_error":  # a validator's own sentence
        return str(ctx.get("error", error["msg"]))
    if kind in _BOUNDS:
        text, name = _BOUNDS[kind]
        return f"{text} {ctx.get(name)}, got {show(value)}"
    if kind in _FIXED:
        return f"{_FIXED[kind]}, got {show(value)}"
    hint = f' (quote it: "{value}")' if str in _members(annotation) and isinstance(value, float) else ""
    return f"expected {describe(annotation)}, got {show(value)}{hint}"


def _bare(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` metadata."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The types a value may take (a union's members, ``None`` left out)."""
    annotation = _bare(annotation)
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return [m for a in typing.get_args(annotation) if a is not type(None) for m in _members(a)]
    return [annotation]


def _fields_of(annotation: Any) -> dict[str, FieldInfo] | None:
    """The fields of the model a value of ``annotation`` is read by, if any."""
    models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) != 1 or issubclass(models[0], RootModel):
        return None
    return models[0].model_fields


_NAMES: dict[Any, str] = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    date: "a date (YYYY-MM-DD)",
    datetime: "a date-time (ISO 8601)",
    AwareDatetime: "a date-time with a timezone (ISO 8601, e.g. 2024-03-01T02:00:00+00:00)",
}
_PLURALS = {
    "a string": "strings",
    "a number": "numbers",
    "a whole number": "whole numbers",
    "a list of strings": "lists of strings",
}


def describe(annotation: Any) -> str:
    """A reader's name for a type: "a string", "a date (YYYY-MM-DD)", "one of 'a', 'b'"."""
    annotation = _bare(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        names = [describe(a) for a in args if a is not type(None)]
        if "a number" in names:  # int | float: any number
            names = [n for n in names if n != "a whole number"]
        return " or ".join(dict.fromkeys(names))
    if origin in (list, tuple, dict):
        shape, item = ("a table", args[1]) if origin is dict else ("a list", args[0])
        return f"{shape} of {_PLURALS.get(describe(item), 'values')}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        root = annotation.model_fields["root"] if issubclass(annotation, RootModel) else None
        return describe(root.annotation) if root is not None else "a table"
    return _NAMES.get(annotation, "a value of another kind")


def show(value: Any) -> str:
    """A reader's rendering of a TOML or JSON value in an error message."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, date | time):
        kind = "date-time" if isinstance(value, datetime) else "date" if isinstance(value, date) else "time"
        return f"the {kind} {value.isoformat()}"
    if isinstance(value, int) and value.bit_length() > _PRINTABLE_BITS:
        return "a number too large to print"
    shapes = ((int | float, "the number {}"), (dict, "a table"), (list | tuple, "a list"))
    return next((text.format(value) for cls, text in shapes if isinstance(value, cls)), repr(value))
