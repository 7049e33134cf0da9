"""The circuit breaker and the backoff, on a clock moved by hand."""

from __future__ import annotations

import pytest

from insurance.client import ClientPolicy
from insurance.resilience import CircuitBreaker, Ticket, full_jitter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def state(breaker: CircuitBreaker) -> str:
    """As a plain str (mypy would narrow the Literal across calls)."""
    return breaker.state


def admitted(breaker: CircuitBreaker) -> Ticket:
    ticket = breaker.admit()
    assert ticket is not None
    return ticket


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.failure(admitted(breaker))
    assert state(breaker) == "open"


def test_consecutive_failures_open_it_and_a_success_resets_the_count(clock: Clock) -> None:
    breaker = CircuitBreaker(3, 30, clock)
    for _ in range(2):
        breaker.failure(admitted(breaker))
    breaker.success(admitted(breaker))
    assert breaker.consecutive_failures == 0
    for _ in range(2):
        breaker.failure(admitted(breaker))
    assert state(breaker) == "closed"
    breaker.failure(admitted(breaker))
    assert state(breaker) == "open"
    assert breaker.admit() is None


def test_after_the_reset_time_exactly_one_trial_goes_through(clock: Clock) -> None:
    breaker = CircuitBreaker(2, 30, clock)
    open_breaker(breaker)
    clock.now += 29.9
    assert breaker.admit() is None
    clock.now += 0.1
    assert state(breaker) == "half_open"
    trial = admitted(breaker)
    assert trial.trial
    assert breaker.admit() is None
    assert breaker.admit() is None
    assert state(breaker) == "half_open"
    breaker.success(trial)
    assert state(breaker) == "closed"
    assert breaker.consecutive_failures == 0
    assert not admitted(breaker).trial


def test_a_failed_trial_opens_it_for_another_full_reset(clock: Clock) -> None:
    breaker = CircuitBreaker(1, 30, clock)
    open_breaker(breaker)
    clock.now += 40
    breaker.failure(admitted(breaker))
    assert state(breaker) == "open"
    clock.now += 29
    assert breaker.admit() is None
    clock.now += 1
    assert admitted(breaker).trial


def test_an_abandoned_trial_frees_the_slot(clock: Clock) -> None:
    breaker = CircuitBreaker(1, 30, clock)
    open_breaker(breaker)
    clock.now += 30
    breaker.abandon(admitted(breaker))
    assert state(breaker) == "half_open"
    assert admitted(breaker).trial


def test_stragglers_admitted_before_it_opened_do_not_decide(clock: Clock) -> None:
    breaker = CircuitBreaker(2, 30, clock)
    early_ok, early_bad = admitted(breaker), admitted(breaker)
    open_breaker(breaker)
    opened_at = clock.now
    assert breaker.blocks(early_ok)
    assert breaker.blocks(early_bad)
    clock.now += 10
    breaker.success(early_ok)  # does not close it behind the trial's back
    assert state(breaker) == "open"
    breaker.failure(early_bad)  # nor keep it open longer
    clock.now = opened_at + 30
    assert state(breaker) == "half_open"
    trial = admitted(breaker)
    assert not breaker.blocks(trial)


def test_a_threshold_below_one_is_refused(clock: Clock) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker(0, 30, clock)


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(0, 0.2), (1, 0.4), (2, 0.8), (3, 1.6), (4, 2.0), (500, 2.0)]
)
def test_full_jitter_spans_zero_to_the_capped_exponential(attempt: int, ceiling: float) -> None:
    assert full_jitter(attempt, base=0.2, cap=2.0, rand=lambda: 0.0) == 0.0
    assert full_jitter(attempt, base=0.2, cap=2.0, rand=lambda: 1.0) == pytest.approx(ceiling)
    assert full_jitter(attempt, base=0.2, cap=2.0, rand=lambda: 0.5) == pytest.approx(ceiling / 2)


def test_full_jitter_is_random_within_bounds() -> None:
    waits = [full_jitter(3, base=0.2, cap=2.0) for _ in range(200)]
    assert all(0.0 <= w <= 1.6 for w in waits)
    assert len(set(waits)) > 100


@pytest.mark.parametrize(
    "bad",
    [{"retries": -1}, {"max_concurrency": 0}, {"breaker_failures": 0}, {"deadline_seconds": 0}],
)
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ClientPolicy(**bad)  # type: ignore[arg-type]
