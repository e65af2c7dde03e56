"""A fleet host: the options its agents run with, its quiet logging (errors only, in a worker each
logger put together once) and its garbage collector's thresholds."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import structlog
from structlog.testing import capture_logs

from simulator.fleet.host import (
    HOST_GC_THRESHOLDS,
    HostConfig,
    agent_options,
    collector_for_hosting,
    quiet_logs,
)

WORKER = """
import logging, structlog
from simulator.fleet.host import quiet_logs
quiet_logs(once=True)
log = structlog.get_logger("agent.test")
log.info("dropped_info")
log.error("kept_error", n=1)
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
log.info("after_reconfiguring")
"""


@pytest.fixture
def restored() -> Iterator[None]:
    """Give the test's logging configuration back afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_a_workers_loggers_are_put_together_once_and_log_errors_only() -> None:
    """With ``once``, errors still reach stderr, info does not, and a logger already used keeps its
    configuration (it is not rebuilt at every call)."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=60, check=True
    )
    assert "kept_error" in done.stderr
    assert "dropped_info" not in done.stderr
    assert "after_reconfiguring" not in done.stderr


@pytest.mark.usefixtures("restored")
def test_quiet_logs_by_default_leave_logging_reconfigurable() -> None:
    """Without ``once`` (a command a test may run in its own process), a logger already used follows a
    later configuration: a lower level set afterwards lets its info lines through."""
    quiet_logs()
    log = structlog.get_logger("agent.test")
    log.info("before_reconfiguring")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    with capture_logs() as logs:
        log.info("captured_info")
    assert [entry["event"] for entry in logs] == ["captured_info"]


def test_a_hosts_agents_batch_their_events_and_state_every_2_s_by_default() -> None:
    """A fleet's agents wait up to 2 s of real time for an event's company and between two retained
    states (a step of simulated hours runs in seconds there); an urgent event still goes at once."""
    config = HostConfig(
        broker="mqtt://127.0.0.1:1883", start=datetime(2024, 3, 1, tzinfo=UTC), speed=3600.0, epoch=0.0
    )
    options = agent_options(config)
    assert options.batch_interval == 2.0
    assert options.state_interval == 2.0
    assert agent_options(replace(config, batch_interval=0.5)).batch_interval == 0.5


def test_overlapping_hosts_put_back_the_thresholds_the_first_one_found() -> None:
    """Two hosts in one process, the first leaving first: the second keeps the host's thresholds, and
    the process gets back the ones it had once the second leaves."""
    before = gc.get_threshold()
    first, second = collector_for_hosting(), collector_for_hosting()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold() == HOST_GC_THRESHOLDS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
