"""A structure-aware mutator for atheris: TOML and JSON inputs are mutated as documents, not bytes.

Byte mutations of a TOML or JSON file mostly break its syntax, so the parser's checks behind the
syntax are rarely reached. Half of the time this mutator reads the input (after the target's
selector bytes) as a document, changes one node (a value replaced by an edge value or a word of
the format, a key dropped or renamed, a list item repeated, a string's bytes mutated by libFuzzer)
and writes it back; otherwise, or when the input does not read, libFuzzer mutates the bytes.
"""

from __future__ import annotations

import json
import math
import random
import tomllib
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any

EDGES: list[Any] = [None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 0.0, -0.0, 1e308,
                    math.inf, -math.inf, math.nan, "", " ", [], {}, [[]], {"": {}}]  # fmt: skip
TOML_EDGES: list[Any] = [date(1, 1, 1), date(9999, 12, 31), datetime(9999, 12, 31, 23, 59, 59), time(0, 0)]
Mutate = Callable[[bytes, int], bytes]


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes, DEL escaped)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """``value`` as an inline TOML value (tables inline, so any nesting fits on one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return toml_string(str(value))  # None and the like: TOML has no null


def dump_toml(document: dict[str, Any]) -> bytes:
    """A TOML document of ``document``'s top-level keys."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in document.items()).encode()


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``value`` (keys and indexes), the root's ``()`` first."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, (*path, i))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def mutate_tree(document: Any, rng: random.Random, words: list[str], mutate: Mutate, toml: bool) -> Any:
    """``document`` with one node changed (the root itself when it has no other)."""
    paths = _nodes(document)
    path = rng.choice(paths[1:] or paths)
    if not path:
        return rng.choice(EDGES)
    parent, last = _get(document, path[:-1]), path[-1]
    how = rng.randrange(6)
    if how == 0:
        parent[last] = rng.choice(EDGES + (TOML_EDGES if toml else []))
    elif how == 1:
        parent[last] = rng.choice(words) if words else ""
    elif how == 2 and isinstance(parent[last], str):
        raw = parent[last].encode()
        parent[last] = mutate(raw, len(raw) + 64).decode("utf-8", "ignore")
    elif how == 3:
        del parent[last]
    elif how == 4 and isinstance(parent, dict) and words:
        parent[rng.choice(words)] = parent.pop(last)
    elif isinstance(parent, list):
        parent.insert(last, parent[last])
    else:
        parent[last] = [parent[last]]
    return document


def mutator(prefix: int, kind: str, words: list[str]) -> Callable[[bytes, int, int], bytes]:
    """libFuzzer's custom mutator for inputs of ``kind`` ("toml" or "json") after ``prefix`` bytes."""
    import atheris

    def custom(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        head, body = data[:prefix], data[prefix:]
        try:
            text = body.decode("utf-8")
            document = tomllib.loads(text) if kind == "toml" else json.loads(text)
        except (ValueError, RecursionError):
            return bytes(atheris.Mutate(data, max_size))
        changed = mutate_tree(document, rng, words, atheris.Mutate, kind == "toml")
        if kind == "toml":
            out = dump_toml(changed) if isinstance(changed, dict) else toml_value(changed).encode()
        else:
            out = json.dumps(changed).encode()
        return (head + out)[:max_size]

    return custom
