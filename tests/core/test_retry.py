"""One retry policy, run by tenacity."""

from __future__ import annotations

import pytest
import tenacity

from airflow_provider_backendauth.core.retry import RetryPolicy


class Busy(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


def retry_after_of(exc: BaseException) -> float | None:
    return getattr(exc, "retry_after", None)


FAST = RetryPolicy(attempts=4, initial_wait=0.001, max_wait=0.004, max_retry_after=0.05)


def flaky(failures: int, retry_after: float | None = None) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise Busy(retry_after)
        return "ok"

    return calls, call


def test_retries_up_to_attempts_then_reraises() -> None:
    calls, call = flaky(10)
    with pytest.raises(Busy):
        FAST.retrying(lambda e: isinstance(e, Busy), retry_after_of)(call)
    assert len(calls) == 4


def test_success_after_transient_failures() -> None:
    calls, call = flaky(2, retry_after=0.001)
    assert FAST.retrying(lambda e: True, retry_after_of)(call) == "ok"
    assert len(calls) == 3


@pytest.mark.parametrize("retry_after", [1e9, 3600.0, 0.051])
def test_retry_after_beyond_the_cap_fails_at_once(retry_after: float) -> None:
    """A server asking for longer than max_retry_after gets its own answer back, not a sleep
    at the cap followed by the same question."""
    calls, call = flaky(10, retry_after=retry_after)
    with pytest.raises(Busy):
        FAST.retrying(lambda e: True, retry_after_of)(call)
    assert len(calls) == 1


def test_non_retryable_is_not_retried() -> None:
    calls, call = flaky(10)
    with pytest.raises(Busy):
        FAST.retrying(lambda e: False, retry_after_of)(call)
    assert len(calls) == 1


def test_overrides_follow_the_http_providers_retry_args() -> None:
    calls, call = flaky(10)
    with pytest.raises(Busy):
        FAST.retrying(
            lambda e: True, retry_after_of, overrides={"stop": tenacity.stop_after_attempt(2)}
        )(call)
    assert len(calls) == 2


def wait_before(policy: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
    """The wait the policy's tenacity strategy chooses after failed attempt ``attempt``."""
    wait = policy.tenacity_kwargs(lambda e: True, retry_after_of)["wait"]
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((Busy, Busy(retry_after), None))
    return float(wait(state))


def test_backoff_grows_within_bounds_and_honours_retry_after() -> None:
    policy = RetryPolicy(initial_wait=1.0, max_wait=8.0, max_retry_after=30.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [wait_before(policy, attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (attempt, min(waits), max(waits))
    assert wait_before(policy, 1, retry_after=5.0) == 5.0
    assert wait_before(policy, 1, retry_after=-3.0) == 0.0
    assert wait_before(policy, 1, retry_after=1e9) == 30.0


def test_from_retries() -> None:
    assert RetryPolicy.from_retries(0).attempts == 1
    assert RetryPolicy.from_retries(3).attempts == 4
    assert RetryPolicy.from_retries(-1).attempts == 1
