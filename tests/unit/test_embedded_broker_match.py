"""The embedded broker's topic-filter check: the prefix shortcut never changes amqtt's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from amqtt.broker import Broker
from hypothesis import example, given
from hypothesis import strategies as st

from simulator.broker import fleet_broker_class, literal_prefix

CONFIG = {  # as the embedded broker's own (no default plugins)
    "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
}
LEVEL = st.sampled_from(["a", "b", "ab", "", "+", "#", "a+", "$s", "cmd"])
TOPIC_LEVEL = st.sampled_from(["a", "b", "ab", "", "$s", "cmd"])


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop for the brokers to belong to (they are never started)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def brokers(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    """amqtt's broker and the embedded one, built (inside the loop, as amqtt needs) but not started."""

    async def build() -> tuple[Any, Any]:
        return Broker(CONFIG), fleet_broker_class()(CONFIG)

    return loop.run_until_complete(build())


@example(filter_levels=["a", "#"], topic_levels=["a"])  # a multi-level wildcard matches its parent
@example(filter_levels=["a", "+"], topic_levels=["a", "b"])
@given(
    filter_levels=st.lists(LEVEL, min_size=1, max_size=5),
    topic_levels=st.lists(TOPIC_LEVEL, min_size=1, max_size=5),
)
def test_the_embedded_broker_matches_as_amqtt_does(
    brokers: tuple[Any, Any], filter_levels: list[str], topic_levels: list[str]
) -> None:
    """For any filter and topic, the embedded broker's match is amqtt's own."""
    plain, fleet = brokers
    a_filter, topic = "/".join(filter_levels), "/".join(topic_levels)
    assert fleet._matches(topic, a_filter) == plain._matches(topic, a_filter)


def test_a_multi_level_wildcard_also_matches_its_parent() -> None:
    """``a/#`` matches ``a`` itself, so its literal prefix stops before the slash."""
    assert literal_prefix("a/#") == "a"


def test_the_embedded_broker_still_matches_its_agents_command_topics(brokers: tuple[Any, Any]) -> None:
    """An agent's command filter still matches its own command topic and no other server's."""
    _, fleet = brokers
    assert fleet._matches("allworx/s1/AWX1/cmd/upgrade", "allworx/s1/AWX1/cmd/+")
    assert not fleet._matches("allworx/s1/AWX2/cmd/upgrade", "allworx/s1/AWX1/cmd/+")
