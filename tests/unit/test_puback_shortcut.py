"""The PUBACK shortcut hands only a well-formed PUBACK of success to ``on_publish``; anything else,
a malformed one too short to hold a message id among them, goes to paho's own handler."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt.client import MQTT_ERR_SUCCESS, MQTTv5

from agent.mqtt.connection import _fast_puback


class _Paho:
    """The few attributes of a paho client the shortcut reads, with paho's handler recorded."""

    def __init__(self, packet: bytes) -> None:
        self._protocol = MQTTv5
        self._in_packet: dict[str, Any] = {"packet": packet}
        self._out_message_mutex = _NoLock()
        self._out_messages = {7: object()}
        self.handled: list[str] = []
        self.published: list[int] = []

    def _handle_pubackcomp(self, cmd: str) -> int:
        self.handled.append(cmd)
        return MQTT_ERR_SUCCESS

    def _do_on_publish(self, mid: int, reason: Any, properties: Any) -> int:
        self.published.append(mid)
        return MQTT_ERR_SUCCESS


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("packet", [b"", b"\x00", b"\x00\x07\x87", b"\x00\x07\x00\x05"])
def test_a_short_failed_or_propertied_puback_goes_to_paho(packet: bytes) -> None:
    """A PUBACK shorter than a message id, one with a failure reason, or one with properties is
    paho's to decode (it answers a malformed one by closing the connection)."""
    paho = _Paho(packet)
    _fast_puback(paho)
    paho._handle_pubackcomp("PUBACK")  # type: ignore[call-arg]  # reason: the shortcut takes cmd alone
    assert paho.handled == ["PUBACK"]
    assert paho.published == []


@pytest.mark.parametrize("packet", [b"\x00\x07", b"\x00\x07\x00", b"\x00\x07\x10\x00"])
def test_a_plain_puback_of_success_reaches_on_publish(packet: bytes) -> None:
    """A PUBACK of success without properties reaches ``on_publish`` without paho decoding it."""
    paho = _Paho(packet)
    _fast_puback(paho)
    paho._handle_pubackcomp("PUBACK")  # type: ignore[call-arg]  # reason: the shortcut takes cmd alone
    assert paho.published == [7]
    assert paho.handled == []
