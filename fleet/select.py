"""``--select EXPR``: which servers an operator command covers, matched over their retained state.

An expression is ``FIELD OP VALUE``:

- ``site=east``, ``model=6x,24x``: the state's site or model is one of the comma-separated values;
- ``release<8.0`` (also ``<=``, ``>``, ``>=``, ``=``): the committed release compared numerically
  (:func:`releases.catalog.version_key`), so ``7.10 > 7.9``;
- ``network=N``: the server is a member of network ``N`` of the campaign's networks file;
- ``key=valid|expired|none``: the maintenance key in the state (``expired``: one that is not valid);
- ``serial=A,B`` or ``serial=@FILE`` (one serial a line; blank lines ignored).

Several expressions are ANDed; within one, commas mean any of. Invariants: parsing is the only
step that reads anything (a serial file); matching is a pure function of the state (and the
networks), and a selection never matches a state whose field contradicts one of its expressions.
A bad expression is a :class:`SelectionError` (``BAD_INPUT``) naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.fileio import read_bounded
from agent.mqtt.messages import StateDocument
from common.errors import AllworxError, StoreError
from releases.catalog import version_key

FIELDS = ("site", "model", "release", "network", "key", "serial")
KEY_STATES = ("valid", "expired", "none")
KeyState = Literal["valid", "expired", "none"]
_EXPRESSION = re.compile(r"^(?P<field>[a-z]+)(?P<op><=|>=|<|>|=)(?P<value>.*)$")
_VERSION = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,6}){0,5}$")
MAX_SERIAL_FILE = 16 * 1024 * 1024  # bytes: a serial file of ``serial=@FILE``, one serial a line
BRIEF_COUNT, BRIEF_WIDTH = 6, 64  # expressions a bounded record names, and JSON bytes each takes
_ORDER: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b,
}


class SelectionError(AllworxError):
    """A ``--select`` expression is malformed (``BAD_INPUT``)."""


def key_state(state: StateDocument) -> KeyState:
    """The maintenance key of a state: ``valid``, ``expired`` (present, not valid) or ``none``."""
    key = state.maintenance_key
    if key is None:
        return "none"
    return "valid" if key.valid else "expired"


_PLAIN: dict[str, Callable[[StateDocument], str]] = {
    "site": lambda s: s.site,
    "model": lambda s: s.model,
    "serial": lambda s: s.serial,
    "key": key_state,
}


@dataclass(frozen=True, slots=True)
class Clause:
    """One parsed expression: ``field op values`` (its text as given, for the record)."""

    text: str
    field: str
    op: str
    values: tuple[str, ...]

    def matches(self, state: StateDocument, networks: Mapping[str, Sequence[str]]) -> bool:
        """Whether ``state`` satisfies this expression."""
        if self.field == "network":
            return any(state.serial in networks.get(name, ()) for name in self.values)
        if self.field == "release":
            try:
                have = version_key(state.release)
            except ValueError:
                return False
            return any(_ORDER[self.op](have, version_key(v)) for v in self.values)
        return _PLAIN[self.field](state) in self.values


@dataclass(frozen=True, slots=True)
class Selection:
    """Expressions ANDed (none: every server)."""

    clauses: tuple[Clause, ...] = ()
    networks: Mapping[str, Sequence[str]] | None = None

    @property
    def expressions(self) -> tuple[str, ...]:
        """The expressions as given (what a campaign records)."""
        return tuple(c.text for c in self.clauses)

    def matches(self, state: StateDocument) -> bool:
        """Whether ``state`` satisfies every expression."""
        return all(c.matches(state, self.networks or {}) for c in self.clauses)

    def filter(self, states: Iterable[StateDocument]) -> list[StateDocument]:
        """The states that match, in their order."""
        return [s for s in states if self.matches(s)]


def brief(expressions: Sequence[str]) -> list[str]:
    """The expressions for a record of bounded size (a campaign's retained summary).

    At most :data:`BRIEF_COUNT` expressions, each cut to :data:`BRIEF_WIDTH` bytes of JSON (``...``
    marks a cut), then ``+N more`` when some were left out: a ``serial=A,B,...`` of a thousand
    serials takes no more room than a short one.
    """
    shown = [_cut(text) for text in expressions[:BRIEF_COUNT]]
    if len(expressions) > BRIEF_COUNT:
        shown.append(f"+{len(expressions) - BRIEF_COUNT} more")
    return shown


def _cut(text: str) -> str:
    if len(json.dumps(text)) <= BRIEF_WIDTH:
        return text
    text = text[:BRIEF_WIDTH]  # a character takes at least one byte of JSON
    while len(json.dumps(text + "...")) > BRIEF_WIDTH:
        text = text[:-1]
    return text + "..."


def parse_selection(
    expressions: Iterable[str], networks: Mapping[str, Sequence[str]] | None = None
) -> Selection:
    """Parse ``--select`` expressions (``networks``: the campaign's networks file, if any).

    Raises:
        SelectionError: an expression is malformed, names an unknown network, or its serial file
            cannot be read.
    """
    return Selection(tuple(parse_clause(e, networks) for e in expressions), networks)


def parse_clause(text: str, networks: Mapping[str, Sequence[str]] | None = None) -> Clause:
    """Parse one expression.

    Raises:
        SelectionError: as :func:`parse_selection`.
    """
    found = _EXPRESSION.match(text.strip())
    if found is None or found["field"] not in FIELDS:
        raise _bad(text, f"expected FIELD=VALUE with FIELD one of {', '.join(FIELDS)}")
    field, op, raw = found["field"], found["op"], found["value"]
    if op != "=" and field != "release":
        raise _bad(text, f"{field} takes '=' only ('<', '<=', '>', '>=' are for release)")
    values = _serial_file(text, raw[1:]) if field == "serial" and raw.startswith("@") else _split(raw)
    if not values:
        raise _bad(text, "no value")
    _check(text, field, values, networks)
    return Clause(text, field, op, values)


def _split(raw: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in raw.split(",") if v.strip())


def _check(
    text: str, field: str, values: tuple[str, ...], networks: Mapping[str, Sequence[str]] | None
) -> None:
    """Refuse values that could never mean what was asked."""
    if field == "release":
        for value in values:
            if not _VERSION.match(value):
                raise _bad(text, f"{value!r} is not a release (such as 8.0)")
    elif field == "key":
        for value in values:
            if value not in KEY_STATES:
                raise _bad(text, f"key is one of {', '.join(KEY_STATES)}, got {value!r}")
    elif field == "network":
        if networks is None:
            raise _bad(text, "network selection needs a networks file (--networks)")
        for value in values:
            if value not in networks:
                raise _bad(text, f"no network {value!r} in the networks file")


def _serial_file(text: str, name: str) -> tuple[str, ...]:
    try:  # bounded and non-blocking: /dev/zero or a FIFO is refused at once
        lines = read_bounded(Path(name), MAX_SERIAL_FILE).decode("utf-8").splitlines()
    except (OSError, StoreError, UnicodeDecodeError) as exc:
        raise _bad(text, f"cannot read {name}: {exc}") from None
    return tuple(line.strip() for line in lines if line.strip())


def _bad(text: str, why: str) -> SelectionError:
    return SelectionError(f"--select {text!r}: {why}")
