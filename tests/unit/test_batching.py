"""The batching policy and the progress thinning: pure, on an injected clock."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import CommandAnswered, Progress, Refused, ResultEvent, Staged, Transition
from agent.machine import State
from agent.mqtt.batching import Batcher, BatchPolicy, ProgressThinner, urgent
from agent.results import UpgradeResult

POLICY = BatchPolicy(interval=0.25, size=64)


def transition(state: State) -> Transition:
    """A step's transition to ``state``."""
    return Transition(job_id="j", release="7.1", build="7.1.0.1", step=1, steps=1, state=state)


def test_a_lone_event_waits_the_interval_and_no_longer() -> None:
    """One event opens a batch that is due exactly ``interval`` seconds after it was recorded."""
    batcher = Batcher(POLICY)
    assert batcher.wait(10.0) is None
    assert batcher.add(10.0)  # the batch opens: the publisher starts its timer
    assert batcher.wait(10.0) == pytest.approx(0.25)
    assert batcher.wait(10.2) == pytest.approx(0.05)
    assert batcher.wait(10.25) == 0.0


def test_later_events_neither_wake_the_publisher_nor_extend_the_wait() -> None:
    """Events joining an open batch do not postpone it: it is due ``interval`` after its first."""
    batcher = Batcher(POLICY)
    batcher.add(0.0)
    assert not batcher.add(0.1)
    assert not batcher.add(0.2)
    assert batcher.wait(0.2) == pytest.approx(0.05)


def test_a_batch_is_due_at_once_on_an_urgent_event() -> None:
    """A result (or any event that ends or decides something) makes the batch due when it is recorded."""
    batcher = Batcher(POLICY)
    batcher.add(0.0)
    assert batcher.add(0.01, urgent=True)
    assert batcher.wait(0.01) == 0.0


def test_a_batch_is_due_at_once_when_it_is_full() -> None:
    """The 64th event makes the batch due at once; the 63 before it did not."""
    batcher = Batcher(POLICY)
    woken = [batcher.add(0.0) for _ in range(63)]
    assert woken == [True] + [False] * 62
    assert batcher.wait(0.0) == pytest.approx(0.25)
    assert batcher.add(0.0)
    assert batcher.wait(0.0) == 0.0


def test_what_is_left_of_a_batch_keeps_its_deadline_and_a_sent_batch_closes() -> None:
    """Events left after a partial send keep the batch's deadline (and urgency); once all are sent the
    next batch starts afresh."""
    batcher = Batcher(POLICY)
    for _ in range(70):
        batcher.add(0.0)
    batcher.sent(64)
    assert batcher.count == 6
    assert batcher.wait(0.1) == pytest.approx(0.15)
    batcher.add(0.1, urgent=True)
    batcher.sent(1)
    assert batcher.wait(0.1) == 0.0
    batcher.sent(6)
    assert batcher.wait(0.0) is None
    batcher.add(5.0)
    assert batcher.wait(5.0) == pytest.approx(0.25)


def test_events_left_from_before_a_restart_are_due_at_once() -> None:
    """A batcher made over undelivered events (an outbox reopened) sends them at once."""
    assert Batcher(POLICY, pending=3, now=7.0).wait(7.0) == 0.0
    assert Batcher(POLICY, pending=0, now=7.0).wait(7.0) is None


def test_a_bad_policy_is_refused() -> None:
    """A negative interval or a batch size below one is a ValueError."""
    with pytest.raises(ValueError, match="batch"):
        BatchPolicy(interval=-1.0)
    with pytest.raises(ValueError, match="batch"):
        BatchPolicy(size=0)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ResultEvent.of(UpgradeResult("7.0", "7.1", "7.1").report()), True),
        (Refused(release="7.2", build="b", step=1, steps=1, reason="R", rule="REL-1", message="m"), True),
        (CommandAnswered(command="upgrade", client_token="t", status="accepted"), True),
        (Staged(target="8.0", outcome="staged", builds=()), True),
        (transition(State.ROLLING_BACK), True),
        (transition(State.ROLLED_BACK), True),
        (transition(State.STAGING), False),
        (transition(State.COMMITTED), False),
        (Progress.download("7.1.0.1", 1, 2), False),
    ],
    ids=lambda value: getattr(value, "type", str(value)),
)
def test_events_that_end_or_decide_something_are_urgent(event: object, expected: bool) -> None:
    """Results, refusals, command answers, a stage's end and rollbacks flush; the rest wait."""
    assert urgent(event) is expected  # type: ignore[arg-type]  # reason: parametrised with every kind


def simulate(times: list[tuple[float, bool]], policy: BatchPolicy) -> list[list[tuple[int, float, float]]]:
    """Record events at ``times`` (each with its urgency) and publish as the daemon does: every
    pending event, in messages of ``policy.size``, as soon as the batcher says the batch is due.
    Return the batches, each a list of (seq, recorded at, published at)."""
    batcher, waiting, batches = Batcher(policy), list[tuple[int, float]](), []
    due: float | None = None  # when the open batch is due

    def publish(at: float) -> None:
        batcher.sent(len(waiting))
        for i in range(0, len(waiting), policy.size):
            batches.append([(seq, recorded, at) for seq, recorded in waiting[i : i + policy.size]])
        waiting.clear()

    for seq, (at, is_urgent) in enumerate(times, start=1):
        if due is not None and due <= at:
            publish(due)
        waiting.append((seq, at))
        batcher.add(at, urgent=is_urgent)
        wait = batcher.wait(at)
        due = None if wait is None else at + wait
        if due == at:
            publish(at)
            due = None
    if due is not None:
        publish(due)
    return batches


