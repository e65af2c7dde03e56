"""The campaign controller: the MQTT shell around the pure :class:`~fleet.campaign.model.Campaign`.

It talks only MQTT (through :class:`fleet.client.FleetClient`), so it drives virtual and lab
servers alike. Topics (besides each server's own, docs/mqtt.md):

- ``allworx/campaigns/{id}/status`` (retained, QoS 1): the whole campaign state, republished at
  most every ``publish_interval`` seconds and at the end; a restarted controller resumes from it;
- ``allworx/campaigns/{id}/control`` (retained, QoS 1): the operator's latest request
  (``pause``/``resume``/``abort``), signed with the operator key; each request carries a nonce and
  is applied once (the nonce is kept in the status).

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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from agent import crypto
from agent.clock import Clock
from agent.mqtt.connection import Inbound
from agent.mqtt.messages import StateDocument
from common.errors import AllworxError, BrokerError
from fleet.campaign import setup
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


def check_control(payload: bytes, public: bytes, campaign_id: str) -> dict[str, Any] | None:
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
        self.states: dict[str, dict[str, Any]] = {}  # serial -> retained state (validated)
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
            return server_of(message.topic) is not None or message.topic == control_topic(campaign_id)

        with self.client.watch(relevant) as queue:
            self._inbox = queue
            for topic in ("allworx/+/+/state", "allworx/+/+/availability", control_topic(campaign_id)):
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
            document = checked.wire()  # the campaign reads the JSON form
            self.states[serial] = document
            if campaign is not None:
                self._on_state(campaign, serial, document)

    def _on_state(self, campaign: Campaign, serial: str, document: dict[str, Any]) -> None:
        try:
            state = ServerState.parse(document)
        except ValueError as exc:
            log.warning("campaign_state_unreadable", serial=serial, error=str(exc))
            return
        campaign.on_state(serial, state, self.clock.now())

    def _skip(self, invalid: Invalid) -> None:
        """A retained document that does not validate: left out, logged once, reported."""
        if self.invalid.get(invalid.topic) != invalid.reason:
            log.warning("retained_document_invalid", topic=invalid.topic, reason=invalid.reason)
        self.invalid[invalid.topic] = invalid.reason

    def _control(self, campaign: Campaign, payload: bytes) -> None:
        request = check_control(payload, self.operator.public, campaign.spec.campaign_id)
        if request is None or request["nonce"] in self._seen_controls:
            return
        self._seen_controls.add(request["nonce"])
        controls = campaign.log
        if any(e.get("nonce") == request["nonce"] for e in controls):
            return  # applied before a restart
        now = self.clock.now()
        campaign.note(now, "operator", action=request["action"], nonce=request["nonce"])
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
        plans: dict[str, dict[str, Any]] = {}

        async def ask(serial: str) -> None:
            doc = scope[serial]
            async with self._limit:
                try:
                    reply = await self.client.send(
                        str(doc["site"]), serial, "plan", {"to": wanted[serial]}, timeout=self.command_timeout
                    )
                except (TimeoutError, BrokerError):
                    online.discard(serial)
                    return
            if reply.get("status") == "accepted" and isinstance(reply.get("result"), dict):
                plans[serial] = reply["result"]
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
        await self.publish(campaign)
        self.on_change(campaign)
        return campaign

    async def _resend_running(self, campaign: Campaign) -> None:
        """After a restart: a server marked running whose state shows no new result gets the command again."""
        for member in campaign.members.values():
            doc = self.states.get(member.serial)
            if member.status is MemberStatus.RUNNING and doc is not None:
                self._on_state(campaign, member.serial, doc)
                if member.status is MemberStatus.RUNNING and doc.get("state") == "idle":
                    self._send(campaign, (Command.UPGRADE, member.serial, member.target))

    def _send(self, campaign: Campaign, action: Action) -> None:
        task = asyncio.get_running_loop().create_task(self._command(campaign, *action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, campaign: Campaign, name: Command, serial: str, target: str) -> None:
        member = campaign.members[serial]
        args = {} if name is Command.CANCEL else {"to": target}
        async with self._limit:
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

    async def publish(self, campaign: Campaign) -> None:
        """Publish the retained campaign state."""
        payload = json.dumps(campaign.to_dict(), separators=(",", ":")).encode()
        await self.client.link.publish(status_topic(campaign.spec.campaign_id), payload, qos=1, retain=True)


async def load(client: FleetClient, campaign_id: str, settle: float = 1.0) -> Campaign | None:
    """Read a campaign's retained state (None when there is none).

    Raises:
        AllworxError: the retained document is not a campaign state (it is never guessed at).
        BrokerError: the connection failed.
    """
    topic = status_topic(campaign_id)
    with client.watch(lambda m: m.topic == topic) as queue:
        await client.link.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(settle):
                message = await queue.get()
        except TimeoutError:
            return None
    if not message.payload:
        return None
    try:
        return Campaign.from_dict(json.loads(message.payload))
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise AllworxError(
            f"the retained state of campaign {campaign_id!r} ({topic}) does not validate: {exc!r}"
        ) from exc


def summary(campaign: Campaign) -> Mapping[str, Any]:
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
