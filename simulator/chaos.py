"""Chaos: power cuts at random crash points across a fleet of virtual servers.

``allworx-sim chaos --servers N --seed S`` builds N small virtual servers on assorted releases
(about one in seven crossing the 7.1 rebuild), upgrades each one or two steps with the power
cut at random crash points (sometimes several times per upgrade, sometimes during the recovery
itself; for 8% of servers a storm: random cuts at a high rate, or the same side effect failing on
every start, ending in the boot counter's fallback or the crash-loop breaker), restarts the agent
after every cut, lets it finish and audits the server.

The audit (also used by the power-cut tests) defines the outcomes:

- *bricked*: the bootloader's active slot does not hold a release whose image verifies against
  its signed release target and whose database passes the boot check in its schema, or, once the agent
  finished, a trial slot or a journal is left over (the server cannot reach a committed release
  by itself);
- *records lost*: the active database's logical digest (counts and checksums of every record,
  schema-independent) differs from the one taken before the upgrade;
- *keys lost*: the content checksum of the installed keys differs.

The bricked and records checks also run at every cut, on the server exactly as the cut left it.

Invariants: every server's run depends only on ``(seed, index)`` (not on the worker count); a
server that passes its audit is deleted, one that fails is kept for inspection.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import structlog

from agent import crashpoints, database
from agent.clock import SimClock
from agent.crashpoints import PowerCut
from agent.database import RecordDigest
from agent.limits import Limits
from agent.manifest import Manifest
from agent.store import ServerDir
from agent.upgrader import Upgrader
from releases.catalog import Catalog, default_catalog
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.publish import default_repository, published_manifests
from simulator.server import ServerSpec, create_server, serial_for

CHAOS_LIMITS = Limits(chunk_size=64 * 1024, bandwidth=None)  # several chunks per image: mid-download cuts
LEGACY_FROM = ("6.9", "7.0", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "7.7", "8.0", "8.1", "8.2")
CONNECT_FROM = ("8.0", "8.1", "8.2", "8.3", "9.0")
STORM_SHARE = 0.08  # servers whose upgrade meets a storm of cuts (boot-counter fallback, crash loop)
LOOP_POINTS = ("stage.promote", "db.export", "db.rebuild", "db.verified", "slot.write", "slot.written",
               "boot.switch", "boot.attempt", "boot.trial", "commit")  # fmt: skip


# --- the audit ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Snapshot:
    """What must survive an upgrade: the committed release, every record, every key."""

    release: str
    records: RecordDigest
    keys: str


def snapshot(server: ServerDir) -> Snapshot:
    """Take the content checksums of ``server``'s committed database and installed keys."""
    return Snapshot(
        server.committed().version, database.digest(server.db_path(server.active_slot())), server.key_digest()
    )


class Auditor:
    """Checks servers against their snapshots; reads what each build is from the vendor's repository once."""

    def __init__(self, repo: Path, root_public: bytes, today: datetime) -> None:
        self.repo, self.root_public, self.today = repo, root_public, today.date()
        self._manifests: dict[str, Manifest] = {}

    def _manifest(self, build: str) -> Manifest:
        if not self._manifests:
            self._manifests = published_manifests(self.repo)  # the vendor's own repository
        return self._manifests[build]

    def unbootable(self, server: ServerDir, slot: str) -> str | None:
        """Why ``slot`` of ``server`` cannot boot, or None when it can (image verifies, db opens)."""
        info = server.slot_info(slot)
        if info is None:
            return f"slot {slot} holds no release"
        image = server.slot_dir(slot) / "image.img"
        try:
            actual = hashlib.sha256(image.read_bytes()).hexdigest()
        except OSError:
            return f"slot {slot} has no image"
        if actual != self._manifest(info.build).sha256:
            return f"slot {slot} image does not match {info.build}"
        if not database.check_opens(server.db_path(slot), info.db_schema):
            return f"slot {slot} database does not open in schema {info.db_schema}"
        return None

    def problems(self, server: ServerDir, before: Snapshot, *, finished: bool) -> dict[str, str]:
        """The audit: ``{"bricked"|"records_lost"|"keys_lost": why}``, empty when all is well."""
        found: dict[str, str] = {}
        try:
            env = server.bootloader.env()
        except Exception as exc:  # reason: any failure to read the bootloader is a brick
            return {"bricked": f"bootloader environment unreadable: {exc}"}
        why = self.unbootable(server, env.active)
        if why is None and finished and (env.trial is not None or server.journal.load() is not None):
            why = "a trial slot or a journal is left after the agent finished"
        if why is not None:
            return {"bricked": why}
        records = database.digest(server.db_path(env.active))
        if records.counts != before.records.counts or records.checksum != before.records.checksum:
            found["records_lost"] = f"database digest differs: {before.records.counts} -> {records.counts}"
        if server.key_digest() != before.keys:
            found["keys_lost"] = "installed keys differ"
        return found


