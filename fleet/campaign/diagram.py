"""Write ``docs/campaign-machine.md`` from the campaign's two tables: ``python -m fleet.campaign.diagram``."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from agent.diagram import write_or_check
from fleet.campaign.machine import CAMPAIGN_TRANSITIONS, MEMBER_TRANSITIONS, OUTCOMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "campaign-machine.md"


def mermaid(
    edges: Iterable[tuple[tuple[StrEnum, StrEnum], StrEnum]], start: str, ends: tuple[str, ...]
) -> str:
    """Render one transition table as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {start}"]
    lines += [f"    {state.value} --> {target.value}: {event.value}" for (state, event), target in edges]
    lines += [f"    {end} --> [*]" for end in ends]
    return "\n".join(lines)


def render() -> str:
    """The whole document: both diagrams, from the tables."""
    campaign = mermaid(CAMPAIGN_TRANSITIONS.items(), "running", ("cancelled", "completed"))
    member = mermaid(MEMBER_TRANSITIONS.items(), "pending", tuple(o.value for o in OUTCOMES))
    return f"""# The campaign's state machines

Generated from `fleet/campaign/machine.py` (`CAMPAIGN_TRANSITIONS`, `MEMBER_TRANSITIONS`) by
`python -m fleet.campaign.diagram`; a test fails when this file and the tables disagree. Any
other (state, event) pair raises `TransitionError`. The state names are the strings of the
retained campaign summary (`allworx/campaigns/{{id}}/status`) and member documents
(`allworx/campaigns/{{id}}/servers/{{serial}}`).

## The campaign

A campaign starts `running`; a decision before its window opens makes it `scheduled`. It is
paused by the operator, by the abort rule or at a phase gate (`paused_reason`).

```mermaid
{campaign}
```

## One server of the campaign

`absent`, `up_to_date` and a `rejected` plan are decided when the campaign is created; `closed`
is a cancel or the window's end before the server's turn. `offline` after an unanswered upgrade
command is the one outcome a later result replaces.

```mermaid
{member}
```
"""


def main() -> int:
    """Write the document; with ``--check`` only compare and return 1 on a difference."""
    return write_or_check(DOC, render())


if __name__ == "__main__":
    raise SystemExit(main())
