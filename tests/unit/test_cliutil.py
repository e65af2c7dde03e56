"""The CLIs' one error guard: exception groups, number and date options."""

from __future__ import annotations

import asyncio

import click
import pytest

from agent.cliutil import DAY, Real, error_line, root_cause
from common.errors import BrokerError


def test_root_cause_skips_cancellations_in_nested_groups() -> None:
    """The first member of a (nested) group that is not a cancellation stands for the group."""
    cause = TimeoutError("no reply")
    group = BaseExceptionGroup("outer", [asyncio.CancelledError(), ExceptionGroup("inner", [cause])])
    assert root_cause(group) is cause


def test_error_line_reports_the_product_error_inside_a_group() -> None:
    """An AllworxError inside a task group's exception group keeps its reason code."""
    group = ExceptionGroup("task group", [BrokerError("connection refused")])
    assert error_line(group) == ("BROKER_UNAVAILABLE", "connection refused")


def test_error_line_leaves_bugs_unnamed() -> None:
    """An error of no known kind has no line of its own (the guard reports it as INTERNAL)."""
    assert error_line(ExceptionGroup("g", [KeyError("x")])) is None


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
def test_real_refuses_what_is_not_a_finite_number(text: str) -> None:
    """nan and infinities fail a Real option even inside its range."""
    with pytest.raises(click.BadParameter):
        Real(min=0, min_open=True).convert(text, None, None)


def test_real_takes_infinity_only_when_allowed() -> None:
    """``allow_inf`` lets inf through (the agent's 'no waiting' speed) but never nan."""
    assert Real(min=0, allow_inf=True).convert("inf", None, None) == float("inf")
    with pytest.raises(click.BadParameter):
        Real(min=0, allow_inf=True).convert("nan", None, None)


@pytest.mark.parametrize("text", ["9999-12-31", "1969-12-31", "2016-02-30", "tomorrow"])
def test_day_refuses_dates_outside_the_supported_range(text: str) -> None:
    """Dates a key's expiry arithmetic would overflow, and non-dates, are bad parameters."""
    with pytest.raises(click.BadParameter):
        DAY.convert(text, None, None)