# --- one server -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerPlan:
    """What chaos does to server ``index``: derived from ``(seed, index)`` alone."""

    index: int
    model: str
    release: str
    target: str
    users: int
    budget: int  # power cuts available
    rate: float  # chance of a cut at each crash point reached
    only: str | None  # a crash loop: the power fails at this point on every start


def plan_server(seed: int, index: int, catalog: Catalog) -> ServerPlan:
    """Choose the model, the releases, the cuts of server ``index``."""
    rng = random.Random(f"chaos:{seed}:{index}")
    connect = rng.random() < 0.2
    model = rng.choice(("530", "731")) if connect else rng.choice(("6x", "24x", "6x12"))
    release = rng.choice(CONNECT_FROM if connect else LEGACY_FROM)
    chain = [r.version for r in catalog.releases if r.supports(model)]
    here = chain.index(release)
    target = chain[min(here + rng.choice((1, 1, 1, 2)), len(chain) - 1)]
    storm, users = rng.random() < STORM_SHARE, rng.randint(2, 8)
    if storm and rng.random() < 0.5:  # the same side effect fails on every start: a crash loop
        return ServerPlan(index, model, release, target, users, 40, 1.0, rng.choice(LOOP_POINTS))
    budget = rng.randint(20, 40) if storm else rng.choice((0, 1, 1, 1, 2, 2, 3, 4))
    rate = rng.uniform(0.3, 0.6) if storm else rng.uniform(0.03, 0.12)
    return ServerPlan(index, model, release, target, users, budget, rate, None)


class RandomCuts:
    """An injector cutting the power at random crash points, at most ``budget`` times."""

    def __init__(self, rng: random.Random, budget: int, rate: float, only: str | None = None) -> None:
        self.rng, self.budget, self.rate, self.only = rng, budget, rate, only
        self.cuts: list[str] = []
        self.recovering = False
        self.during_recovery = 0

    def __call__(self, point: str) -> None:
        if self.budget > 0 and point == (self.only or point) and self.rng.random() < self.rate:
            self.budget -= 1
            self.cuts.append(point)
            self.during_recovery += self.recovering
            raise PowerCut(point)


@dataclass
class Outcome:
    """How one server's chaos ended (the JSON sent back from a worker)."""

    index: int
    release: str
    target: str
    result: str = "error"  # committed | rolled_back | refused | error
    reason: str = ""
    cuts: list[str] = field(default_factory=list)
    cuts_during_recovery: int = 0
    problems: dict[str, str] = field(default_factory=dict)
    kept: str = ""  # the server's folder, kept when its audit failed


class Worker:
    """Runs servers one after the other in one process (one keyring, catalogue and auditor)."""

    def __init__(self, base: Path, seed: int, now: datetime) -> None:
        self.base, self.seed, self.now = base, seed, now
        self.keyring = VendorKeyring.load_or_create()
        self.catalog = default_catalog()
        self.auditor = Auditor(default_repository(self.keyring), self.keyring.root_public, now)

    def run(self, index: int) -> Outcome:
        """Build server ``index``, upgrade it through its cuts, audit it, clean up."""
        plan = plan_server(self.seed, index, self.catalog)
        root = self.base / f"server-{index:06d}"
        outcome = Outcome(index, plan.release, plan.target)
        try:
            asyncio.run(self._chaos(plan, root, outcome))
        except Exception as exc:  # reason: a bug must be reported with its server, not end the run
            outcome.result, outcome.reason = "error", f"{type(exc).__name__}: {exc}"
            outcome.problems["error"] = traceback.format_exc(limit=6)
        if outcome.problems:
            outcome.kept = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)
        return outcome

    def _build(self, plan: ServerPlan, root: Path) -> ServerDir:
        serial = serial_for(f"chaos:{self.seed}:{plan.index}")
        spec = ServerSpec(
            model=plan.model, release=plan.release, serial=serial, users=plan.users, call_log_rows=50
        )
        server = create_server(root, spec, keyring=self.keyring, catalog=self.catalog, seed=plan.index)
        key = issue_key(self.keyring, serial=server.identity().serial, kind="maintenance",
                        plan="anytime-1y", start=self.now.date())  # fmt: skip
        server.install_key(key, self.now.date())
        return server

    async def _chaos(self, plan: ServerPlan, root: Path, outcome: Outcome) -> None:
        server = self._build(plan, root)
        before = snapshot(server)
        rng = random.Random(f"cuts:{self.seed}:{plan.index}")
        cuts = RandomCuts(rng, plan.budget, plan.rate, plan.only)
        clock = SimClock(self.now, speed=float("inf"))
        while True:
            upgrader = Upgrader(ServerDir(root), self.catalog, clock, limits=CHAOS_LIMITS)
            try:
                with crashpoints.injecting(cuts):
                    await self._attempt(upgrader, cuts, plan.target, outcome)
                break
            except PowerCut:  # the agent's memory is gone; check the server as the cut left it
                outcome.problems.update(self.auditor.problems(ServerDir(root), before, finished=False))
                cuts.recovering = True
        outcome.cuts, outcome.cuts_during_recovery = cuts.cuts, cuts.during_recovery
        if outcome.result == "committed" and ServerDir(root).committed().version != plan.target:
            outcome.problems["error"] = f"reported committed but not on {plan.target}"
        outcome.problems.update(self.auditor.problems(ServerDir(root), before, finished=True))

    @staticmethod
    async def _attempt(upgrader: Upgrader, cuts: RandomCuts, target: str, outcome: Outcome) -> None:
        """One power-on: recover if a cut came before, then (unless that rolled back) upgrade."""
        if cuts.recovering:
            step = await upgrader.recover()
            cuts.recovering = False
            if step is not None and step.outcome != "committed":  # the step ended rolled back
                outcome.result = "rolled_back"
                outcome.reason = step.refusal.reason.value if step.refusal else ""
                return
        result = await upgrader.upgrade(target)
        last = result.steps[-1] if result.steps else None
        outcome.result = {"succeeded": "committed", "rejected": "refused"}.get(result.outcome, "rolled_back")
        outcome.reason = last.refusal.reason.value if last and last.refusal else ""


