"""Building (or reusing) a fleet's server directories, fast and in parallel.

Layout of a fleet folder::

    fleet.json                 the description's fingerprint and every server (ServerPlan)
    templates/<model>-<rel>/   one server built the slow way per (model, release): its database
    servers/<index>-<serial>/  each server: a copy of its template with its own identity and keys
    bad-repo/                  the release repository with corrupted images (for ``failing`` servers)

A server is a copy of its template (same PBX data, SIMULATED), then its own identity (serial, MAC,
ship date, site, repository), its own ship key (SWM-4) and the key of its mix (an anytime key
valid at the fleet's date, an expired one, or none). Copies are made in worker processes.

Invariants: a server is built in a temporary sibling folder and renamed into place (all or
nothing); a server is reused only while it is *pristine* (on its described release, no journal,
no upgrade result), otherwise it is rebuilt, so every run starts from the described fleet. A
server's own files are written with the simulation's :class:`~simulator.fleet.disk.FastDisk` (no
flush): after a crash of the machine, rebuild the fleet (docs/power-cuts.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from agent.fileio import read_json, write_json
from agent.releasetrust import PINNED_ROOT
from agent.store import ServerDir
from common.errors import StoreError
from common.reasons import Reason
from releases.catalog import default_catalog
from simulator.fleet.disk import FastDisk
from simulator.fleet.spec import FleetSpec, ServerPlan, expand
from simulator.issuer import issue_key, ship_key
from simulator.keyring import VendorKeyring
from simulator.portal import damage
from simulator.publish import default_repository
from simulator.server import ServerSpec, create_server, mac_for, serial_for

MANIFEST = "fleet.json"
LOCK = ".in-use"  # held (flock) by the run that builds and hosts the fleet
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Fleet:
    """A built fleet."""

    root: Path
    spec: FleetSpec
    plans: list[ServerPlan]
    built: int  # servers built this time (the rest were reused)

    def server_dir(self, plan: ServerPlan) -> Path:
        """The folder of one server."""
        return self.root / "servers" / plan.dirname


@contextlib.contextmanager
def in_use(root: Path) -> Iterator[None]:
    """Hold ``root`` for this run: a second run on the same folder is refused, not let loose.

    A second run would rebuild the servers under the first one's running agents (every run
    starts from the described fleet). The hold is an ``flock`` on ``root/.in-use``, so a run that
    dies releases it with its process.

    Raises:
        StoreError: another live run holds the folder (reason FLEET_IN_USE), or it cannot be made.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = (root / LOCK).open("a+")
    except OSError as exc:
        raise StoreError(f"cannot use {root} for a fleet: {exc.strerror}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StoreError(
                f"{root} is in use by a running fleet ({holder}); give this run its own folder",
                reason=Reason.FLEET_IN_USE,
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


def template_dir(root: Path, model: str, release: str) -> Path:
    """Where the template of (model, release) lives."""
    return root / "templates" / f"{model}-{release}"


def _make_template(root: Path, model: str, release: str) -> None:
    path = template_dir(root, model, release)
    if (path / "identity.json").exists() and (path / "trust" / PINNED_ROOT).exists():
        return
    shutil.rmtree(path, ignore_errors=True)  # none, or made before servers pinned a release root
    create_server(
        path, ServerSpec(model=model, release=release, serial=serial_for(f"template:{model}:{release}"))
    )


def bad_repo(root: Path, repo: Path) -> Path:
    """A copy of ``repo`` whose images are corrupted (one byte flipped): downloads fail their digest."""
    target = root / "bad-repo"
    if (target / "ready").exists() and (target / "metadata" / "root.json").exists():
        return target
    work = Path(tempfile.mkdtemp(prefix=".bad-repo.", dir=root))
    shutil.copytree(repo, work / "repo")
    for image in (work / "repo" / "targets" / "images").glob("*.img"):
        damage(work / "repo", image.stem, "byte")
    (work / "repo" / "ready").write_text("corrupted images for failure injection (SIMULATED)\n")
    shutil.rmtree(target, ignore_errors=True)
    (work / "repo").rename(target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def pristine(path: Path, plan: ServerPlan) -> bool:
    """Whether a server folder is as the description made it (so it can be reused)."""
    server = ServerDir(path)
    try:
        ident = server.identity()
        return (
            ident.serial == plan.serial
            and not (path / "last_result.json").exists()
            and server.journal.load() is None
            and server.committed().version == plan.release
            and (path / "trust" / PINNED_ROOT).exists()
        )
    except Exception:  # reason: any unreadable folder is simply rebuilt
        return False


def _build_one(
    root: Path, plan: ServerPlan, keyring: VendorKeyring, repo: Path, now: date, *, disk: FastDisk
) -> None:
    final = root / "servers" / plan.dirname
    shutil.rmtree(final, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{plan.dirname}.", dir=final.parent))
    try:
        shutil.copytree(template_dir(root, plan.model, plan.release), work, dirs_exist_ok=True)
        for key in (work / "keys").glob("*.key"):
            key.unlink()
        identity = read_json(work / "identity.json")
        identity.update(
            serial=plan.serial,
            mac=mac_for(plan.serial),
            shipped=plan.shipped.isoformat(),
            site=plan.site,
            repo=str(bad_repo(root, repo) if plan.failing else repo),
        )
        write_json(work / "identity.json", identity, disk=disk)
        server = ServerDir(work, disk=disk)
        keys = [(ship_key(keyring, plan.serial, plan.shipped), plan.shipped)]  # rule SWM-4
        if plan.key != "none":
            back = 30 + plan.index % 300 if plan.key == "anytime" else 400 + plan.index % 300
            start = now - timedelta(days=back)
            anytime = issue_key(
                keyring, serial=plan.serial, kind="maintenance", plan="anytime-1y", start=start
            )
            keys.append((anytime, start))
        for text, bought in keys:
            if text is not None:  # installed the day it was bought: an expired key was valid then
                server.install_key(text, bought)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _build_chunk(root: str, plans: Sequence[dict[str, object]], now: str) -> int:
    """Worker-process entry: build a chunk of servers (plans in their JSON form)."""
    keyring = VendorKeyring.load_or_create()
    repo = default_repository(keyring)
    base, today = Path(root), date.fromisoformat(now)
    disk = FastDisk()  # no flush: each copy is renamed into place whole, and a machine crash means a rebuild
    for raw in plans:
        fields = dict(raw)
        fields["shipped"] = date.fromisoformat(str(fields["shipped"]))
        _build_one(base, ServerPlan(**fields), keyring, repo, today, disk=disk)  # type: ignore[arg-type]  # reason: JSON form of ServerPlan
    return len(plans)


def build_fleet(root: Path, spec: FleetSpec, *, workers: int = 2, progress: Progress | None = None) -> Fleet:
    """Build the fleet at ``root``, reusing pristine servers of the same description.

    Raises:
        ValueError: the description names unknown models or releases.
        StoreError: a server cannot be built.
    """
    plans = expand(spec, default_catalog())
    root.mkdir(parents=True, exist_ok=True)
    (root / "servers").mkdir(exist_ok=True)
    manifest = root / MANIFEST
    same = manifest.exists() and json.loads(manifest.read_text()).get("digest") == spec.digest()
    todo = [p for p in plans if not (same and pristine(root / "servers" / p.dirname, p))]
    report = progress or (lambda _done, _total: None)
    keyring = VendorKeyring.load_or_create()
    bad_repo(root, default_repository(keyring))
    for model, release in sorted({(p.model, p.release) for p in todo}):
        _make_template(root, model, release)
    done = len(plans) - len(todo)
    report(done, len(plans))
    if todo:
        size = max(1, min(200, len(todo) // (workers * 4) or 1))
        chunks = [[p.as_dict() for p in todo[i : i + size]] for i in range(0, len(todo), size)]
        if workers <= 1:
            for chunk in chunks:
                done += _build_chunk(str(root), chunk, spec.now.isoformat())
                report(done, len(plans))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for count in pool.map(
                    _build_chunk, [str(root)] * len(chunks), chunks, [spec.now.isoformat()] * len(chunks)
                ):
                    done += count
                    report(done, len(plans))
    write_json(manifest, {"digest": spec.digest(), "servers": [p.as_dict() for p in plans]})
    return Fleet(root, spec, plans, len(todo))
