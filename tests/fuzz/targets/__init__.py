"""One module per parser: ``seeds() -> list[bytes]`` and ``check(data: bytes) -> None``; optionally
``tokens()`` (words of the format for libFuzzer's dictionary), ``PREFIX`` (leading bytes that pick a
file or a parser, left alone by structured mutations) and ``FORMAT`` ("toml" or "json").

``check`` catches what the parser documents raising; anything else escapes and is a finding.
Modules import their parser lazily-enough for atheris: the harness imports a target inside
``atheris.instrument_imports()``, so the parser's modules are instrumented.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TARGETS = (
    "key", "revocation", "trust", "command", "wire", "scenario", "fleet", "campaign", "config", "release",
)  # fmt: skip


def load(name: str) -> ModuleType:
    """The target module called ``name``.

    Raises:
        KeyError: no such target.
    """
    if name not in TARGETS:
        raise KeyError(name)
    return importlib.import_module(f"tests.fuzz.targets.{name}")
