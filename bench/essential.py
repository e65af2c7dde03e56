"""The essential work of an upgrade step, measured on a sample of the fleet's own servers and steps.

The sample is stratified by the release each server starts from (which fixes the steps it walks):
each release gets a share of the sample in proportion to its servers in the fleet, and each sampled
server stands for its release's servers (its weight), so the figure is the essential work per step
of the fleet's own mix of steps (an even spread over the fleet's indexes can draw, say, a third of
its servers from one release that holds a fifth of the fleet, and one-step servers cost more a
step than eight-step ones). For each sampled server (copied before the campaign: its active
database and its facts) and each step of its plan to the campaign's target, the CPU time of
exactly what a step must do, called directly with the disk and verifier the fleet hands its
agents (``simulator/fleet/disk.py``, ``simulator/fleet/verifier.py``): the database work on the
engine (the migrated copy with its schema steps, or the 7.1 rebuild, each verified), the image's
SHA-256 check and the boot check (``quick_check`` and schema). No agent, journal, event or MQTT is
involved.

The sample is walked twice and the second walk is timed, on fresh copies: a host's verifier has
seen every template's content long before most of its servers run a step, as the first walk's
verifier has. :func:`measure_apart` does that in several fresh processes, one after the other, and
takes the median: within one process the timed walks agree to about 2%, while the same sample
measured in different processes differs by up to about 12% (where the interpreter's memory
happens to lie), which one process alone would put into the overhead ratio. Each process runs its
garbage collector as a fleet host does (:func:`simulator.fleet.host.collector_for_hosting`), so
both sides of the ratio collect alike.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent import database
from agent.fetcher import require_verified
from agent.policy import Verdict
from releases.catalog import Catalog
from simulator.publish import image_path


@dataclass(frozen=True, slots=True)
class SampleStep:
    """One step of a sampled server: what the engine builds, and the image it checks."""

    build: str
    rebuilds_database: bool
    db_schema: int
    image: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SampleServer:
    """A sampled server: its database copied before the campaign, its steps, and how many of the
    fleet's servers it stands for (``weight``)."""

    serial: str
    database: Path
    steps: tuple[SampleStep, ...]
    weight: float = 1.0


