"""Power cuts inside a scenario's upgrade or install: cut once, reboot, let the agent recover.

``power_cut = "random"`` picks one crash point among those the request actually reaches: a
rehearsal on a copy of the server directory counts the hits (:mod:`agent.crashpoints`), and the
seed picks the N-th. ``power_cut = "<point>"`` cuts at the first hit of that named point.
After the cut the power comes back: a new :class:`~agent.upgrader.Upgrader` is made on the same
directory and :meth:`~agent.upgrader.Upgrader.recover` finishes or rolls back the interrupted
step. A step that recovery rolled back ends the request there, with that step's failure as its
outcome (as ``simulator.chaos`` counts it); otherwise the request is asked again, as an
administrator would, and goes on from the recovered release.

Invariant: the cut happens at most once per request; a requested cut that the request never
reaches is reported (``cut_at`` None), never silently skipped.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent import crashpoints
from agent.clock import SimClock
from agent.results import StepResult, UpgradeResult
from agent.store import ServerDir
from agent.upgrader import Upgrader

MakeUpgrader = Callable[[ServerDir, SimClock], Upgrader]
Request = Callable[[Upgrader], Awaitable[UpgradeResult]]
AfterRecovery = Callable[[Upgrader, StepResult | None], Awaitable[UpgradeResult]]


@dataclass
class CutReport:
    """Where the power was cut (None when the request never reached the chosen point)."""

    cut_at: str | None
    chosen: str  # "random" or the point's name
    result: UpgradeResult


class _Cutter:
    """An injector raising :class:`~agent.crashpoints.PowerCut` at the ``nth`` matching hit."""

    def __init__(self, point: str | None, nth: int) -> None:
        self.point, self.nth, self.seen = point, nth, 0
        self.fired: str | None = None

    def __call__(self, name: str) -> None:
        if self.fired is not None or (self.point is not None and name != self.point):
            return
        self.seen += 1
        if self.seen == self.nth:
            self.fired = name
            raise crashpoints.PowerCut(name)


async def rehearse(server: ServerDir, now: datetime, make: MakeUpgrader, request: Request) -> list[str]:
    """Run ``request`` on a throw-away copy of the server and return the crash points it hits, in order."""
    hits: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
        copy = Path(tmp) / "server"
        shutil.copytree(server.root, copy, symlinks=True)
        with crashpoints.injecting(hits.append):
            await request(make(ServerDir(copy), SimClock(now, speed=float("inf"))))
    return hits


async def run_with_power_cut(
    server: ServerDir,
    clock: SimClock,
    make: MakeUpgrader,
    request: Request,
    *,
    point: str,
    seed: int,
    after_recovery: AfterRecovery,
) -> CutReport:
    """Run ``request`` with one power cut at ``point`` ("random" or a crash point), then recover.

    ``after_recovery`` is what the administrator asks once the server is back, given the step
    recovery finished (None when the cut left no step in the journal); a step recovery rolled
    back ends the request with that step.
    """
    if point == "random":
        hits = await rehearse(server, clock.now(), make, request)
        if not hits:
            return CutReport(None, point, await request(make(server, clock)))
        cutter = _Cutter(None, random.Random(seed).randrange(len(hits)) + 1)
    else:
        cutter = _Cutter(point, 1)
    try:
        with crashpoints.injecting(cutter):
            result = await request(make(server, clock))
    except crashpoints.PowerCut:
        rebooted = make(ServerDir(server.root), clock)  # the power is back: a new agent process
        recovered = await rebooted.recover()
        if recovered is not None and recovered.outcome != "committed":
            facts = rebooted.server.facts()
            result = UpgradeResult(facts.release, recovered.release, facts.release, [recovered])
        else:
            result = await after_recovery(rebooted, recovered)
    return CutReport(cutter.fired, point, result)
