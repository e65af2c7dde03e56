"""Write ``docs/state-machine.md`` from the one transition table: ``python -m agent.diagram``."""

from __future__ import annotations

import sys
from pathlib import Path

from agent.machine import TRANSITIONS, Event, mermaid

DOC = Path(__file__).resolve().parent.parent / "docs" / "state-machine.md"


def render() -> str:
    """The whole document: the diagram and the crash-recovery map, both from the table."""
    recovery = "\n".join(
        f"| `{state.value}` | `{target.value}` |"
        for (state, event), target in TRANSITIONS.items()
        if event is Event.RESTART
    )
    return f"""# The upgrade state machine

Generated from `agent/machine.py` (`TRANSITIONS`) by `python -m agent.diagram`; a test fails
when this file and the table disagree. Solid edges are the upgrade's events; edges labelled
`restart (power cut)` are where a restarted agent resumes. Every state is persisted atomically
*before* its side effect. Anything unknown in the journal rolls back.

```mermaid
{mermaid()}
```

## Crash-recovery map (state persisted -> where a restarted agent resumes)

| persisted | resumes in |
|---|---|
{recovery}
| anything else | `rolling_back` |

`trial_boot` resumes in itself: each power-up counts a boot attempt in the bootloader's
environment before booting the trial slot; after too many the bootloader falls back to the old
slot by itself and the step rolls back. More than 28 persisted steps in one upgrade (Mender's
limit) end the upgrade rolled back with `CRASH_LOOP`.
"""


def write_or_check(doc: Path, text: str) -> int:
    """Write ``text`` to ``doc``; with ``--check`` on the command line only compare, 1 on a difference."""
    if "--check" in sys.argv:
        return 0 if doc.read_text() == text else 1
    doc.write_text(text)
    return 0


def main() -> int:
    """Write the document; with ``--check`` only compare and return 1 on a difference."""
    return write_or_check(DOC, render())


if __name__ == "__main__":
    raise SystemExit(main())