def sample_plans(kinds: Sequence[str], size: int) -> list[tuple[int, float]]:
    """A sample of ``size`` servers of a fleet whose server ``i`` starts from release ``kinds[i]``:
    (index, weight) pairs, stratified by release.

    Each release gets a share of ``size`` in proportion to its servers (the largest remainders
    round up; every release at least one server, so a sample smaller than the number of releases
    takes one of each), its servers taken evenly spread over its indexes; a sampled server's weight
    is the number of its release's servers it stands for. A fleet no larger than ``size`` is taken
    whole, each server standing for itself; a ``size`` of 0 takes no server.
    """
    if size <= 0:
        return []
    if len(kinds) <= size:
        return [(index, 1.0) for index in range(len(kinds))]
    members: dict[str, list[int]] = defaultdict(list)
    for index, kind in enumerate(kinds):
        members[kind].append(index)
    order = sorted(members)
    shares = {kind: len(members[kind]) * size / len(kinds) for kind in order}
    counts = {kind: max(1, int(shares[kind])) for kind in order}
    by_remainder = sorted(order, key=lambda kind: (counts[kind] - shares[kind], kind))
    for kind in by_remainder[: max(0, size - sum(counts.values()))]:
        counts[kind] += 1
    picked = []
    for kind in order:
        group, count = members[kind], min(counts[kind], len(members[kind]))
        picked += [(group[i * len(group) // count], len(group) / count) for i in range(count)]
    return sorted(picked)


def steps_of(catalog: Catalog, server: Path, target: str, now: datetime) -> tuple[SampleStep, ...]:
    """The steps the server at ``server`` walks to ``target``, each as allowed by policy, until a refusal."""
    from agent.planner import candidates
    from agent.policy import judge_step
    from agent.store import ServerDir

    store = ServerDir(server)
    facts = store.facts()
    walk = candidates(catalog, facts, target)
    if isinstance(walk, Verdict):
        return ()
    checks = store.key_checks(now)
    repo = Path(store.identity().repo)
    steps = []
    for candidate in walk:
        verdict = judge_step(catalog, facts, checks, candidate, now)
        if verdict.refusal is not None:
            break
        image = image_path(repo, verdict.build)
        steps.append(
            SampleStep(verdict.build, verdict.rebuilds_database, verdict.db_schema, image, *_digest(image))
        )
        facts = dataclasses.replace(facts, release=verdict.release, build=verdict.build)
    return tuple(steps)


def _digest(image: Path) -> tuple[int, str]:
    import hashlib

    data = image.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def take_sample(
    catalog: Catalog, servers: list[tuple[Path, float]], target: str, now: datetime, workdir: Path
) -> list[SampleServer]:
    """Copy each server's active database under ``workdir`` and plan its steps (before the campaign);
    ``servers``: each server's folder and weight (:func:`sample_plans`)."""
    from agent.store import ServerDir

    workdir.mkdir(parents=True, exist_ok=True)
    sample = []
    for path, weight in servers:
        store = ServerDir(path)
        serial = store.identity().serial
        copy = workdir / f"{serial}.db"
        shutil.copyfile(store.db_path(store.active_slot()), copy)
        sample.append(SampleServer(serial, copy, steps_of(catalog, path, target, now), weight))
    return sample


def per_step(servers: Sequence[tuple[float, int, float]]) -> float:
    """The CPU seconds a step over the fleet from each sampled server's (CPU seconds of its steps,
    steps, weight): every server counted as many times as its weight says (0.0 for no step)."""
    steps = sum(count * weight for _, count, weight in servers)
    return sum(cpu * weight for cpu, _, weight in servers) / steps if steps else 0.0


def _walk(sample: list[SampleServer], workdir: Path, disk: object, verifier: object) -> tuple[float, int]:
    """Run every sampled step once; return the CPU seconds of the steps' own work a step
    (:func:`per_step`) and the steps run."""
    servers = []
    for server in sample:
        folder = workdir / server.serial
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        slots = [folder / "a.db", folder / "b.db"]
        shutil.copyfile(server.database, slots[0])
        cpu = 0.0
        for index, step in enumerate(server.steps):
            src, dst = slots[index % 2], slots[(index + 1) % 2]
            began = time.process_time()
            make = database.rebuild if step.rebuilds_database else database.migrate_copy
            make(src, dst, step.db_schema, disk=disk, verifier=verifier)  # type: ignore[arg-type]  # reason: a Disk and a DatabaseVerifier, built by the caller
            require_verified(step.image, step.size, step.sha256)
            if not database.check_opens(dst, step.db_schema):
                raise RuntimeError(f"{server.serial}: {step.build}'s database fails its boot check")
            cpu += time.process_time() - began
        servers.append((cpu, len(server.steps), server.weight))
        shutil.rmtree(folder, ignore_errors=True)
    return per_step(servers), sum(count for _, count, _ in servers)


def measure(sample: list[SampleServer], workdir: Path) -> tuple[float, int]:
    """The CPU seconds per step of the essential work over ``sample`` (its servers weighted), and the
    steps timed.

    The disk and verifier are those a fleet host hands its agents (one verifier for the sample,
    as one per host process).

    Raises:
        RuntimeError: a step's database fails its boot check.
        DatabaseError: the engine failed (a broken sample).
    """
    from simulator.fleet.disk import FastDisk
    from simulator.fleet.verifier import RememberingVerifier

    disk, verifier = FastDisk(), RememberingVerifier()
    _walk(sample, workdir / "warm", disk, verifier)
    return _walk(sample, workdir / "timed", disk, verifier)


def measure_apart(sample: list[SampleServer], workdir: Path, runs: int = 3) -> tuple[float, int, list[float]]:
    """:func:`measure` in ``runs`` fresh processes, one at a time (each its own folder under
    ``workdir``): the median of their CPU seconds per step, the steps timed in each, and each
    process's figure.

    Raises:
        RuntimeError: a step's database fails its boot check.
        DatabaseError: the engine failed (a broken sample).
        BrokenProcessPool: a measuring process died.
    """
    figures, count = [], 0
    spawn = multiprocessing.get_context("spawn")
    for run in range(runs):
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            figure, count = pool.submit(_measure_as_hosted, sample, workdir / f"run{run}").result()
        figures.append(figure)
    return statistics.median(figures), count, figures


def _measure_as_hosted(sample: list[SampleServer], workdir: Path) -> tuple[float, int]:
    """:func:`measure` with the garbage collector as a fleet host runs its agents."""
    from simulator.fleet.host import collector_for_hosting

    with collector_for_hosting():
        return measure(sample, workdir)


def essential_figures(sample: list[SampleServer], workdir: Path) -> dict[str, Any]:
    """The benchmark's figures of the sample's essential work (:func:`measure_apart`, then
    ``workdir`` removed): ``essential_work_ms`` (the median), ``essential_work_ms_each`` (each
    process's) and ``essential_steps_sampled``.

    Raises:
        RuntimeError: a step's database fails its boot check.
        DatabaseError: the engine failed (a broken sample).
    """
    try:
        median, timed, each = measure_apart(sample, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "essential_work_ms": median * 1000,
        "essential_work_ms_each": [round(figure * 1000, 3) for figure in each],
        "essential_steps_sampled": timed,
    }
