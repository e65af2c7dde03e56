"""``allworx-sim attack``: mount an attack from TUF's threat list against a real agent.

Each attack works on a private copy of the server's release repository (the attacker's mirror),
made with the vendor's keyring where the threat assumes a key is compromised or the vendor acted
first (a root rotation, newer metadata the agent already trusts), and then asks the agent, with its
durable verifier, to take its next release from the mirror (``rollback-release``: to install an
older one). The outcome is ``{"attack", "refused", "reason", "server_unchanged"}``.

Invariants: the shared repository is never written (only the copy); the server is judged unchanged
when its release (slots, bootloader), database, keys and journal are byte for byte as before; the
metadata the agent trusts (``trust/tuf``), its last result and its Update Area may change, as they
do on any refused download. The server directory's lock is held for the whole attack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
from tuf.api.metadata import Metadata, TargetFile, Targets

from agent.cliutil import changing_server, guarded
from agent.clock import SimClock
from agent.limits import Limits
from agent.releasetrust import is_remote
from agent.results import UpgradeResult
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.errors import StoreError
from releases.catalog import Catalog, default_catalog
from simulator.keyring import VendorKeyring
from simulator.portal import private_copy
from simulator.publish import (
    RoleSigners,
    image_path,
    metadata_path,
    new_root,
    publish_metadata,
    rotate_root,
    signer_for,
    target_file,
    target_name,
    write_root,
)
from simulator.serve import Faults, serving

PAST = datetime(2020, 1, 1, tzinfo=UTC)  # an expiry already passed: a frozen mirror's timestamp
TOO_LARGE = 1 << 20  # bytes of a padded metadata file (the agent's limit for timestamp.json is 16 KiB)
SLOW_GRACE = 1.0  # seconds a trickling download may run before the agent judges its rate
TRICKLE = 0.8  # seconds between the bytes of a trickled image
STATE = ("slots", "boot.json", "keys", "journal.json")  # what an attack must leave byte for byte


@dataclass(frozen=True)
class Outcome:
    """What one attack came to."""

    attack: str
    refused: bool
    reason: str | None
    server_unchanged: bool
    notes: dict[str, float] = field(default_factory=dict)  # measured on the side (not printed)

    def document(self) -> dict[str, object]:
        """The JSON form ``allworx-sim attack --json`` prints."""
        return {
            "attack": self.attack,
            "refused": self.refused,
            "reason": self.reason,
            "server_unchanged": self.server_unchanged,
        }


@dataclass
class Arena:
    """The attacked server, the attacker's mirror and the vendor's keys."""

    server: ServerDir
    mirror: Path
    keyring: VendorKeyring
    catalog: Catalog
    clock: SimClock
    notes: dict[str, float] = field(default_factory=dict)  # what an attack measured on the side

    @property
    def target(self) -> str:
        """The release the server would take next."""
        nxt = self.catalog.successor(self.server.committed().version)
        if nxt is None:
            raise StoreError("the server is on the newest release: it has no next release to attack")
        return nxt.version

    @property
    def build(self) -> str:
        """The build of :attr:`target`."""
        return self.catalog.release(self.target).build

    def signers(self) -> RoleSigners:
        """The vendor's role signers."""
        return RoleSigners.of(self.keyring)

    def targets(self) -> dict[str, TargetFile]:
        """The mirror's current targets, by path."""
        return dict(
            Metadata[Targets].from_bytes(metadata_path(self.mirror, "targets").read_bytes()).signed.targets
        )

    def republish(self, signers: RoleSigners | None = None, **expires: datetime) -> None:
        """Sign the mirror's targets again as new versions (the vendor's keys unless ``signers``)."""
        targets = self.targets()
        later = {"targets": datetime(2040, 12, 30, tzinfo=UTC)} | expires  # a change: every version moves
        publish_metadata(self.mirror, targets, signers or self.signers(), later)

    def trust_now(self) -> None:
        """The agent refreshes from the mirror as it is now (it then trusts these versions)."""
        self.server.verifier.release(self.server.trust_dir, str(self.mirror), self.build)

    async def upgrade(self) -> UpgradeResult:
        """Ask the agent to take its next release from the mirror."""
        return await Upgrader(self.server, self.catalog, self.clock, repo=str(self.mirror)).upgrade(
            self.target
        )


