"""The simulated world one scenario runs in: its servers, the vendor desk, the keys, the clock.

Each step kind has one handler that does what the step says and returns the step's refusal
(a :class:`~common.reasons.Refusal`, or None); :mod:`simulator.scenario.runner` compares it with
``expect_refused``. Every server remembers what later ``expect`` steps read: its last refusal,
the releases its last request went through, a pending dry-run plan, its last site-check status,
and the baselines taken when it was created (record digest, key files).

Invariants: the clock is a :class:`~agent.clock.SimClock` at infinite speed, so only ``advance``
and the upgrades' own simulated waits move it; after every ``advance`` the desk delivers the keys
that became available (XFER-1); nothing outside the scenario's work directory is written except
the shared vendor keyring and release repository.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from agent import database
from agent.clock import SimClock
from agent.database import RecordDigest
from agent.events import AgentEvent, Transition
from agent.keys import parse_key_text
from agent.machine import State
from agent.planner import Plan, plan
from agent.results import StepResult, UpgradeResult
from agent.store import ServerDir
from agent.upgrader import Upgrader
from common.errors import KeyFormatError
from common.reasons import Reason, Refusal
from releases.catalog import Catalog
from simulator.issuer import issue_key, tamper
from simulator.keyring import VendorKeyring
from simulator.portal import damage, private_copy
from simulator.publish import default_repository
from simulator.scenario import model as m
from simulator.scenario.powercut import run_with_power_cut
from simulator.server import ServerSpec, create_server, serial_for
from simulator.vendor import Desk, MemberStatus, VendorRefusedError

KEY_RULE = "SWM-2"  # a refused key (signature, serial, revocation, window) fails SWM-2's validity checks


class StepError(Exception):
    """A step could not be carried out at all (not a refusal): ends the scenario as an error."""

    def __init__(self, step: m.Step, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.step, self.field_name = step, field_name


@dataclass
class ServerState:
    """One server of the scenario and what expectations read about it."""

    name: str
    server: ServerDir
    network: str | None
    records: RecordDigest  # when created: the records_intact baseline
    keys: dict[str, bytes]  # key files when created: the keys_intact baseline
    refusal: Refusal | None = None  # of the last step that touched it
    steps: list[str] = field(default_factory=list)  # releases its last request went through
    plan: Plan | None = None  # a dry run the next expect on this server reads
    site: MemberStatus | None = None
    site_target: str | None = None


def key_files(server: ServerDir) -> dict[str, bytes]:
    """Every installed key file's bytes, by file name."""
    return {p.name: p.read_bytes() for p in sorted(server.keys_dir.glob("*.key"))}


