"""Home Assistant MQTT discovery: every document uses only the keys Home Assistant documents."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

from agent.mqtt.discovery import Discovery, values
from agent.mqtt.report import state_document
from agent.mqtt.topics import ServerTopics
from simulator.server import ServerSpec, create_server

# Home Assistant's documented configuration variables (MQTT Update, MQTT Sensor, and the options
# every MQTT entity shares), and the device map's keys.
ENTITY_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device",
    "default_entity_id", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id", "payload_available",
    "payload_not_available", "platform", "qos", "unique_id",
}  # fmt: skip
UPDATE_KEYS = ENTITY_KEYS | {
    "command_topic", "device_class", "display_precision", "latest_version_template", "latest_version_topic",
    "payload_install", "release_summary", "release_url", "retain", "state_topic", "title", "value_template",
}  # fmt: skip
SENSOR_KEYS = ENTITY_KEYS | {
    "device_class", "expire_after", "force_update", "last_reset_value_template", "options", "state_class",
    "state_topic", "suggested_display_precision", "unit_of_measurement", "value_template",
}  # fmt: skip
SENSOR_REQUIRED = {"state_topic"}
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
    "name", "serial_number", "suggested_area", "sw_version", "via_device",
}  # fmt: skip
UPDATE_STATE_KEYS = {
    "installed_version", "latest_version", "title", "release_summary", "release_url", "entity_picture",
    "in_progress", "update_percentage",
}  # fmt: skip
UPDATE_DEVICE_CLASSES = {"firmware"}
SENSOR_DEVICE_CLASSES_USED = {"date"}  # a subset of the documented sensor device classes
TOPIC = re.compile(r"^homeassistant/(update|sensor)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")


def _discovery() -> Discovery:
    return Discovery(ServerTopics("east", "AWX0000C0FFEE"))


def test_every_discovery_document_uses_only_documented_keys() -> None:
    """Each config has only documented keys, the required ones, a valid device and a discovery topic."""
    configs = _discovery().configs("6x")
    assert sorted(topic.split("/")[1] for topic, _ in configs) == ["sensor", "sensor", "update"]
    for topic, doc in configs:
        component = topic.split("/")[1]
        assert TOPIC.match(topic), topic
        allowed = UPDATE_KEYS if component == "update" else SENSOR_KEYS
        assert set(doc) <= allowed, set(doc) - allowed
        if component == "sensor":
            assert doc.keys() >= SENSOR_REQUIRED
            assert doc.get("device_class", "date") in SENSOR_DEVICE_CLASSES_USED
        else:
            assert doc["device_class"] in UPDATE_DEVICE_CLASSES
            assert "command_topic" not in doc  # no install button: installs are signed commands
        assert set(doc["device"]) <= DEVICE_KEYS
        assert doc["device"]["identifiers"]
        assert doc["availability_topic"] == "allworx/east/AWX0000C0FFEE/availability"
        assert (doc["payload_available"], doc["payload_not_available"]) == ("online", "offline")
    assert len({doc["unique_id"] for _, doc in configs}) == 3


def test_values_feed_every_template_and_the_update_state(tmp_path: Path) -> None:
    """The values hold every field the templates read; the update state uses documented keys only."""
    made = create_server(
        tmp_path / "s", ServerSpec(model="6x", release="7.6", shipped=date(2013, 11, 1), site="east")
    )
    now = datetime(2014, 10, 1, tzinfo=UTC)
    state = state_document(made, "east", now)
    doc = values(state, "7.7", now=now)
    assert set(doc["update"]) <= UPDATE_STATE_KEYS
    assert doc["update"]["installed_version"] == "7.6"
    assert doc["update"]["latest_version"] == "7.7"
    assert doc["update"]["in_progress"] is False
    for _, config in _discovery().configs("6x"):
        for template in (config.get("value_template", ""), config.get("json_attributes_template", "")):
            for field in re.findall(r"value_json\.([a-z_]+)", template):
                assert field in doc, field


def test_nothing_reachable_says_so(tmp_path: Path) -> None:
    """A server that can reach nothing newer reports its own release as the latest."""
    made = create_server(tmp_path / "s", ServerSpec(model="6x", release="7.0", shipped=date(2009, 6, 1)))
    state = state_document(made, "default", datetime(2016, 1, 1, tzinfo=UTC))
    doc = values(state, "7.0", now=datetime(2016, 1, 1, tzinfo=UTC))
    assert doc["update"]["latest_version"] == doc["update"]["installed_version"]
    assert "No newer release" in doc["update"]["release_summary"]
    assert doc["maintenance_key_expires"] is None