# --- the fleet ----------------------------------------------------------------------------------------
_worker: Worker | None = None


def quiet_logs() -> None:
    """Drop the agent's logs (thousands of expected warnings: rollbacks, crash loops)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def _init_worker(base: str, seed: int, now: str) -> None:
    global _worker  # noqa: PLW0603  # reason: one Worker per pool process, built by the initializer
    quiet_logs()
    _worker = Worker(Path(base), seed, datetime.fromisoformat(now))


def _run_index(index: int) -> Outcome:
    if _worker is None:  # misuse: called outside a pool built with _init_worker
        raise RuntimeError("pool initializer not run")
    return _worker.run(index)


@dataclass
class Tally:
    """The running totals of a chaos run."""

    servers: int = 0
    cuts: int = 0
    bricked: int = 0
    records_lost: int = 0
    keys_lost: int = 0
    committed: int = 0
    rolled_back: int = 0
    refused: int = 0
    errors: int = 0
    crossed_7_1: int = 0
    cuts_during_recovery: int = 0
    max_cuts_one_server: int = 0
    by_point: Counter[str] = field(default_factory=Counter)
    rollback_reasons: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        """Count one server's outcome."""
        self.servers += 1
        self.cuts += len(outcome.cuts)
        self.by_point.update(outcome.cuts)
        self.cuts_during_recovery += outcome.cuts_during_recovery
        self.max_cuts_one_server = max(self.max_cuts_one_server, len(outcome.cuts))
        self.crossed_7_1 += outcome.release in ("6.9", "7.0") and outcome.target not in ("6.9", "7.0")
        for kind in ("bricked", "records_lost", "keys_lost"):
            setattr(self, kind, getattr(self, kind) + (kind in outcome.problems))
        self.errors += "error" in outcome.problems
        if outcome.result in ("committed", "rolled_back", "refused"):
            setattr(self, outcome.result, getattr(self, outcome.result) + 1)
        if outcome.result == "rolled_back":
            self.rollback_reasons[outcome.reason or "?"] += 1
        if outcome.problems and len(self.failures) < 20:
            self.failures.append({"server": outcome.index, "dir": outcome.kept, **outcome.problems})

    def as_dict(self, seconds: float, seed: int, workers: int) -> dict[str, Any]:
        """The report: the audit's counts first, then the details."""
        return {
            "servers": self.servers, "cuts": self.cuts, "bricked": self.bricked,
            "records_lost": self.records_lost, "keys_lost": self.keys_lost, "committed": self.committed,
            "rolled_back": self.rolled_back, "refused": self.refused, "errors": self.errors,
            "seconds": round(seconds, 2), "seed": seed, "workers": workers,
            "crossed_7_1": self.crossed_7_1, "cuts_during_recovery": self.cuts_during_recovery,
            "max_cuts_one_server": self.max_cuts_one_server,
            "cuts_by_point": dict(sorted(self.by_point.items())),
            "rollback_reasons": dict(sorted(self.rollback_reasons.items())), "failures": self.failures,
        }  # fmt: skip


