"""The broker options every ``allworx-fleet`` command that connects takes, and the settings they make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from agent.cliutil import fail, password_options
from agent.mqtt.cli import broker_settings_from
from agent.mqtt.connection import BrokerSettings
from agent.mqtt.topics import check_level

F = TypeVar("F", bound=Callable[..., Any])


def broker_options(func: F) -> F:
    """``--broker`` and its TLS/credential companions, and ``--json``."""
    func = connection_options(func)
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def connection_options(func: F) -> F:
    """``--broker`` and its TLS/credential companions."""
    func = click.option(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        show_default=True,
        help="mqtt://host:port or mqtts://host:port.",
    )(func)
    func = click.option("--ca", default=None, help="CA bundle for mqtts://.")(func)
    func = click.option("--cert", default=None, help="Client certificate (mqtts://).")(func)
    func = click.option("--key", "cert_key", default=None, help="Client certificate's key.")(func)
    func = click.option("--username", default=None, help="Broker user name.")(func)
    return password_options(func)


def broker_settings(params: dict[str, Any]) -> BrokerSettings:
    """Return the broker settings the options in ``params`` name (``BAD_INPUT`` if unusable)."""
    try:
        return broker_settings_from(params, key="cert_key")
    except ValueError as exc:
        fail("BAD_INPUT", str(exc))


def topic_level(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check a ``--site``/``--serial``/``--id`` value is one MQTT topic level (no ``/``, ``+``, ``#``)."""
    if value is None:
        return None
    try:
        return check_level(value, "value")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None