class World:
    """Servers, desk, keys and clock of one running scenario."""

    def __init__(self, scenario: m.Scenario, workdir: Path, keyring: VendorKeyring, catalog: Catalog) -> None:
        self.scenario, self.workdir, self.keyring, self.catalog = scenario, workdir, keyring, catalog
        start = scenario.start
        self.clock = SimClock(datetime(start.year, start.month, start.day, tzinfo=UTC), speed=float("inf"))
        self.desk = Desk(keyring, catalog, state_dir=workdir / "desk")
        self.servers: dict[str, ServerState] = {}
        self.orders: dict[str, str] = {}  # order name (its `as`) -> order id
        self.keys: dict[str, str] = {}  # issued key name -> key text
        self.revoked: set[str] = set()  # key ids this scenario's vendor revoked (its own list)
        self.repo: Path | None = None  # this scenario's own damaged copy of the portal (tamper-image)
        self.cut_failures: list[tuple[m.Step, str]] = []  # power cuts asked for but never reached

    # --- set-up ---------------------------------------------------------------------------
    def create_servers(self) -> None:
        """Create every declared server (each with its ship key when due, SWM-4)."""
        for decl in self.scenario.servers:
            spec = ServerSpec(
                model=decl.model, release=decl.release,
                serial=decl.serial or serial_for(f"{self.scenario.path.name}:{decl.name}"),
                shipped=decl.shipped, users=decl.users, site=decl.site or decl.network or "default",
                call_log_rows=decl.call_log_rows,
            )  # fmt: skip
            made = create_server(self.workdir / "servers" / decl.name, spec, keyring=self.keyring,
                                 catalog=self.catalog)  # fmt: skip
            self._adopt(decl.name, made, decl.network)

    def _adopt(self, name: str, server: ServerDir, network: str | None) -> ServerState:
        self._apply_revocations(server)  # a server made after a revocation gets the list too
        state = ServerState(name, server, network, database.digest(server.db_path(server.active_slot())),
                            key_files(server))  # fmt: skip
        self.servers[name] = state
        return state

    def state(self, step: m.Step, name: str, field_name: str = "server") -> ServerState:
        """The server ``name`` refers to (an order refused earlier never made its server)."""
        found = self.servers.get(name)
        if found is None:
            why = f"server {name!r} does not exist (the order that was to make it was refused)"
            raise StepError(step, field_name, why)
        return found

    # --- running --------------------------------------------------------------------------
    async def run(self, step: m.Step) -> Refusal | None:
        """Carry out one step and return its refusal, if it was refused."""
        handler: Callable[[World, Any], Awaitable[Refusal | None]] = _HANDLERS[type(step)]
        return await handler(self, step)

    def today(self) -> date:
        """The scenario's current date."""
        return self.clock.now().date()

    async def _advance(self, step: m.Advance) -> None:
        now = self.clock.now()
        if step.days is not None:
            self.clock.advance(timedelta(days=step.days).total_seconds())
        elif step.to is not None:
            target = datetime(step.to.year, step.to.month, step.to.day, tzinfo=UTC)
            if step.to < now.date():
                why = f"{step.to.isoformat()} is before the scenario's date {now.date().isoformat()}"
                raise StepError(step, "to", f"dates out of order: {why}")
            self.clock.advance(max(0.0, (target - now).total_seconds()))
        self.desk.deliver(self.clock.now())  # rule XFER-1: keys that became available appear

    async def _issue_key(self, step: m.IssueKey) -> Refusal | None:
        target = self.state(step, step.server)
        owner = self.state(step, step.for_server, "for_server") if step.for_server else target
        text = issue_key(
            self.keyring, serial=owner.server.identity().serial, kind=step.kind, plan=step.plan,
            start=step.start or self.today(), ceiling=step.ceiling, feature=step.feature, users=step.users,
            patch_build=step.patch_build, count=step.count or 1, expires=step.expires, catalog=self.catalog,
        )  # fmt: skip
        if step.tamper:
            text = tamper(text)
        if step.name is not None:
            self.keys[step.name] = text
        return self._install_text(target, text) if step.install else None

    async def _install_key(self, step: m.InstallKey) -> Refusal | None:
        return self._install_text(self.state(step, step.server), self.keys[step.key])

    async def _revoke_key(self, step: m.RevokeKey) -> None:
        """The vendor revokes the key; each server installs the new list, as it would fetch it (SWM-2).

        The list is the scenario's own (signed by the vendor's revocations key, never published to
        the shared keyring), so scenarios running side by side never revoke each other's keys.
        """
        try:
            self.revoked.add(parse_key_text(self.keys[step.key]).info.key_id)
        except KeyFormatError as exc:
            raise StepError(
                step, "key", f"key {step.key!r} cannot be read, so it cannot be revoked: {exc}"
            ) from exc
        for state in self.servers.values():
            self._apply_revocations(state.server)

    def _apply_revocations(self, server: ServerDir) -> None:
        trust = server.trust()
        if self.revoked <= trust.revoked:
            return
        text = self.keyring.sign_revocations(
            trust.revoked | self.revoked, trust.revocation_sequence + 1, self.today()
        )
        server.install_revocations(text, self.today())

    async def _tamper_image(self, step: m.TamperImage) -> None:
        """Damage one download in the scenario's own copy of the portal; every later upgrade reads it."""
        release = self.catalog.get(step.release)
        build = release.build if release is not None else step.release
        self.repo = private_copy(default_repository(self.keyring, self.catalog), self.workdir / "portal")
        damage(self.repo, build, step.how)

    def _install_text(self, target: ServerState, text: str) -> Refusal | None:
        check = target.server.install_key(text, self.today())
        refusal = None
        if not check.valid and check.reason not in (None, Reason.KEY_NOT_YET_VALID):  # installed, valid later
            refusal = Refusal(check.reason, KEY_RULE, check.message)
        return self._touch(target, refusal)

    def _touch(
        self, target: ServerState, refusal: Refusal | None, steps: list[str] | None = None
    ) -> Refusal | None:
        target.refusal, target.plan = refusal, None
        if steps is not None:
            target.steps = steps
        return refusal

    def _upgrader(self, server: ServerDir, clock: SimClock, sink: list[str]) -> Upgrader:
        def on_event(event: AgentEvent) -> None:
            if isinstance(event, Transition) and event.state is State.COMMITTED:
                sink.append(event.release)

        return Upgrader(server, self.catalog, clock, repo=self.repo, on_event=on_event)

    async def _request(self, step: m.Upgrade | m.Install, target: ServerState) -> UpgradeResult:
        committed: list[str] = []
        goal = step.to if isinstance(step, m.Upgrade) else step.release

        async def ask(up: Upgrader) -> UpgradeResult:
            return await (up.upgrade(goal) if isinstance(step, m.Upgrade) else up.install(goal))

        async def again(up: Upgrader, recovered: StepResult | None) -> UpgradeResult:
            if isinstance(step, m.Install) and recovered is not None:
                return _already(up.server, goal)  # the recovered step was the install, now committed
            return await ask(up)

        def make(server: ServerDir, clock: SimClock) -> Upgrader:
            mine = server.root == target.server.root  # a rehearsal on a copy commits nothing of the server's
            return self._upgrader(server, clock, committed if mine else [])

        if step.power_cut is None:
            result = await ask(make(target.server, self.clock))
        else:
            report = await run_with_power_cut(target.server, self.clock, make, ask, point=step.power_cut,
                                              seed=step.seed, after_recovery=again)  # fmt: skip
            result = report.result
            if report.cut_at is None:
                self.cut_failures.append((step, step.power_cut))
        target.steps = list(committed)
        return result

    async def _upgrade(self, step: m.Upgrade | m.Install) -> Refusal | None:
        target = self.state(step, step.server)
        result = await self._request(step, target)
        refusal = result.steps[-1].refusal if result.steps else None
        return self._touch(target, refusal)

    async def _plan(self, step: m.PlanStep) -> Refusal | None:
        target = self.state(step, step.server)
        now = self.clock.now()
        server = target.server
        dry = plan(self.catalog, server.facts(), server.key_checks(now.date()), step.to, now)
        self._touch(target, dry.refusal, [s.release for s in dry.steps if s.allowed])
        target.plan = dry
        return dry.refusal

    # --- the vendor desk ----------------------------------------------------------------------
    async def _order(self, step: m.Order) -> Refusal | None:
        old = self.state(step, step.server)
        try:
            placed = self.desk.order(step.type, old.server.root, step.new_model, now=self.clock.now(),
                                     new_server_dir=self.workdir / "servers" / step.name,
                                     key_transfer=step.key_transfer, functional=step.functional)  # fmt: skip
        except VendorRefusedError as exc:
            return self._touch(old, exc.refusal)
        self.orders[step.name] = placed.order_id
        self._adopt(step.name, ServerDir(Path(placed.new_server_dir)), old.network)
        old.network = None  # the new server takes the old one's place in its network (SITE-1)
        return self._touch(old, None)

    async def _return(self, step: m.Return) -> None:
        old = self.state(step, step.server)
        serial = old.server.identity().serial
        placed = next((o for o in self.desk.orders() if o.old_serial == serial), None)
        if placed is None:
            raise StepError(step, "server", f"server {step.server!r} was not traded under any order")
        self.desk.return_server(placed.order_id, self.clock.now())

    async def _migrate(self, step: m.Migrate) -> Refusal | None:
        source, dest = self.state(step, step.source, "from"), self.state(step, step.to, "to")
        refusal = None
        try:
            self.desk.migrate(source.server.root, dest.server.root, self.clock.now())
        except VendorRefusedError as exc:
            refusal = exc.refusal
        self._touch(source, refusal)
        return self._touch(dest, refusal)

    async def _site_check(self, step: m.SiteCheck) -> None:
        members = [s for s in self.servers.values() if s.network == step.network]
        if not members:
            raise StepError(step, "network", f"network {step.network!r} has no members left")
        report = self.desk.site_check([s.server.root for s in members], self.clock.now(), step.target)
        for member, status in zip(members, report.members, strict=True):
            self._touch(member, status.refusal, list(status.steps))
            member.site, member.site_target = status, report.target

    async def _purchase(self, step: m.Purchase) -> Refusal | None:
        target = self.state(step, step.server)
        try:
            self.desk.purchase(target.server.root, step.option, self.clock.now())
        except VendorRefusedError as exc:
            return self._touch(target, exc.refusal)
        return self._touch(target, None)

    async def _temporary_key(self, step: m.TemporaryKey) -> Refusal | None:
        target = self.state(step, step.server)
        self.desk.temporary_key(target.server.root, self.clock.now(), step.ceiling)  # rule MIG-2
        return self._touch(target, None)

    async def _expect(self, step: m.Expect) -> None:
        return None  # checked by the runner (simulator.scenario.expect)


def _already(server: ServerDir, goal: str) -> UpgradeResult:
    info = server.committed()
    return UpgradeResult(
        info.version, goal, info.version, [StepResult(info.version, info.build, "committed")]
    )


_HANDLERS: dict[type[m.Step], Callable[[World, Any], Awaitable[Refusal | None]]] = {
    m.Advance: World._advance,
    m.IssueKey: World._issue_key,
    m.InstallKey: World._install_key,
    m.RevokeKey: World._revoke_key,
    m.TamperImage: World._tamper_image,
    m.Upgrade: World._upgrade,
    m.Install: World._upgrade,
    m.PlanStep: World._plan,
    m.Order: World._order,
    m.Return: World._return,
    m.Migrate: World._migrate,
    m.SiteCheck: World._site_check,
    m.Purchase: World._purchase,
    m.TemporaryKey: World._temporary_key,
    m.Expect: World._expect,
}