def _ram_disk() -> str | None:
    """``/dev/shm`` when there is one: a fleet's worth of fsyncs would otherwise dominate the run."""
    shm = Path("/dev/shm")  # noqa: S108  # reason: a private mkdtemp inside it, not a fixed file name
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _outcomes(servers: int, workers: int, base: Path, seed: int, now: datetime) -> Iterator[Outcome]:
    if workers <= 1:
        worker = Worker(base, seed, now)
        yield from (worker.run(index) for index in range(servers))
        return
    context = multiprocessing.get_context("spawn")  # a clean interpreter per worker (no forked threads)
    with context.Pool(workers, _init_worker, (str(base), seed, now.isoformat())) as pool:
        yield from pool.imap_unordered(_run_index, range(servers), chunksize=8)


def run_chaos(
    servers: int,
    seed: int,
    *,
    workers: int = 1,
    workdir: Path | None = None,
    now: datetime | None = None,
    on_outcome: Callable[[Outcome, Tally], None] | None = None,
) -> dict[str, Any]:
    """Run chaos over ``servers`` virtual servers and return the report.

    Args:
        servers: how many servers to build and upgrade.
        seed: the run's seed (the same seed gives the same servers, cuts and counts).
        workers: processes to spread servers over (1 runs in this process).
        workdir: where servers are built (default: a temporary folder, on ``/dev/shm`` when there
            is one, removed afterwards unless a server failed its audit).
        now: the simulated date of the upgrades (default 2024-01-01: every release is out).
        on_outcome: called after each server (progress display).
    """
    moment = now or datetime(2024, 1, 1, tzinfo=UTC)
    default_repository(VendorKeyring.load_or_create())  # publish once, before workers race to
    base = workdir or Path(tempfile.mkdtemp(prefix="allworx-chaos-", dir=_ram_disk()))
    base.mkdir(parents=True, exist_ok=True)
    started, tally = time.monotonic(), Tally()
    try:
        for outcome in _outcomes(servers, workers, base, seed, moment):
            tally.add(outcome)
            if on_outcome is not None:
                on_outcome(outcome, tally)
    finally:
        if workdir is None and not tally.failures:
            shutil.rmtree(base, ignore_errors=True)
    return tally.as_dict(time.monotonic() - started, seed, workers)


# --- progress ----------------------------------------------------------------------------------------
def plain_progress(total: int, every: float = 5.0) -> Callable[[Outcome, Tally], None]:
    """Progress as a plain line on stderr at most every ``every`` seconds (not a terminal)."""
    last = [time.monotonic()]

    def show(_outcome: Outcome, tally: Tally) -> None:
        if time.monotonic() - last[0] >= every or tally.servers == total:
            last[0] = time.monotonic()
            line = (f"chaos: {tally.servers}/{total} servers, {tally.cuts} cuts, bricked {tally.bricked}, "
                    f"records_lost {tally.records_lost}, keys_lost {tally.keys_lost}")  # fmt: skip
            print(line, file=sys.stderr)

    return show


def rich_progress(total: int) -> tuple[Callable[[Outcome, Tally], None], Callable[[], None]]:
    """A rich progress bar on stderr (a terminal): returns ``(on_outcome, stop)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("chaos"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[status]}"), console=Console(stderr=True))  # fmt: skip
    task = bar.add_task("chaos", total=total, status="")
    bar.start()

    def show(_outcome: Outcome, tally: Tally) -> None:
        status = (f"cuts {tally.cuts}  bricked {tally.bricked}  records_lost {tally.records_lost}  "
                  f"keys_lost {tally.keys_lost}")  # fmt: skip
        bar.update(task, completed=tally.servers, status=status)

    return show, bar.stop


@click.command("chaos")
@click.option("--servers", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="Virtual servers to build and upgrade.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, help="The run's seed.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes (default: one per CPU).")  # fmt: skip
@click.option("--dir", "workdir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where to build servers (default: a temp folder; failing servers are kept).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document on stdout.")
def chaos_command(servers: int, seed: int, workers: int | None, workdir: Path | None, as_json: bool) -> None:
    """Upgrade N virtual servers with power cuts at random crash points; report bricks and losses."""
    count = workers or os.cpu_count() or 1
    saved = structlog.get_config()
    quiet_logs()
    stop: Callable[[], None] = lambda: None  # noqa: E731  # reason: a no-op default
    if sys.stderr.isatty():
        show, stop = rich_progress(servers)
    else:
        show = plain_progress(servers)
    try:
        report = run_chaos(servers, seed, workers=count, workdir=workdir, on_outcome=show)
    finally:
        stop()
        structlog.configure(**saved)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{report['servers']} servers, {report['cuts']} power cuts in {report['seconds']} s: "
                   f"bricked {report['bricked']}, records_lost {report['records_lost']}, "
                   f"keys_lost {report['keys_lost']}, committed {report['committed']}, "
                   f"rolled_back {report['rolled_back']}, errors {report['errors']}")  # fmt: skip
    failed = report["bricked"] or report["records_lost"] or report["keys_lost"] or report["errors"]
    sys.exit(1 if failed else 0)
