"""How a client behaves towards a platform that is slow or down: a circuit breaker and jittered backoff.

Both are plain logic over an injected clock and random source, so they are tested without waiting.
The HTTP client (:mod:`insurance.client`) keeps one breaker per platform.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker", "Ticket", "full_jitter"]

BreakerState = Literal["closed", "open", "half_open"]


def full_jitter(attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt + 1``: uniform in ``[0, min(cap, base * 2**attempt)]``.

    Full jitter (rather than a fixed or "equal jitter" delay) spreads the retries of many callers who
    failed at the same moment, so a platform that comes back is not hit by all of them at once.
    ``attempt`` counts from 0 (the wait after the first failed attempt).
    """
    ceiling: float = min(cap, base * 2.0 ** min(attempt, 62))
    return max(0.0, ceiling * rand())


@dataclass(frozen=True, slots=True)
class Ticket:
    """Leave to make one call, from :meth:`CircuitBreaker.admit`; report its outcome with it."""

    trial: bool
    """The one call let through while half-open: its outcome decides whether the breaker closes."""


class CircuitBreaker:
    """Stops calling a platform after ``failure_threshold`` consecutive failed calls.

    - closed: calls go through; a failure adds to the count, a success resets it. At the threshold the
      breaker opens.
    - open: calls are refused (:meth:`admit` returns None) without touching the platform, until
      ``reset_seconds`` have passed on ``clock``; then it is half-open.
    - half-open: exactly one trial call is admitted, the others are refused. The trial's success closes
      the breaker, its failure opens it again for another ``reset_seconds``; a trial that ends with no
      verdict (cancelled, or the platform answered something that is neither) frees the slot for the
      next caller.

    Outcomes of ordinary calls that were admitted before the breaker opened are ignored once it is open:
    the trial alone decides, so a late straggler neither closes it early nor keeps it open longer.

    Not thread-safe; meant for one event loop, where nothing runs between ``admit`` and its check.
    """

    def __init__(self, failure_threshold: int, reset_seconds: float, clock: Callable[[], float]) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_out = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._trial_out or self._clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def admit(self) -> Ticket | None:
        """A ticket for one call, or None when the call must fail fast."""
        state = self.state
        if state == "closed":
            return Ticket(trial=False)
        if state == "half_open" and not self._trial_out:
            self._trial_out = True
            return Ticket(trial=True)
        return None

    def blocks(self, ticket: Ticket) -> bool:
        """True when a call holding ``ticket`` should not make another attempt (the breaker opened)."""
        return not ticket.trial and self._opened_at is not None

    def success(self, ticket: Ticket) -> None:
        if ticket.trial:
            self._trial_out = False
            self._opened_at = None
            self._failures = 0
        elif self._opened_at is None:
            self._failures = 0

    def failure(self, ticket: Ticket) -> None:
        if ticket.trial:
            self._trial_out = False
            self._opened_at = self._clock()
        elif self._opened_at is None:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._opened_at = self._clock()

    def abandon(self, ticket: Ticket) -> None:
        """The call ended without a verdict on the platform's health."""
        if ticket.trial:
            self._trial_out = False
