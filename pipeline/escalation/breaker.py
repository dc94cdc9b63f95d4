"""A circuit breaker: closed, open after N consecutive provider failures, half-open after a cool-down."""

from __future__ import annotations

from typing import Literal

from pipeline.escalation.limits import Clock

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Counts consecutive provider failures; while open no request is sent, after the cool-down one probe is.

    The probe's success closes the circuit, its failure opens it for another cool-down. A success of any request
    (one sent before the circuit opened, say) is evidence the provider answers, and closes it too.
    """

    def __init__(self, *, threshold: int, cooldown_s: float, clock: Clock) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock.monotonic() - self._opened_at >= self._cooldown_s:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a request be sent now? In half-open state only the first caller gets to (it is the probe)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in_s(self) -> float:
        """Seconds until the cool-down ends (0 when closed, or when a probe is already out)."""
        if self._opened_at is None or self._probing:
            return 0.0
        return max(self._opened_at + self._cooldown_s - self._clock.monotonic(), 0.0)

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or (self._opened_at is None and self._failures >= self._threshold):
            self._opened_at = self._clock.monotonic()
        self._probing = False

    def record_neutral(self) -> None:
        """The request ended without saying anything about the provider (a 4xx for this request): free the probe."""
        self._probing = False