EVENT_TIMES = st.lists(st.tuples(st.floats(0, 0.4), st.booleans()), min_size=1, max_size=200).map(
    lambda gaps: [(round(sum(g for g, _ in gaps[: i + 1]), 6), u) for i, (_, u) in enumerate(gaps)]
)


@settings(max_examples=200, deadline=None)
@given(EVENT_TIMES, st.sampled_from([BatchPolicy(0.25, 64), BatchPolicy(0.25, 3), BatchPolicy(0.0, 64)]))
def test_every_event_goes_out_in_order_within_the_bounds(
    times: list[tuple[float, bool]], policy: BatchPolicy
) -> None:
    """Whatever the timing: every event is published once, in seq order across batches, no batch holds
    more than ``size``, none waits past ``interval``, and an urgent event waits not at all."""
    batches = simulate(times, policy)
    flat = list(itertools.chain.from_iterable(batches))
    assert [seq for seq, _, _ in flat] == list(range(1, len(times) + 1))
    assert all(len(batch) <= policy.size for batch in batches)
    assert all(published - recorded <= policy.interval + 1e-9 for _, recorded, published in flat)
    assert all(times[seq - 1][0] == published for seq, _, published in flat if times[seq - 1][1])
    assert [published for _, _, published in flat] == sorted(published for _, _, published in flat)


def test_a_steps_transitions_share_one_message_and_its_result_goes_at_once() -> None:
    """Ten transitions 20 ms apart and then a result make one message, sent when the result is recorded."""
    times = [(0.02 * i, False) for i in range(10)] + [(0.2, True)]
    (batch,) = simulate(times, POLICY)
    assert [seq for seq, _, _ in batch] == list(range(1, 12))
    assert {published for _, _, published in batch} == {0.2}


def test_a_slow_stream_goes_out_every_interval() -> None:
    """Events 100 ms apart for a second go out in messages at most 250 ms apart, about four a second."""
    times = [(0.1 * i, False) for i in range(10)]
    batches = simulate(times, POLICY)
    assert len(batches) == 4
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]


def progress(percent_done: int, build: str = "7.1.0.1") -> Progress:
    """A download's progress at ``percent_done`` percent."""
    return Progress.download(build, percent_done, 100)


def test_progress_is_thinned_to_one_a_second_with_its_ends_kept() -> None:
    """Progress every 100 ms for 3 s: 0%, 100% and one a second between are kept, nothing else."""
    thinner = ProgressThinner(1.0)
    kept = [n for n in range(31) if thinner.keep(progress(round(n * 100 / 30)), n * 0.1)]
    assert kept == [0, 10, 20, 30]


def test_progress_ends_are_kept_however_close() -> None:
    """0% and 100% are kept even right after another progress event of the same job."""
    thinner = ProgressThinner(1.0)
    assert thinner.keep(progress(0), 0.0)
    assert not thinner.keep(progress(40), 0.5)
    assert thinner.keep(progress(100), 0.6)
    assert thinner.keep(Progress.database("7.1.0.1", 0, 10), 0.7)
    assert not thinner.keep(Progress.database("7.1.0.1", 5, 10), 0.8)


def test_progress_is_thinned_per_job() -> None:
    """Two jobs (two builds) each keep their own one a second."""
    thinner = ProgressThinner(1.0)
    assert thinner.keep(progress(10, "7.1.0.1"), 0.0)
    assert thinner.keep(progress(10, "7.2.0.3"), 0.1)
    assert not thinner.keep(progress(20, "7.1.0.1"), 0.5)
    assert thinner.keep(progress(30, "7.1.0.1"), 1.0)


def test_asking_whether_progress_is_due_counts_nothing() -> None:
    """``due`` tells before an event is made whether it would be kept; only ``keep`` starts the interval."""
    thinner = ProgressThinner(1.0)
    assert thinner.due("7.1.0.1", 10.0, 0.0)
    assert thinner.due("7.1.0.1", 20.0, 0.1)
    assert thinner.keep(progress(20), 0.1)
    assert not thinner.due("7.1.0.1", 40.0, 0.5)
    assert thinner.due("7.1.0.1", 40.0, 1.1)


@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.5, 33.3, 99.9, 100.0]), st.floats(min_value=0, max_value=0.6)),
        max_size=40,
    )
)
def test_due_answers_what_keep_answers_and_always_for_the_ends(reports: list[tuple[float, float]]) -> None:
    """For any run of reports, ``due`` at each instant answers what ``keep`` then does, and 0% and 100%
    are always due."""
    thinner = ProgressThinner(1.0)
    now = 0.0
    for percent, pause in reports:
        now += pause
        due = thinner.due("7.1.0.1", percent, now)
        event = Progress(phase="download", build="7.1.0.1", bytes=1, total=1, percent=percent)
        assert thinner.keep(event, now) is due
        if percent in {0, 100}:
            assert due
