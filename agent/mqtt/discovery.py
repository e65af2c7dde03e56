"""Home Assistant MQTT discovery (opt-in, ``allworx-agent run --ha-discovery``).

Each server appears in Home Assistant as a device (serial, model, site) with three entities:
an ``update`` entity (installed release, the newest release its model and keys can reach, whether
an upgrade is in progress, a release summary), a ``sensor`` for the maintenance key's expiry and a
``sensor`` for the last upgrade result. Their configs are retained under
``{prefix}/{component}/allworx_{serial}/{object_id}/config`` (Home Assistant's discovery topic),
and their values come from one retained JSON document on ``allworx/{site}/{serial}/ha``. All
three use the agent's ``availability`` topic (``online`` / ``offline``).

No entity has a ``command_topic``: an update is installed only by a signed operator command, so
Home Assistant shows no install button.

Invariant: this module builds documents only; the daemon publishes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from typing_extensions import TypedDict  # pydantic reads a TypedDict from here before Python 3.12

from agent.machine import State
from agent.mqtt.messages import StateDocument
from agent.mqtt.topics import ServerTopics
from agent.planner import plan
from agent.store import ServerDir
from releases.catalog import Catalog, version_key

DEFAULT_PREFIX = "homeassistant"
MANUFACTURER = "Allworx"
RESTING_STATES = frozenset({State.IDLE, State.STAGED, State.COMMITTED, State.ROLLED_BACK})  # none under way


class HaDevice(TypedDict):
    """The device every entity of one server belongs to (Home Assistant's ``device``)."""

    identifiers: list[str]
    name: str
    manufacturer: str
    model: str
    serial_number: str
    suggested_area: str


class HaShared(TypedDict):
    """What every entity's discovery config of one server carries."""

    availability_topic: str
    payload_available: str
    payload_not_available: str
    device: HaDevice
    state_topic: str
    qos: int


class _Entity(HaShared):
    name: str
    unique_id: str
    value_template: str


class HaSoftware(_Entity):
    """The ``update`` entity's discovery config."""

    device_class: str


class HaKeyExpiry(_Entity):
    """The maintenance key expiry sensor's discovery config (with the key's attributes)."""

    device_class: str
    json_attributes_topic: str
    json_attributes_template: str


class HaLastResult(_Entity):
    """The last upgrade result sensor's discovery config."""

    icon: str


HaEntity = HaSoftware | HaKeyExpiry | HaLastResult  # one entity's discovery config


class HaUpdate(TypedDict):
    """The ``update`` entity's value (Home Assistant's update entity JSON)."""

    installed_version: str
    latest_version: str
    title: str
    release_summary: str
    in_progress: bool


class HaKeyAttributes(TypedDict):
    """The maintenance key sensor's attributes."""

    valid: bool
    plan: str | None
    reason: str | None


class HaValues(TypedDict):
    """The retained document on :attr:`Discovery.values_topic` every entity reads its value from."""

    update: HaUpdate
    maintenance_key_expires: str | None
    maintenance_key: HaKeyAttributes
    last_result: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Discovery:
    """The discovery documents and value topic of one server."""

    topics: ServerTopics
    prefix: str = DEFAULT_PREFIX

    @property
    def node_id(self) -> str:
        """Home Assistant's node id: ``allworx_{serial}`` with only ``[A-Za-z0-9_-]``.

        The serial alone names the device (a server moved to another site stays the same device),
        and a locked-down broker grants each server the discovery topics of its own serial
        (simulator/lockdown.py): a serial is its user name there, a site is not.
        """
        raw = f"allworx_{self.topics.serial}"
        return "".join(c if c.isalnum() or c in "_-" else "_" for c in raw)

    @property
    def values_topic(self) -> str:
        """The retained JSON document the entities read their values from."""
        return f"{self.topics.base}/ha"

    def config_topic(self, component: str, object_id: str) -> str:
        """``{prefix}/{component}/{node_id}/{object_id}/config``."""
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"

    def configs(self, model: str) -> list[tuple[str, HaEntity]]:
        """Every entity's discovery config, as (topic, document) pairs to publish retained."""
        device: HaDevice = {
            "identifiers": [self.node_id],
            "name": f"Allworx {self.topics.serial}",
            "manufacturer": MANUFACTURER,
            "model": model,
            "serial_number": self.topics.serial,
            "suggested_area": self.topics.site,
        }
        common: HaShared = {
            "availability_topic": self.topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "state_topic": self.values_topic,
            "qos": 1,
        }
        update: HaSoftware = {
            **common,
            "name": "System software",
            "unique_id": f"{self.node_id}_software",
            "device_class": "firmware",
            "value_template": "{{ value_json.update | tojson }}",
        }
        expiry: HaKeyExpiry = {
            **common,
            "name": "Maintenance key expires",
            "unique_id": f"{self.node_id}_maintenance_key_expires",
            "device_class": "date",
            "value_template": "{{ value_json.maintenance_key_expires }}",
            "json_attributes_topic": self.values_topic,
            "json_attributes_template": "{{ value_json.maintenance_key | tojson }}",
        }
        result: HaLastResult = {
            **common,
            "name": "Last upgrade result",
            "unique_id": f"{self.node_id}_last_result",
            "icon": "mdi:update",
            "value_template": "{{ value_json.last_result }}",
        }
        return [
            (self.config_topic("update", "software"), update),
            (self.config_topic("sensor", "maintenance_key_expires"), expiry),
            (self.config_topic("sensor", "last_result"), result),
        ]


def reachable(catalog: Catalog, server: ServerDir, now: datetime) -> str:
    """The newest release the server's model and keys can reach at ``now`` (the planner's end).

    Raises:
        StoreError: the server directory is unreadable.
    """
    facts = server.facts()
    try:
        newest = catalog.newest_for(facts.model, now.date()).version
    except KeyError:  # nothing published for the model yet
        return facts.release
    if version_key(newest) <= version_key(facts.release):
        return facts.release
    return plan(catalog, facts, server.key_checks(now), newest, now).final_release


def values(state: StateDocument, reachable: str, *, now: datetime) -> HaValues:
    """The document on :attr:`Discovery.values_topic` for ``state``.

    Args:
        state: the server's retained state.
        reachable: the newest release its model and keys can reach now (the planner's end).
        now: when the document is made.
    """
    key = state.maintenance_key
    last = state.last_result
    if last is None:
        outcome = "none"
    elif last.outcome == "succeeded" or last.reason is None:
        outcome = str(last.outcome)
    else:
        outcome = f"{last.outcome}: {last.reason}"
    summary = (
        f"Release {reachable} is reachable with the installed keys."
        if reachable != state.release
        else "No newer release is reachable with the installed keys."
    )
    return {
        "update": {
            "installed_version": state.release,
            "latest_version": reachable,
            "title": f"Allworx system software {reachable}",
            "release_summary": summary,
            "in_progress": state.state not in RESTING_STATES,
        },
        "maintenance_key_expires": key.expires.isoformat() if key and key.expires else None,
        "maintenance_key": {
            "valid": key.valid if key else False,
            "plan": key.plan if key else None,
            "reason": key.reason if key else None,
        },
        "last_result": outcome,
        "updated_at": now.isoformat(),
    }
