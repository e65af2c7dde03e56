"""When the campaign controller republishes a member's retained document."""

from __future__ import annotations

from fleet.campaign.controller import PROGRESS_INTERVAL, member_due


def test_a_member_never_published_goes_out() -> None:
    """The first document of a member is published at once."""
    assert member_due(None, ("pending", 0), 0.0, PROGRESS_INTERVAL)


def test_a_new_status_goes_out_at_once() -> None:
    """A member whose status changed is published at once, however recent the last document."""
    assert member_due((("running", 1), 10.0), ("succeeded", 1), 10.1, PROGRESS_INTERVAL)


def test_a_new_phase_goes_out_at_once() -> None:
    """A member moved to another phase is published at once."""
    assert member_due((("pending", 1), 10.0), ("pending", 2), 10.1, PROGRESS_INTERVAL)


def test_progress_alone_waits_for_the_interval() -> None:
    """Progress alone (same status and phase) waits until the interval has passed since the last one."""
    last = (("running", 1), 10.0)
    assert not member_due(last, ("running", 1), 10.0 + PROGRESS_INTERVAL - 0.01, PROGRESS_INTERVAL)
    assert member_due(last, ("running", 1), 10.0 + PROGRESS_INTERVAL, PROGRESS_INTERVAL)
