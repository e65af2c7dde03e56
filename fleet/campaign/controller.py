"""The campaign controller: the MQTT shell around the pure :class:`~fleet.campaign.model.Campaign`.

It talks only MQTT (through :class:`fleet.client.FleetClient`), so it drives virtual and lab
servers alike. Topics (besides each server's own, docs/mqtt.md):

- ``allworx/campaigns/{id}/status`` (retained, QoS 1): the bounded summary
  (:meth:`~fleet.campaign.model.Campaign.summary_dict`), republished at most every
  ``publish_interval`` seconds and at the end;
- ``allworx/campaigns/{id}/servers/{serial}`` (retained, QoS 1): one member's outcome, published
  when its status or phase changed, its progress alone (steps, release) at most every
  ``progress_interval`` seconds, and every member as it is at the end;
- ``allworx/campaigns/{id}/log`` (retained, QoS 1): the campaign's events, operator requests among
  them (who, wall clock, campaign clock), in order;
- ``allworx/campaigns/{id}/state`` (retained, QoS 1): what only the controller reads to resume
  (spec, phases, pause, rate tokens), without the members; a restarted controller rebuilds the
  campaign from it, the log and the ``servers/+`` topics (:func:`load`);
- ``allworx/campaigns/{id}/control`` (retained, QoS 1): the operator's latest request
  (``pause``/``resume``/``abort``), signed with a trusted operator key; each request carries a
  nonce and is applied once (the nonce is kept in the log).

Commands to the campaign's servers signed by a trusted operator and not sent by the controller
(``allworx-fleet send``) are recorded in the log too.

Invariants: every retained server document is checked at the edge (:func:`fleet.client.check_state`)
and one that does not validate is skipped and kept in :attr:`Controller.invalid`, never applied;
every incoming message is applied to the model before the next decision; every
command sent has a bounded wait (a lost one makes the server ``offline``); the controller never
waits on one server to serve another (each command is its own task, at most ``concurrency`` at once).
The servers' JSON becomes the model's typed inputs here (:mod:`fleet.campaign.machine`): a state
document or reply the model cannot read is logged and never guessed at (an unreadable reply counts
as none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from agent import crypto
from agent.clock import Clock
from agent.documents import PlanReport
from agent.fileio import read_bounded
from agent.mqtt.connection import Inbound
from agent.mqtt.messages import StateDocument
from common.errors import AllworxError, BrokerError, StoreError
from common.jsonedge import JsonObject  # signed operator requests as verified, retained documents as read
from fleet.campaign import setup
from fleet.campaign.documents import StatusDocument
from fleet.campaign.machine import CommandReply, MemberStatus, ServerState
from fleet.campaign.model import Action, Campaign, Command
from fleet.campaign.spec import CampaignSpec
from fleet.client import FleetClient, Invalid, check_availability, check_state, server_topic
from fleet.operator import OperatorKey
from releases.catalog import Catalog, default_catalog

log = structlog.get_logger("fleet.campaign")
CAMPAIGNS = "allworx/campaigns"
Listener = Callable[[Campaign], None]


def status_topic(campaign_id: str) -> str:
    """The retained campaign state."""
    return f"{CAMPAIGNS}/{campaign_id}/status"


def state_topic(campaign_id: str) -> str:
    """The retained campaign core the controller resumes from."""
    return f"{CAMPAIGNS}/{campaign_id}/state"


def log_topic(campaign_id: str) -> str:
    """The retained campaign log (events and operator requests)."""
    return f"{CAMPAIGNS}/{campaign_id}/log"


PROGRESS_INTERVAL = 30.0  # seconds: a running member's progress alone is republished at most this often


def member_due(
    last: tuple[tuple[str, int], float] | None, outcome: tuple[str, int], now: float, interval: float
) -> bool:
    """Whether a member document that changed goes out now: its first, a new status or phase
    (``outcome``), or progress alone once ``interval`` seconds passed since ``last`` went out."""
    return last is None or last[0] != outcome or now - last[1] >= interval


def member_topic(campaign_id: str, serial: str) -> str:
    """The retained outcome of one server of a campaign."""
    return f"{CAMPAIGNS}/{campaign_id}/servers/{serial}"


def control_topic(campaign_id: str) -> str:
    """The retained operator request."""
    return f"{CAMPAIGNS}/{campaign_id}/control"


def server_of(topic: str) -> tuple[str, str, str] | None:
    """(site, serial, kind) of a server topic ``allworx/{site}/{serial}/{state|availability}``."""
    return server_topic(topic)


def sign_control(operator: OperatorKey, campaign_id: str, action: str) -> bytes:
    """A signed operator request for a campaign."""
    document = {
        "campaign_id": campaign_id,
        "action": action,
        "nonce": secrets.token_hex(8),
        "at": datetime.now(UTC).isoformat(),
        "key_id": operator.key_id,
    }
    document["signature"] = crypto.sign(operator.private, crypto.canonical_json(document)).hex()
    return json.dumps(document).encode()


def check_control(payload: bytes, public: bytes, campaign_id: str) -> JsonObject | None:
    """The request if it is well formed, for this campaign, and signed by ``public``; else None."""
    try:
        document = dict(json.loads(payload))
        signature = bytes.fromhex(str(document.pop("signature")))
    except (ValueError, KeyError, TypeError):
        return None
    if document.get("campaign_id") != campaign_id or document.get("action") not in (
        "pause",
        "resume",
        "abort",
    ):
        return None
    return document if crypto.verify(public, crypto.canonical_json(document), signature) else None


def _signed_by(payload: bytes, trusted: Mapping[str, bytes]) -> JsonObject | None:
    """The JSON document if a key of ``trusted`` (by its ``key_id``) signed it; else None."""
    try:
        document = dict(json.loads(payload))
        signature = bytes.fromhex(str(document.pop("signature")))
        public = trusted[str(document.get("key_id"))]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return document if crypto.verify(public, crypto.canonical_json(document), signature) else None


def load_trusted(folder: Path) -> dict[str, bytes]:
    """The operator public keys (``*.pub``, hex) of a folder, by key id (a server's ``trust/operators``).

    Raises:
        StoreError: a file is not an operator public key.
    """
    trusted: dict[str, bytes] = {}
    for path in sorted(folder.glob("*.pub")):
        try:
            public = crypto.decode_hex(read_bounded(path).decode(), crypto.KEY_SIZE)
        except (OSError, StoreError, UnicodeDecodeError, ValueError) as exc:
            raise StoreError(f"{path}: not an operator public key (hex Ed25519): {exc}") from exc
        trusted[crypto.fingerprint(public)] = public
    return trusted


class Controller:
    """Runs one campaign over one :class:`FleetClient` connection."""

    def __init__(
        self,
        client: FleetClient,
        clock: Clock,
        *,
        catalog: Catalog | None = None,
        command_timeout: float = 20.0,
        concurrency: int = 256,
        tick: float = 0.05,
        on_change: Listener | None = None,
        scope: set[str] | None = None,
        trusted: Mapping[str, bytes] | None = None,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        if client.operator is None:
            raise RuntimeError("the campaign controller needs an operator key")
        self.client = client
        self.operator = client.operator
        self.clock = clock
        self.catalog = catalog or default_catalog()
        self.command_timeout = command_timeout
        self.tick = tick
        self.on_change = on_change or (lambda _c: None)
        self.scope = scope  # the serials of the campaign (None: every server on the broker)
        # the operators whose requests are applied and recorded (always the controller's own)
        self.trusted = {**(trusted or {}), self.operator.key_id: self.operator.public}
        self._own: Counter[tuple[str, str]] = Counter()  # (serial, command) sent, echo not yet heard
        self._published: dict[str, bytes] = {}  # retained topic -> the payload last published there
        self.progress_interval = progress_interval
        # member topic -> (status and phase, loop time) of the member document last published there
        self._outcomes: dict[str, tuple[tuple[str, int], float]] = {}
        self.states: dict[str, StateDocument] = {}  # serial -> retained state (validated)
        self.online: dict[str, bool] = {}
        self.invalid: dict[str, str] = {}  # topic -> why its retained document was skipped
        self._inbox: asyncio.Queue[Inbound] | None = None
        self._limit = asyncio.Semaphore(concurrency)
        self._seen_controls: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the fleet's retained state -------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def listening(self, campaign_id: str) -> Any:
        """Subscribe to every server's state and availability, and to the campaign's control topic."""

        def relevant(message: Inbound) -> bool:
            return (
                server_of(message.topic) is not None
                or message.topic == control_topic(campaign_id)
                or _command_of(message.topic) is not None
            )

        topics = ["allworx/+/+/state", "allworx/+/+/availability", "allworx/+/+/cmd/+"]
        topics.append(control_topic(campaign_id))
        with self.client.watch(relevant) as queue:
            self._inbox = queue
            for topic in topics:
                await self.client.link.subscribe(topic, qos=1)
            yield
            self._inbox = None

    async def settle(self, expected: int | None = None, quiet: float = 1.0, limit: float = 60.0) -> None:
        """Read retained states until ``expected`` servers reported (or ``quiet`` s of silence)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            if expected is not None and len(self.states) >= expected and len(self.online) >= expected:
                break
            try:
                async with asyncio.timeout(quiet):
                    self._absorb(await self._next())
            except TimeoutError:
                if expected is None:
                    break
        self._drain()

    async def _next(self) -> Inbound:
        if self._inbox is None:
            raise RuntimeError("not listening")
        return await self._inbox.get()

    def _drain(self, campaign: Campaign | None = None) -> None:
        while self._inbox is not None and not self._inbox.empty():
            self._absorb(self._inbox.get_nowait(), campaign)

    def _absorb(self, message: Inbound, campaign: Campaign | None = None) -> None:
        command = _command_of(message.topic)
        if command is not None:
            self._heard_command(campaign, *command, message.payload)
            return
        where = server_of(message.topic)
        if where is None:
            if campaign is not None and message.topic == control_topic(campaign.spec.campaign_id):
                self._control(campaign, message.payload)
            elif not message.topic.startswith(f"{CAMPAIGNS}/"):  # a server topic with levels out of range
                self._skip(Invalid(message.topic, "site or serial outside the topic alphabet"))
            return
        _, serial, kind = where
        if self.scope is not None and serial not in self.scope:
            return
        checked: StateDocument | bool | Invalid | None = None
        if kind == "availability":
            checked = check_availability(message.topic, message.payload)
        elif kind == "state" and message.payload:
            checked = check_state(message.topic, message.payload)
        if isinstance(checked, Invalid):
            self._skip(checked)
        elif isinstance(checked, bool):
            self.online[serial] = checked
        elif checked is not None:
            self.invalid.pop(message.topic, None)
            self.states[serial] = checked
            if campaign is not None:
                self._on_state(campaign, serial, checked)

    def _on_state(self, campaign: Campaign, serial: str, document: StateDocument) -> None:
        try:
            state = ServerState.parse(document.wire())  # the campaign reads the JSON form
        except ValueError as exc:
            log.warning("campaign_state_unreadable", serial=serial, error=str(exc))
            return
        campaign.on_state(serial, state, self.clock.now())

    def _skip(self, invalid: Invalid) -> None:
        """A retained document that does not validate: left out, logged once, reported."""
        if self.invalid.get(invalid.topic) != invalid.reason:
            log.warning("retained_document_invalid", topic=invalid.topic, reason=invalid.reason)
        self.invalid[invalid.topic] = invalid.reason

    def _heard_command(self, campaign: Campaign | None, serial: str, name: str, payload: bytes) -> None:
        """A command on a server's ``cmd/{name}``: the controller's own echo, or an operator's to record."""
        if self._own[(serial, name)] > 0:
            self._own[(serial, name)] -= 1
            return
        if campaign is None or serial not in campaign.members:
            return
        document = _signed_by(payload, self.trusted)
        if document is None or any(e.get("nonce") == document.get("nonce") for e in campaign.log):
            return  # not from a trusted operator (the server refuses it too), or recorded before
        campaign.note(
            self.clock.now(),
            "operator",
            action=f"send {name}",
            serial=serial,
            key_id=document["key_id"],
            wall=datetime.now(UTC).isoformat(),
            nonce=document.get("nonce"),
        )

    def _control(self, campaign: Campaign, payload: bytes) -> None:
        request = _signed_by(payload, self.trusted)
        if request is not None:
            request = check_control(payload, self.trusted[request["key_id"]], campaign.spec.campaign_id)
        if request is None or request["nonce"] in self._seen_controls:
            return
        self._seen_controls.add(request["nonce"])
        controls = campaign.log
        if any(e.get("nonce") == request["nonce"] for e in controls):
            return  # applied before a restart
        now = self.clock.now()
        campaign.note(
            now,
            "operator",
            action=request["action"],
            key_id=request["key_id"],
            wall=datetime.now(UTC).isoformat(),
            nonce=request["nonce"],
        )
        match request["action"]:
            case "pause":
                campaign.pause(now)
            case "resume":
                campaign.resume(now)
            case "abort":
                for action in campaign.cancel(now):
                    self._send(campaign, action)

    # --- creating ----------------------------------------------------------------------------
    async def prepare(self, spec: CampaignSpec, serials: set[str] | None = None) -> Campaign:
        """Ask every online server in scope (``serials``, and the spec's members if it names them)
        for its plan and build the campaign (nothing changes)."""
        members = set(spec.members) or None
        scope = {
            s: d
            for s, d in self.states.items()
            if (serials is None or s in serials) and (members is None or s in members)
        }
        online = {s for s in scope if self.online.get(s, False)}
        wanted = setup.targets(spec, scope, self.catalog, self.clock.now())
        plans: dict[str, PlanReport] = {}

        async def ask(serial: str) -> None:
            doc = scope[serial]
            async with self._limit:
                self._own[(serial, "plan")] += 1
                try:
                    answer = await self.client.request(
                        doc.site, serial, "plan", {"to": wanted[serial]}, timeout=self.command_timeout
                    )
                except (TimeoutError, BrokerError):
                    online.discard(serial)
                    return
            if answer.reply.status == "accepted" and isinstance(answer.reply.result, PlanReport):
                plans[serial] = answer.reply.result
            else:
                online.discard(serial)

        async with asyncio.TaskGroup() as tasks:
            for serial in sorted(online):
                tasks.create_task(ask(serial))
        return setup.create(spec, scope, online, plans, catalog=self.catalog, now=self.clock.now())

    # --- running -----------------------------------------------------------------------------
    async def run(self, campaign: Campaign, publish_interval: float = 0.5) -> Campaign:
        """Drive ``campaign`` to its end, publishing its retained state; return it."""
        loop = asyncio.get_running_loop()
        last_publish, last_decide = 0.0, -self.tick
        interval = max(publish_interval, len(campaign.members) / 1000)  # the document grows with the fleet
        await self._resend_running(campaign)
        while True:
            self._drain(campaign)
            if loop.time() - last_decide >= self.tick:  # once a tick: a decision walks every member
                for action in campaign.decide(self.clock.now()):
                    self._send(campaign, action)
                last_decide = loop.time()
            if loop.time() - last_publish >= interval:
                await self.publish(campaign)
                last_publish = loop.time()
                self.on_change(campaign)
            if campaign.finished and not self._tasks:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, last_decide + self.tick - loop.time())):
                    self._absorb(await self._next(), campaign)
        await self.publish(campaign, final=True)
        self.on_change(campaign)
        return campaign

    async def _resend_running(self, campaign: Campaign) -> None:
        """After a restart: a server marked running whose state shows no new result gets the command again."""
        for member in campaign.members.values():
            doc = self.states.get(member.serial)
            if member.status is MemberStatus.RUNNING and doc is not None:
                self._on_state(campaign, member.serial, doc)
                if member.status is MemberStatus.RUNNING and doc.state == "idle":
                    self._send(campaign, (Command.UPGRADE, member.serial, member.target))

    def _send(self, campaign: Campaign, action: Action) -> None:
        task = asyncio.get_running_loop().create_task(self._command(campaign, *action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, campaign: Campaign, name: Command, serial: str, target: str) -> None:
        member = campaign.members[serial]
        args = {} if name is Command.CANCEL else {"to": target}
        async with self._limit:
            self._own[(serial, name.value)] += 1
            try:
                raw = await self.client.send(
                    member.site, serial, name.value, args, timeout=self.command_timeout
                )
            except (TimeoutError, BrokerError) as exc:
                log.warning("campaign_command_lost", serial=serial, command=name.value, error=str(exc))
                campaign.on_lost(serial, name, self.clock.now())
                return
        if raw.get("reason") == "UPGRADE_IN_PROGRESS":
            return  # a resent command found the upgrade still running: its result will come
        try:
            reply = CommandReply.parse(raw)
        except ValueError as exc:
            log.warning("campaign_reply_unreadable", serial=serial, command=name.value, error=str(exc))
            campaign.on_lost(serial, name, self.clock.now())
            return
        campaign.on_reply(serial, name, reply, self.clock.now())

    async def publish(self, campaign: Campaign, *, final: bool = False) -> None:
        """Publish the retained topics that changed: members, state and log first, the summary last.

        A member whose status or phase changed is published at once; one whose progress alone
        changed (its steps, release, last report) at most every ``progress_interval`` seconds, and
        every member as it is at the end (``final``).
        """
        cid = campaign.spec.campaign_id
        now = asyncio.get_running_loop().time()
        for member in campaign.members.values():
            topic = member_topic(cid, member.serial)
            payload = _compact(member.as_dict())
            if self._published.get(topic) == payload:
                continue
            outcome = (member.status.value, member.phase)
            if not final and not member_due(self._outcomes.get(topic), outcome, now, self.progress_interval):
                continue
            await self.client.link.publish(topic, payload, qos=1, retain=True)
            self._published[topic] = payload
            self._outcomes[topic] = (outcome, now)
        for topic, document in ((state_topic(cid), campaign.core_dict()), (log_topic(cid), campaign.log)):
            payload = _compact(document)
            if self._published.get(topic) != payload:
                await self.client.link.publish(topic, payload, qos=1, retain=True)
                self._published[topic] = payload
        summary_doc = campaign.summary_dict(self.clock.now())
        await self.client.link.publish(status_topic(cid), _compact(summary_doc), qos=1, retain=True)


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _command_of(topic: str) -> tuple[str, str] | None:
    """(serial, command) of a command topic ``allworx/{site}/{serial}/cmd/{name}``."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "allworx" and parts[3] == "cmd" and parts[1] != "campaigns":
        return parts[2], parts[4]
    return None


async def read_retained(client: FleetClient, topics: str, settle: float = 1.0) -> dict[str, bytes]:
    """Every retained message on ``topics`` (a filter), by topic, read until ``settle`` s of silence.

    Raises:
        BrokerError: the connection failed.
    """
    prefix = topics.split("+", maxsplit=1)[0].split("#", maxsplit=1)[0]
    return await client.retained(topics, lambda m: m.topic.startswith(prefix) and m.retain, settle)


async def load_documents(client: FleetClient, campaign_id: str, settle: float = 1.0) -> JsonObject:
    """A campaign's retained documents: ``status``, ``state``, ``log`` and ``servers`` (serial -> member).

    Raises:
        AllworxError: a retained document is not JSON.
        BrokerError: the connection failed.
    """
    base = f"{CAMPAIGNS}/{campaign_id}/"
    found = await read_retained(client, f"{base}#", settle)
    out: JsonObject = {"servers": {}}
    for topic, payload in found.items():
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise AllworxError(f"the retained {topic} of campaign {campaign_id!r}: not JSON: {exc}") from exc
        rest = topic[len(base) :]
        if rest.startswith("servers/"):
            out["servers"][rest.split("/", 1)[1]] = document
        elif rest in ("status", "state", "log"):
            out[rest] = document
    return out


async def load(client: FleetClient, campaign_id: str, settle: float = 1.0) -> Campaign | None:
    """Rebuild a campaign from its retained ``state``, ``log`` and ``servers/+`` (None when there is none).

    Raises:
        AllworxError: the retained documents are not a campaign's (they are never guessed at).
        BrokerError: the connection failed.
    """
    found = await load_documents(client, campaign_id, settle)
    if "state" not in found:
        return None
    expected = (found.get("status") or {}).get("members")
    try:
        members, log_entries = list(found["servers"].values()), list(found.get("log", []))
        campaign = Campaign.from_parts(found["state"], members, log_entries)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise AllworxError(
            f"the retained state of campaign {campaign_id!r} ({state_topic(campaign_id)}) does not validate: "
            f"{exc!r}"
        ) from exc
    phased = {s for phase in campaign.phases for s in phase}
    missing = phased - set(campaign.members)
    if missing or (isinstance(expected, int) and expected > len(campaign.members)):
        raise AllworxError(
            f"campaign {campaign_id!r}: {len(campaign.members)} member topics retained, "
            f"{expected if isinstance(expected, int) else len(phased)} expected"
        )
    return campaign


def summary(campaign: Campaign) -> StatusDocument:
    """A short JSON summary: status, phase, counts and refusals."""
    return {
        "campaign_id": campaign.spec.campaign_id,
        "status": campaign.status.value,
        "phase": campaign.phase,
        "phases": len(campaign.phases),
        "paused_reason": campaign.paused_reason.value if campaign.paused_reason else None,
        "counts": campaign.counts(),
        "refusals": campaign.refusals(),
        "needing_keys": campaign.needing_keys,
    }