def state_digest(root: Path) -> str:
    """A digest of the server's release, database, keys and journal (names and bytes)."""
    digest = hashlib.sha256()
    for name in STATE:
        base = root / name
        paths = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for path in paths:
            data = path.read_bytes() if path.is_file() else b"(absent)"
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + data)
    return digest.hexdigest()


# --- the attacks ---------------------------------------------------------------------------------


async def arbitrary_image(arena: Arena) -> UpgradeResult:
    """The mirror serves other bytes of the image's signed length."""
    size = _signed_size(arena)
    image_path(arena.mirror, arena.build).write_bytes(
        (hashlib.sha256(b"attacker").digest() * (size // 32 + 1))[:size]
    )
    return await arena.upgrade()


def _signed_size(arena: Arena) -> int:
    return int(arena.targets()[target_name(arena.build)].length)


async def bad_signature(arena: Arena) -> UpgradeResult:
    """A newer timestamp signed by a key the timestamp role does not name."""
    old = arena.signers()
    forger = signer_for(hashlib.sha256(b"forger").digest())
    arena.republish(RoleSigners(old.root, old.targets, old.snapshot, (forger,)))
    return await arena.upgrade()


async def threshold(arena: Arena) -> UpgradeResult:
    """The vendor's targets role needs two of two keys; the attacker holds one and signs alone."""
    old = arena.signers()
    second = signer_for(hashlib.sha256(b"second targets key").digest())
    both = RoleSigners(old.root, (*old.targets, second), old.snapshot, old.timestamp)
    root = new_root(both, datetime(2040, 12, 31, tzinfo=UTC), version=2)
    root.roles["targets"].threshold = 2
    write_root(arena.mirror, root, old.root)  # the vendor's rotation: signed by the trusted root key
    arena.republish(both)
    arena.trust_now()
    targets = arena.targets()
    info = targets[target_name(arena.build)]
    bogus = hashlib.sha256(b"the attacker's image").hexdigest()
    targets[target_name(arena.build)] = target_file(
        info.path, info.length, bogus, info.unrecognized_fields["custom"]
    )
    compromised = RoleSigners(old.root, old.targets, old.snapshot, old.timestamp)  # one of the two
    publish_metadata(arena.mirror, targets, compromised)
    return await arena.upgrade()


async def rollback_metadata(arena: Arena) -> UpgradeResult:
    """After the agent trusted newer metadata, the mirror serves the older, validly signed set."""
    saved = {
        role: metadata_path(arena.mirror, role).read_bytes() for role in ("targets", "snapshot", "timestamp")
    }
    arena.republish()
    arena.trust_now()
    for role, data in saved.items():
        metadata_path(arena.mirror, role).write_bytes(data)
    return await arena.upgrade()


async def freeze(arena: Arena) -> UpgradeResult:
    """The mirror serves a validly signed timestamp that has expired (a frozen view)."""
    arena.republish(timestamp=PAST)
    return await arena.upgrade()


async def mix_and_match(arena: Arena) -> UpgradeResult:
    """The mirror serves the targets of one time with the snapshot of another."""
    older = metadata_path(arena.mirror, "targets").read_bytes()
    arena.republish()
    metadata_path(arena.mirror, "targets").write_bytes(older)
    return await arena.upgrade()


async def endless_data(arena: Arena) -> UpgradeResult:
    """The mirror serves a timestamp far longer than any timestamp (padding after the JSON)."""
    path = metadata_path(arena.mirror, "timestamp")
    path.write_bytes(path.read_bytes() + b" " * TOO_LARGE)
    return await arena.upgrade()


async def wrong_target(arena: Arena) -> UpgradeResult:
    """The next release's image is validly signed, but for other models than this server's."""
    targets = arena.targets()
    info = targets[target_name(arena.build)]
    custom = dict(info.unrecognized_fields["custom"])
    model = arena.server.identity().model
    custom["models"] = [m for m in custom["models"] if m != model] or ["731"]
    targets[target_name(arena.build)] = target_file(info.path, info.length, info.hashes["sha256"], custom)
    publish_metadata(arena.mirror, targets, arena.signers())
    return await arena.upgrade()


async def rollback_release(arena: Arena) -> UpgradeResult:
    """A validly signed older release offered as the release to install (DOWN-1)."""
    current = arena.catalog.release(arena.server.committed().version)
    if current.index == 0:
        raise StoreError("the server is on the oldest release: there is no older one to offer")
    older = arena.catalog.releases[current.index - 1].version
    return await Upgrader(arena.server, arena.catalog, arena.clock, repo=str(arena.mirror)).install(older)


async def root_rotation(arena: Arena) -> UpgradeResult:
    """The vendor's rotation (signed by the old root) is followed; then a root signed only by an
    intruder's key is offered."""
    old = arena.signers()
    new = RoleSigners((signer_for(hashlib.sha256(b"next root key").digest()),), old.targets, old.snapshot,
                      old.timestamp)  # fmt: skip
    rotate_root(arena.mirror, old, new)
    arena.trust_now()  # accepted: signed by the trusted root and the new one
    intruder = RoleSigners((signer_for(hashlib.sha256(b"intruder").digest()),), old.targets, old.snapshot,
                           old.timestamp)  # fmt: skip
    rotate_root(arena.mirror, intruder, intruder)
    return await arena.upgrade()


async def slow_retrieval(arena: Arena) -> UpgradeResult:
    """The mirror, served over HTTP, trickles the image a byte at a time: the agent gives up at a
    bounded time, keeps what arrived for a resume, and its event loop keeps running meanwhile."""
    limits = Limits(rate_grace=SLOW_GRACE, min_rate=64 * 1024, max_retries=1, backoff_base=0.0)
    gaps: list[float] = []

    async def ticker() -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.05)
            gaps.append(time.monotonic() - started)

    with serving(arena.mirror, faults=Faults(trickle=TRICKLE)) as server:
        ticking = asyncio.create_task(ticker())
        upgrader = Upgrader(arena.server, arena.catalog, arena.clock, repo=server.url, limits=limits)
        try:
            return await upgrader.upgrade(arena.target)
        finally:
            ticking.cancel()
            arena.notes["longest_loop_wait"] = max(gaps, default=0.0)


ATTACKS: dict[str, Callable[[Arena], Awaitable[UpgradeResult]]] = {
    "arbitrary-image": arbitrary_image,
    "bad-signature": bad_signature,
    "threshold": threshold,
    "rollback-metadata": rollback_metadata,
    "freeze": freeze,
    "mix-and-match": mix_and_match,
    "endless-data": endless_data,
    "wrong-target": wrong_target,
    "rollback-release": rollback_release,
    "root-rotation": root_rotation,
    "slow-retrieval": slow_retrieval,
}


async def mount(name: str, server: ServerDir, work: Path, now: datetime, keyring: VendorKeyring) -> Outcome:
    """Mount attack ``name`` against ``server`` with a mirror in ``work``.

    Raises:
        StoreError: the server's repository is not a local folder, or the server has no release
            the attack needs (a next one; for ``rollback-release`` an older one).
        KeyError: no attack of that name.
    """
    attack = ATTACKS[name]
    repo = server.identity().repo
    if is_remote(repo):
        raise StoreError(f"an attack needs a virtual server whose repository is a folder, not {repo}")
    mirror = private_copy(Path(repo), work / "mirror")
    arena = Arena(server, mirror, keyring, default_catalog(), SimClock(now, speed=float("inf")))
    before = state_digest(server.root)
    result = await attack(arena)
    step = result.steps[-1] if result.steps else None
    reason = step.refusal.reason.value if step is not None and step.refusal is not None else None
    refused = step is not None and step.outcome != "committed"
    return Outcome(name, refused, reason, state_digest(server.root) == before, arena.notes)


@click.command("attack")
@click.argument("name", type=click.Choice(sorted(ATTACKS)))
@click.option("--server-dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The virtual server to attack (its repository, a folder, is copied).")  # fmt: skip
@click.option("--now", default=None, help="The simulated date (YYYY-MM-DD); default: real time.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@guarded
def attack_command(name: str, server_dir: Path, now: str | None, as_json: bool) -> None:
    """Mount an attack on the release repository against a virtual server's agent; exit 0 when the
    agent refused it and the server is unchanged, 1 otherwise."""
    from agent.cliutil import clock_for

    moment = clock_for(now).now()
    keyring = VendorKeyring.load_or_create()
    with changing_server(server_dir) as server, tempfile.TemporaryDirectory(prefix="allworx-attack-") as work:
        outcome = asyncio.run(mount(name, server, Path(work), moment, keyring))
    document = outcome.document()
    click.echo(json.dumps(document) if as_json else " ".join(f"{k}={v}" for k, v in document.items()))
    raise SystemExit(0 if outcome.refused and outcome.server_unchanged else 1)
