"""The upgrade shell: carries out planned steps on a server directory, one persisted state at a time.

The pure core decides (:mod:`agent.policy`, :mod:`agent.planner`, :mod:`agent.machine`); this
module does the I/O. For each state a handler performs the state's side effect and returns the
event; the next state comes from the one transition table and is persisted *before* its handler
runs, so a restarted agent resumes from :func:`agent.machine.resume_state`.

Invariants:
- nothing on the old slot (release, database) is written during an upgrade; the new release's
  database is built in the inactive slot, so rollback is the bootloader forgetting the trial;
- a step ends committed or rolled back, never half-way, whatever the power does;
- the commit point is the bootloader's commit write: before it every failure rolls back (the
  bootloader forgets the trial), after it the step only finishes forward;
- more than :data:`agent.journal.MAX_PERSISTS` persisted steps in one upgrade end it rolled back
  (or, past the commit point, committed);
- a state the journal cannot persist (a full disk) is never acted on: the step rolls back.

What a power cut at each crash point leads to: ``docs/power-cuts.md``.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent import crashpoints, database
from agent.bootloader import SLOTS, BootEnv
from agent.clock import Clock
from agent.documents import LastResult, StepOutcome
from agent.events import EventSink, Progress, ProgressDue, Refused, ResultEvent, Resumed, Transition
from agent.fetcher import fetch_image
from agent.fileio import disk_error, fsync_file
from agent.journal import MAX_PERSISTS, Job
from agent.limits import DEFAULT_LIMITS, Limits
from agent.machine import Event, State, cancellable, next_state, resume_state
from agent.manifest import Manifest
from agent.planner import candidates
from agent.policy import ServerFacts, Verdict, judge_step
from agent.releasetrust import image_location, is_remote
from agent.results import StepResult, UpgradeResult, failure_rule
from agent.store import ServerDir, SlotInfo
from common.errors import AllworxError, CancelledUpgrade, StoreError, VerificationError
from common.reasons import Reason, Refusal
from releases.catalog import Catalog

log = structlog.get_logger("agent.upgrader")
TERMINAL = frozenset({State.COMMITTED, State.ROLLED_BACK})
_LOOP_EXEMPT = frozenset({State.ROLLING_BACK, State.ROLLED_BACK, State.COMMITTED})


@dataclass
class Timing:
    """Nominal durations of the simulated hardware, in seconds of the injected clock."""

    reboot: float = 90.0  # a PBX takes a minute or two to boot
    db_rows_per_second: float = 20_000.0


class Upgrader:
    """Upgrades one server directory, writing through its disk and verifying with its verifier."""

    def __init__(
        self,
        server: ServerDir,
        catalog: Catalog,
        clock: Clock,
        *,
        repo: Path | str | None = None,
        limits: Limits = DEFAULT_LIMITS,
        timing: Timing | None = None,
        on_event: EventSink | None = None,
        progress_due: ProgressDue | None = None,
        cancel: asyncio.Event | None = None,
    ) -> None:
        self.server = server
        self.catalog = catalog
        self.clock = clock
        self.repo = str(repo or server.identity().repo)  # a folder or an http(s) URL
        self.limits = limits
        self.timing = timing or Timing()
        self.on_event = on_event or (lambda _event: None)
        # whether the sink keeps a progress report, asked before its event is made (default: all)
        self.progress_due = progress_due or (lambda _build, _done, _total: True)
        self.cancel = cancel or asyncio.Event()
        self._manifests: dict[str, Manifest] = {}  # verified targets of this request, by build
        self._staged: dict[str, Path] = {}  # the Update Area's file of each build, built once

    # --- requests ---------------------------------------------------------------------------
    async def upgrade(self, target: str) -> UpgradeResult:
        """Take the server to ``target`` one committed step at a time (rule SEQ-1).

        Each step is judged again just before it runs (``now`` read once per decision), and the
        chain stops at the first refusal or failure, leaving the last committed release. A step a
        power cut interrupted is finished first and reported as ``recovered``.

        Raises:
            AllworxError: the disk refused even the rollback (or the finishing of a committed
                step); the journal keeps the state and the next start resumes it.
        """
        recovered = await self.recover()
        facts = self.server.facts()
        result = UpgradeResult(facts.release, target, facts.release, recovered=recovered)
        walk = candidates(self.catalog, facts, target)
        if isinstance(walk, Verdict):
            result.steps.append(StepResult(walk.release, walk.build, "refused", walk.refusal))
            return self._finish(result)
        for index, candidate in enumerate(walk):
            self.server.forget()  # each step is judged from the files as they are now
            now, env = self.clock.now(), self.server.bootloader.env()
            facts = self.server.facts(env)
            verdict = judge_step(self.catalog, facts, self.server.key_checks(now), candidate, now)
            step = await self._step(verdict, target, (index + 1, len(walk)), facts, env)
            result.steps.append(step)
            if step.outcome != "committed":
                break
            result.final_release = step.release
        return self._finish(result)

    async def install(self, release: str) -> UpgradeResult:
        """Install exactly ``release`` (an uploaded image): no planning, judged by the same rules."""
        recovered = await self.recover()
        env = self.server.bootloader.env()
        facts = self.server.facts(env)
        now = self.clock.now()
        verdict = judge_step(self.catalog, facts, self.server.key_checks(now), release, now)
        result = UpgradeResult(facts.release, release, facts.release, recovered=recovered)
        step = await self._step(verdict, release, (1, 1), facts, env)
        result.steps.append(step)
        if step.outcome == "committed":
            result.final_release = step.release
        return self._finish(result)

    async def stage(self, target: str) -> list[str]:
        """Download and verify every image a plan to ``target`` would install; activate nothing.

        Returns:
            The builds now staged in the Update Area.
        """
        from agent.planner import plan

        now = self.clock.now()
        planned = plan(self.catalog, self.server.facts(), self.server.key_checks(now), target, now)
        staged = []
        for step in planned.steps:
            if not step.allowed:
                break
            await self._fetch(step.build)
            staged.append(step.build)
        return staged

    async def recover(self) -> StepResult | None:
        """Finish an upgrade step that a power cut or a kill interrupted, if any.

        The persisted state maps through the transition table's restart edges to where the step
        resumes (:func:`agent.machine.resume_state`); anything unknown rolls back. A trial slot
        with no journal at all is unknown too: the bootloader forgets it.

        Raises:
            StoreError: (``STATE_INVALID``) a persisted file holds a value out of range; nothing
                was written.
            AllworxError: the rollback itself could not be written (the journal keeps
                ``rolling_back`` and the next start resumes it).
        """
        job = self.server.check_state()  # a persisted value out of range: fail before any write
        if job is None:
            if self.server.bootloader.env().trial is not None:
                log.warning("orphan_trial_forgotten")
                self.server.bootloader.rollback()
            return None
        crashpoints.hit("recover")
        state = resume_state(job.state)
        log.info("upgrade_resumed", job_id=job.job_id, persisted=job.state, resume=state.value)
        self.on_event(
            Resumed(
                job_id=job.job_id,
                release=job.release,
                build=job.build,
                step=job.extra.get("step", 1),
                steps=job.extra.get("steps", 1),
                persisted=job.state,
                state=state,
            )
        )
        with structlog.contextvars.bound_contextvars(job_id=job.job_id, step=job.build):
            return await self._drive(job, state)

    # --- one step -----------------------------------------------------------------------------
    async def _step(
        self, verdict: Verdict, target: str, position: tuple[int, int], facts: ServerFacts, env: BootEnv
    ) -> StepResult:
        """Carry out one judged step (``position``: its index from 1 and the count of steps) from
        ``facts`` and ``env``, the committed release and bootloader environment it was judged on,
        read just before (nothing changed the server since)."""
        index, total = position
        if verdict.refusal is not None:
            log.info("step_refused", release=verdict.build, **verdict.refusal.as_dict())
            refusal = verdict.refusal
            self.on_event(
                Refused(
                    release=verdict.release,
                    build=verdict.build,
                    step=index,
                    steps=total,
                    reason=refusal.reason.value,
                    rule=refusal.rule,
                    message=refusal.message,
                )
            )
            return StepResult(verdict.release, verdict.build, "refused", verdict.refusal)
        job = Job(
            job_id=uuid.uuid4().hex[:12],
            state=State.IDLE.value,
            target=target,
            release=verdict.release,
            build=verdict.build,
            from_release=facts.release,
            from_build=facts.build,
            old_slot=env.active,
            new_slot=env.inactive,
            started_at=self.clock.now().isoformat(),
            rebuilds_database=verdict.rebuilds_database,
            db_schema=verdict.db_schema,
            phone_firmware=verdict.phone_firmware,
            extra={"step": index, "steps": total},
        )
        with structlog.contextvars.bound_contextvars(
            job_id=job.job_id, serial=self.server.identity().serial, step=verdict.build
        ):
            return await self._drive(job, next_state(State.IDLE, Event.START))

    async def _drive(self, job: Job, state: State) -> StepResult:
        """Persist each state, run its handler, follow the table, until a terminal state."""
        while True:
            state = self._crash_loop_guard(job, state)
            job.state = state.value
            try:
                self.server.journal.save(job)
            except StoreError as exc:
                if state not in TERMINAL:  # never act on a state that is not persisted
                    state = self._unpersisted(job, state, exc)
                    continue
                # a terminal outcome is already true on the server: close it all the same
            self._transition(job, state)
            if state in TERMINAL:
                return self._close(job, state)
            event = await self._run_handler(job, state)
            state = next_state(state, event)

    def _crash_loop_guard(self, job: Job, state: State) -> State:
        """Past :data:`MAX_PERSISTS` persisted steps, stop looping: roll back (commit if past it)."""
        if job.persist_count < MAX_PERSISTS or state in _LOOP_EXEMPT:
            return state
        log.warning("crash_loop", state=state.value, persisted=job.persist_count)
        if self._past_commit(job):
            return State.COMMITTED  # the bootloader already made the new slot active: finish forward
        job.error = {"reason": Reason.CRASH_LOOP.value,
                     "message": "the upgrade restarted too many times and was rolled back"}  # fmt: skip
        return State.ROLLING_BACK

    def _unpersisted(self, job: Job, state: State, exc: StoreError) -> State:
        """The journal refused ``state`` (a full disk): roll back instead of acting on it.

        Raises:
            StoreError: even ``rolling_back`` cannot be persisted; the journal keeps its last
                state and the next start resumes from there.
        """
        log.warning("journal_write_failed", state=state.value, reason=exc.reason.value, error=str(exc))
        if state is State.ROLLING_BACK:
            raise exc
        job.error = {"reason": exc.reason.value, "message": str(exc)}
        return State.ROLLING_BACK

    def _past_commit(self, job: Job) -> bool:
        """Whether the bootloader already committed this step's new slot (the commit point)."""
        env = self.server.bootloader.env()
        return job.new_slot in SLOTS and env.active == job.new_slot and env.trial is None

    async def _run_handler(self, job: Job, state: State) -> Event:
        handler = _HANDLERS[state]
        try:
            return await handler(self, job)
        except CancelledUpgrade as exc:
            job.error = {"reason": exc.reason.value, "message": str(exc)}
            return Event.CANCEL if cancellable(state) else Event.FAILED
        except (AllworxError, OSError) as raw:
            error = raw if isinstance(raw, AllworxError) else disk_error(raw)
            log.warning("step_failed", state=state.value, reason=error.reason.value, error=str(error))
            if state is State.ROLLING_BACK:
                raise error from raw  # the journal keeps rolling_back: the next start resumes it
            job.error = {"reason": error.reason.value, "message": str(error)}
            return Event.BOOT_FAILED if state is State.TRIAL_BOOT else Event.FAILED

    def _close(self, job: Job, state: State) -> StepResult:
        crashpoints.hit("finish")
        if state is State.COMMITTED:  # idempotent: a cut here resumes in committed and redoes it
            self.server.offer_phone_firmware(job.phone_firmware, job.release)  # rule PHONE-1
            self._staged_path(job.build).unlink(missing_ok=True)
        self.server.journal.clear()
        log.info("step_finished", release=job.build, state=state.value, persisted=job.persist_count)
        if state is State.COMMITTED:
            return StepResult(job.release, job.build, "committed")
        error = job.error or {}
        reason = Reason(error.get("reason", Reason.BOOT_CHECK_FAILED.value))
        rule = failure_rule(reason, rebuilds_database=job.rebuilds_database)
        message = error.get("message", "The upgrade failed and the server was rolled back.")
        outcome: StepOutcome = "cancelled" if reason is Reason.CANCELLED else "failed"
        return StepResult(job.release, job.build, outcome, Refusal(reason, rule, message))

    def _finish(self, result: UpgradeResult) -> UpgradeResult:
        report = result.report()
        self.server.record_result(LastResult.of(report, self.clock.now()))
        self.on_event(ResultEvent.of(report))
        return result

    def _transition(self, job: Job, state: State) -> None:
        self.on_event(
            Transition.of(  # the job's values have their types (made here, or read through its model)
                job_id=job.job_id,
                release=job.release,
                build=job.build,
                step=job.extra.get("step", 1),
                steps=job.extra.get("steps", 1),
                state=state,
            )
        )

    def _progress(self, make: Callable[[str, int, int], Progress], build: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` of ``build`` (``make``: the phase's event), unless the sink
        would drop it (:attr:`progress_due`): then no event is made (any thread)."""
        if self.progress_due(build, done, total):
            self.on_event(make(build, done, total))

    # --- handlers (one per state) -----------------------------------------------------------------
    async def _manifest(self, build: str) -> Manifest:
        """What ``build``'s image is, verified through the repository's TUF metadata (from a remote
        repository in a worker thread: the event loop stays responsive while it answers slowly).

        The target is verified once per request (this upgrader) and build; the step's later states
        check the image's bytes against that verified target again, not the metadata.

        Raises:
            VerificationError: the metadata failed a check, or the signed target is not for this
                server (``IMAGE_WRONG_TARGET``: another release than the catalogue's, or not this model).
            TransportError: the repository could not be reached.
        """
        known = self._manifests.get(build)
        if known is not None:
            return known
        args = (self.server.trust_dir, self.repo, build)
        if is_remote(self.repo):
            manifest = await asyncio.to_thread(self.server.verifier.release, *args)
        else:
            manifest = self.server.verifier.release(*args)
        model = self.server.identity().model
        expected = self._release_of(build)
        if expected is not None and manifest.version != expected:
            raise VerificationError(
                f"the image of {build} is signed for release {manifest.version}, not {expected}",
                reason=Reason.IMAGE_WRONG_TARGET,
            )
        if model not in manifest.models:
            raise VerificationError(
                f"the image of {build} is not signed for model {model}", reason=Reason.IMAGE_WRONG_TARGET
            )
        self._manifests[build] = manifest
        return manifest

    def _release_of(self, build: str) -> str | None:
        """The release the catalogue says ``build`` belongs to (a release build or a patch build)."""
        release = self.catalog.get(build)
        if release is not None:
            return release.version
        patch = self.catalog.patch(build)
        return patch.release if patch is not None else None

    def _staged_path(self, build: str) -> Path:
        found = self._staged.get(build)
        if found is None:
            found = self._staged[build] = self.server.update_area / f"{build}.img"
        return found

    async def _fetch(self, build: str) -> Path:
        manifest = await self._manifest(build)
        final = self._staged_path(build)
        if final.exists():
            try:
                self.server.verifier.image(final, manifest.size, manifest.sha256)
                return final
            except VerificationError as exc:  # a corrupted Update Area: discard, fetch again
                log.warning("staged_image_discarded", build=build, reason=exc.reason.value)
                final.unlink(missing_ok=True)
        self.server.update_area.mkdir(exist_ok=True)

        def progress(done: int, total: int) -> None:
            self._progress(Progress.download, build, done, total)

        return await fetch_image(
            image_location(self.repo, build),
            final.with_name(final.name + ".part"),
            size=manifest.size,
            sha256=manifest.sha256,
            clock=self.clock,
            limits=self.limits,
            progress=progress,
            cancel=self.cancel,
            disk=self.server.disk,
            staged=lambda path: self.server.verifier.image_verified(path, manifest.size, manifest.sha256),
        )

    async def _on_staging(self, job: Job) -> Event:
        await self._fetch(job.build)
        return Event.STAGED

    async def _on_staged(self, job: Job) -> Event:
        await self._fetch(job.build)  # verified again; a corrupted image is discarded and fetched again
        if self.cancel.is_set():
            raise CancelledUpgrade("the upgrade was cancelled before activation")
        return Event.ACTIVATE

    async def _on_preparing_db(self, job: Job) -> Event:
        src, dst = self.server.db_path(job.old_slot), self.server.db_path(job.new_slot)
        self.server.slot_dir(job.new_slot).mkdir(parents=True, exist_ok=True)
        self.server.disk.remove(self.server.slot_dir(job.new_slot) / "release.json")

        def progress(done: int, total: int) -> None:
            self._progress(Progress.database, job.build, done, total)

        # rule DB-1: a complete new build, verified; rule DB-2: a migrated (or plain) verified copy,
        # the original being the rollback copy
        make = database.rebuild if job.rebuilds_database else database.migrate_copy
        report = await self.server.offload(
            make, src, dst, job.db_schema, progress, disk=self.server.disk, verifier=self.server.verifier
        )
        await self.clock.sleep(report.rows / self.timing.db_rows_per_second)
        return Event.DB_READY

    async def _on_db_ready(self, job: Job) -> Event:
        path = self.server.db_path(job.new_slot)
        if not self.server.verifier.database_ready(path, job.db_schema):
            raise AllworxError(
                "the new database does not open in the expected schema", reason=Reason.DATABASE_VERIFY_FAILED
            )
        return Event.ACTIVATE

    async def _on_writing_slot(self, job: Job) -> Event:
        slot, staged = self.server.slot_dir(job.new_slot), self._staged_path(job.build)
        tmp = slot / ".image.img.tmp"
        manifest = await self._manifest(job.build)
        if staged.stat().st_size <= self.limits.chunk_size:  # one chunk: a hand-off costs more than the copy
            shutil.copyfile(staged, tmp)
        else:
            await self.server.offload(shutil.copyfile, staged, tmp)
        crashpoints.hit("slot.write")
        try:  # never write a corrupt image into a slot: what was copied is verified (a new file: hashed)
            self.server.verifier.image(tmp, manifest.size, manifest.sha256)
        except VerificationError:
            tmp.unlink(missing_ok=True)
            staged.unlink(missing_ok=True)  # a retry downloads it again
            raise
        fsync_file(tmp, self.server.disk)
        self.server.disk.replace(tmp, slot / "image.img")
        self.server.verifier.image_verified(slot / "image.img", manifest.size, manifest.sha256)
        self.server.disk.fsync_dir(slot)
        self.server.write_slot_info(job.new_slot, SlotInfo(job.release, job.build, job.db_schema))
        crashpoints.hit("slot.written")
        return Event.SLOT_WRITTEN

    async def _on_slot_written(self, job: Job) -> Event:
        return Event.ACTIVATE

    async def _on_switching(self, job: Job) -> Event:
        self.server.bootloader.try_slot(job.new_slot)
        return Event.SWITCHED

    async def _on_trial_boot(self, job: Job) -> Event:
        booted = self.server.bootloader.boot()  # the reboot: counts an attempt before booting
        await self.clock.sleep(self.timing.reboot)
        crashpoints.hit("boot.trial")
        if booted != job.new_slot:
            job.error = {
                "reason": Reason.BOOT_CHECK_FAILED.value,
                "message": "the new release failed to boot too many times; the bootloader fell back",
            }
            return Event.BOOT_FAILED
        await self._boot_check(job)
        return Event.BOOT_OK

    async def _boot_check(self, job: Job) -> None:
        """The release's services are up, the database opens in its schema, the version matches."""
        info = self.server.slot_info(job.new_slot)
        if info is None or info.build != job.build:
            raise AllworxError(
                f"slot {job.new_slot} does not hold {job.build}", reason=Reason.BOOT_CHECK_FAILED
            )
        manifest = await self._manifest(job.build)
        self.server.verifier.image(
            self.server.slot_dir(job.new_slot) / "image.img", manifest.size, manifest.sha256
        )
        if not database.check_opens(self.server.db_path(job.new_slot), job.db_schema):
            raise AllworxError(
                "the database does not open in the release's schema", reason=Reason.BOOT_CHECK_FAILED
            )

    async def _on_committing(self, job: Job) -> Event:
        try:
            self.server.bootloader.commit()  # the commit point
        except (AllworxError, OSError):
            if self._past_commit(job):  # the rename landed; only what followed it failed
                return Event.COMMITTED
            raise
        return Event.COMMITTED

    async def _on_rolling_back(self, job: Job) -> Event:
        crashpoints.hit("rollback")
        self.server.bootloader.rollback()
        if job.new_slot in SLOTS and job.new_slot != self.server.active_slot():
            self.server.disk.remove(self.server.slot_dir(job.new_slot) / "release.json")
        return Event.ROLLED_BACK


_HANDLERS = {
    State.STAGING: Upgrader._on_staging,
    State.STAGED: Upgrader._on_staged,
    State.PREPARING_DB: Upgrader._on_preparing_db,
    State.DB_READY: Upgrader._on_db_ready,
    State.WRITING_SLOT: Upgrader._on_writing_slot,
    State.SLOT_WRITTEN: Upgrader._on_slot_written,
    State.SWITCHING: Upgrader._on_switching,
    State.TRIAL_BOOT: Upgrader._on_trial_boot,
    State.COMMITTING: Upgrader._on_committing,
    State.ROLLING_BACK: Upgrader._on_rolling_back,
}
