"""The sans-IO status poller: fed answers and a clock, it says poll / sleep N / done / fail.
No network and no real time: each rule is checked exactly."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_backendauth.core.bulk.poll_settings import DEFAULT_MAX_WAIT, PollSettings
from airflow_provider_backendauth.core.bulk.poller import (
    JITTER,
    RETRY_AFTER_FLOOR,
    Done,
    Fail,
    Observed,
    Poll,
    Sleep,
    StatusPoller,
    describe_seconds,
)
from airflow_provider_backendauth.core.bulk.protocol import (
    Complete,
    Failed,
    Pending,
    RetryLater,
    StatusResult,
    interpret_status,
)

URL = "https://fhir.example/status/1"
T0 = 1_800_000_000.0


def poller(random: float = 0.0, deadline: float = T0 + 10_000, **options: Any) -> StatusPoller:
    """A poller whose jitter draws ``random`` every time (0: no jitter, exact waits);
    ``options`` are ``PollSettings`` fields."""
    settings = PollSettings(**{"poll_interval_min": 1.0, "poll_interval_max": 60.0, **options})
    return StatusPoller(URL, settings, deadline=deadline, random=lambda: random)


def run(p: StatusPoller, answers: list[StatusResult]) -> list[Sleep | Done | Fail]:
    """Drive ``p`` over ``answers`` with a clock that advances by each sleep."""
    now = T0
    actions: list[Sleep | Done | Fail] = []
    step = p.start(now)
    for answer in answers:
        assert isinstance(step, Poll)
        assert step.url == URL
        after = p.feed(answer, now)
        assert not isinstance(after, Poll)
        actions.append(after)
        if not isinstance(after, Sleep):
            return actions
        now += after.seconds
        step = p.start(now)
        if isinstance(step, Fail):
            actions.append(step)
            return actions
    return actions


def seconds(actions: list[Sleep | Done | Fail]) -> list[float]:
    return [a.seconds for a in actions if isinstance(a, Sleep)]


def test_complete_and_failed() -> None:
    assert isinstance(run(poller(), [Complete({"output": []})])[0], Done)
    fail = run(poller(), [Failed("no such job", 404)])[0]
    assert isinstance(fail, Fail)
    assert fail.status_code == 404 and not fail.transient and "no such job" in fail.message


def test_pending_without_retry_after_grows_to_the_maximum() -> None:
    actions = run(poller(poll_interval_min=2, poll_interval_max=10), [Pending()] * 6)
    assert seconds(actions) == [2, 3, 4.5, 6.75, 10, 10]


def test_pending_retry_after_is_clamped_and_a_long_one_is_said() -> None:
    actions = run(poller(), [Pending(0.1), Pending(30), Pending(7200)])
    assert seconds(actions) == [1, 30, 60]
    last = actions[-1]
    assert isinstance(last, Sleep)
    said = " ".join(n.message for n in last.notes)
    assert "2.0 h" in said and "poll_interval_max" in said and "60.0 s instead" in said


def test_retry_after_is_followed_down_to_one_second_whatever_poll_interval_min() -> None:
    # The SMART reference server answers Retry-After: 1; poll_interval_min (2 s by default)
    # paces only servers that say nothing. Sub-second and zero values stop at the floor.
    p = poller(poll_interval_min=2.0)
    actions = run(p, [Pending(1), Pending(0.2), Pending(0), Pending(None)])
    assert seconds(actions) == [RETRY_AFTER_FLOOR, 1, 1, 2]
    throttled = run(poller(poll_interval_min=2.0), [Pending(1, throttled=True)])
    failing = run(poller(poll_interval_min=2.0), [RetryLater(1, "HTTP 503", 503)])
    assert seconds(throttled) == seconds(failing) == [1]
    # A poll_interval_min below the floor lowers it (tests; a server known to answer fast).
    assert seconds(run(poller(poll_interval_min=0.2), [Pending(0)])) == [0.2]


def test_waits_are_jittered_up_never_down_and_the_growth_ignores_the_jitter() -> None:
    exact = seconds(run(poller(poll_interval_min=2), [Pending()] * 3 + [Pending(1)]))
    assert exact == [2, 3, 4.5, 1]
    draw = 0.5  # half the jitter: every wait 5% longer
    stretched = seconds(run(poller(draw, poll_interval_min=2), [Pending()] * 3 + [Pending(1)]))
    assert stretched == pytest.approx([w * (1 + JITTER * draw) for w in exact])
    # The largest draw stays below +10%: a Retry-After of 1 s is polled within 1.1 s.
    assert seconds(run(poller(0.999_999), [Pending(1)]))[0] == pytest.approx(1.1, abs=1e-5)


def test_jitter_never_pushes_the_last_poll_past_the_deadline() -> None:
    actions = run(poller(0.999, deadline=T0 + 10.5, poll_interval_max=10), [Pending(10)] * 2)
    assert seconds(actions) == [10.5]
    assert "(the deadline)" in actions[0].notes[-1].message  # type: ignore[union-attr]


def test_progress_is_reported_once_per_change() -> None:
    actions = run(poller(), [Pending(1, "10%"), Pending(1, "10%"), Pending(1, "50%")])
    assert [a.progress for a in actions if isinstance(a, Sleep)] == ["10%", None, "50%"]
    levels = [a.notes[-1].level for a in actions if isinstance(a, Sleep)]
    assert levels == [logging.INFO, logging.DEBUG, logging.INFO]
    assert "Export in progress: 10%; next poll in 1.0 s" in actions[0].notes[-1].message  # type: ignore[union-attr]


def test_throttled_honours_retry_after_beyond_the_maximum() -> None:
    # 429 says "not before": polling at poll_interval_max would only earn more 429s.
    actions = run(poller(poll_interval_max=5), [Pending(120, throttled=True), Pending(1)])
    assert seconds(actions) == [120, 1]


def test_throttled_without_retry_after_backs_off() -> None:
    actions = run(poller(poll_interval_max=5), [Pending(None, throttled=True)] * 5)
    assert seconds(actions) == [2, 4, 8, 16, 32]  # doubling, not stuck at the maximum
    assert actions[-1].notes[-1].level == logging.WARNING  # type: ignore[union-attr]


def test_throttled_beyond_the_deadline_fails_at_once_with_the_numbers() -> None:
    actions = run(poller(deadline=T0 + 3600), [Pending(40 * 365 * 86400.0, throttled=True)])
    fail = actions[-1]
    assert isinstance(fail, Fail)
    assert fail.timeout and fail.transient
    assert "40.0 years" in fail.message and "60.0 min are left" in fail.message


def test_transient_errors_back_off_and_are_bounded() -> None:
    actions = run(poller(max_transient_errors=3), [RetryLater(None, "HTTP 503")] * 4)
    assert seconds(actions) == [1, 2, 4]
    fail = actions[-1]
    assert isinstance(fail, Fail)
    assert "gave up after 4 consecutive errors" in fail.message and fail.transient


def test_a_pending_answer_resets_the_transient_count() -> None:
    answers = [RetryLater(None, "x"), RetryLater(None, "x"), Pending(1)] * 3
    assert all(isinstance(a, Sleep) for a in run(poller(max_transient_errors=2), answers))


def test_the_last_poll_happens_at_the_deadline() -> None:
    actions = run(poller(deadline=T0 + 25, poll_interval_max=10), [Pending(10)] * 4)
    assert seconds(actions) == [10, 10, 5]
    assert "(the deadline)" in actions[2].notes[-1].message  # type: ignore[union-attr]
    fail = actions[-1]
    assert isinstance(fail, Fail) and fail.timeout and "max_wait" in fail.message


def test_polling_is_bounded_without_a_deadline() -> None:
    p = StatusPoller(URL, PollSettings(poll_interval_min=1), random=lambda: 0.0)
    assert isinstance(p.start(T0), Poll)
    assert p.deadline == T0 + DEFAULT_MAX_WAIT
    # A server flapping 500/202 an hour apart (never transient twice in a row) ends at the
    # deadline at the latest.
    now, polls = T0, 0
    step: object = Poll(URL)
    while isinstance(step, Poll):
        answer = RetryLater(None, "HTTP 500") if polls % 2 else Pending(3600)
        after = p.feed(answer, now)
        polls += 1
        if not isinstance(after, Sleep):
            step = after
            break
        now += after.seconds
        step = p.start(now)
    assert isinstance(step, Fail) and step.timeout
    assert polls < 400


def test_epoch_retry_after_on_a_status_answer_is_a_moment() -> None:
    result = interpret_status(202, {"Retry-After": str(int(T0 + 30))}, b"", now=T0)
    assert isinstance(result, Pending)
    assert result.retry_after == pytest.approx(30)


@pytest.mark.parametrize(
    ("value", "text"),
    [(5, "5.0 s"), (300, "5.0 min"), (4 * 3600, "4.0 h"), (5 * 86400, "5.0 days")],
)
def test_describe_seconds(value: float, text: str) -> None:
    assert describe_seconds(value) == text


def test_a_status_url_flapping_500_202_is_given_up_on() -> None:
    # Before: every 202 reset the error count, so only the deadline (7 days) ended it.
    answers: list[StatusResult] = [RetryLater(None, "HTTP 500", 500), Pending(1), Pending(1)]
    actions = run(poller(), answers * 200)
    fail = actions[-1]
    assert isinstance(fail, Fail) and not fail.timeout and fail.transient
    errors = sum(1 for a in actions if isinstance(a, Sleep) and "failed transiently" in str(a))
    assert errors == PollSettings().max_poll_errors  # then the next error gives up
    assert "101 errors" in fail.message and "max_poll_errors=100" in fail.message
    assert fail.status_code == 500


def test_every_202_is_observed_for_the_export_log_and_nothing_else_is() -> None:
    """Drivers log each 202 as a status_progress (bulk-data-client logs every one, the same
    text again too); a 429 or a failed poll is not one."""
    actions = run(
        poller(),
        [
            Pending(2.0, "10%"),
            Pending(None, "10%"),  # unchanged text: observed again, not a new `progress`
            Pending(3.0, None, throttled=True),
            RetryLater(None, "HTTP 503", 503),
            Pending(None, None),
            Complete({"output": []}),
        ],
    )
    observed = [a.observed if isinstance(a, Sleep) else a for a in actions]
    assert observed[:5] == [
        Observed("10%", 2.0),
        Observed("10%", None),
        None,
        None,
        Observed(None, None),
    ]
    assert [a.progress for a in actions[:2] if isinstance(a, Sleep)] == ["10%", None]


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999])
def test_the_first_poll_is_spread_over_the_shortest_wait(draw: float) -> None:
    """Hundreds of exports deferred at once (or a triggerer restart) start their waits in
    one instant: each first poll waits a random part of poll_interval_min."""
    poller = StatusPoller(URL, PollSettings(poll_interval_min=4), random=lambda: draw)
    assert poller.first_spread() == pytest.approx(4 * draw)
    assert 0 <= poller.first_spread() < 4
