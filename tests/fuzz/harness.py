"""The atheris harness: ``python -m tests.fuzz.harness TARGET [libFuzzer options] [corpus folders]``.

Imports the target (and so its parser's modules, and for a parser that is mostly a library's,
python-tuf for ``release``, that library's) under atheris' coverage instrumentation and fuzzes its
``check``. An exception ``check`` lets through is a finding: the first input of each
distinct finding (exception type and the line that raised it) is saved to ``$FUZZ_FINDINGS``
with its traceback, and fuzzing goes on, so one run counts every finding. ``summary.json`` there
holds the counts. A target with a ``FORMAT`` (TOML or JSON) gets the structure-aware mutator of
:mod:`tests.fuzz.structure` beside libFuzzer's byte mutations. A hang is left to libFuzzer's
``-timeout`` (it stops the run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import atheris
import structlog

from tests.fuzz.structure import mutator

PACKAGES = ["agent", "common", "fleet", "releases", "simulator", "tests.fuzz"]
LIBRARIES = {"release": ["tuf"]}  # a target whose parser is mostly a library's: its code is instrumented too


def signature(exc: BaseException) -> str:
    """The exception's type and the innermost line of the product (or the harness) that it passed."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


class Recorder:
    """Counts the inputs that escaped ``check`` by signature and saves the first of each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts: dict[str, int] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def record(self, data: bytes, exc: BaseException) -> None:
        """Note one finding; save its input and traceback when its signature is new."""
        key = signature(exc)
        if key not in self.counts:
            name = "crash-" + hashlib.sha1(key.encode()).hexdigest()[:12]  # a file name, not security
            (self.folder / name).write_bytes(data)
            text = "".join(traceback.format_exception(exc))
            (self.folder / f"{name}.txt").write_text(f"{key}\n{data!r}\n\n{text}")
            print(f"FINDING {key}: {name}", file=sys.stderr, flush=True)
        self.counts[key] = self.counts.get(key, 0) + 1
        (self.folder / "summary.json").write_text(json.dumps(self.counts, indent=1))


def one_input(check: Callable[[bytes], None], recorder: Recorder) -> Callable[[bytes], None]:
    """libFuzzer's callback: run ``check``, recording what escapes it."""

    def test_one_input(data: bytes) -> None:
        try:
            check(data)
        except (Exception, SystemExit) as exc:  # every escape is a finding, recorded, not fatal
            recorder.record(data, exc)

    return test_one_input


def main() -> None:
    """Fuzz the target named by the first argument; the rest go to libFuzzer."""
    name, args = sys.argv[1], [sys.argv[0], *sys.argv[2:]]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))  # no log lines
    with atheris.instrument_imports(include=PACKAGES + LIBRARIES.get(name, [])):
        from tests.fuzz.targets import load

        target = load(name)
    recorder = Recorder(Path(os.environ.get("FUZZ_FINDINGS", f"fuzz-findings/{name}")))
    if hasattr(target, "FORMAT"):
        words = [token.strip(' =":') for token in target.tokens()]
        custom = mutator(target.PREFIX, target.FORMAT, [w for w in words if w])
        atheris.Setup(args, one_input(target.check, recorder), custom_mutator=custom)
    else:
        atheris.Setup(args, one_input(target.check, recorder))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
