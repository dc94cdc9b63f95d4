"""The circuit breaker: closed → open after N consecutive failures → half-open after the cool-down → closed."""

from __future__ import annotations

from pipeline.escalation.breaker import CircuitBreaker
from tests.escalation_support import VirtualClock


def breaker(clock: VirtualClock) -> CircuitBreaker:
    return CircuitBreaker(threshold=3, cooldown_s=10.0, clock=clock)


def test_opens_after_threshold_consecutive_failures() -> None:
    """Two failures keep it closed; the third opens it and nothing is allowed."""
    b = breaker(VirtualClock())
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    # mypy keeps the narrowing of `b.state` from the assert above across the call that changed it
    assert b.state == "open" and not b.allow()  # type: ignore[comparison-overlap]


def test_a_success_resets_the_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    b = breaker(VirtualClock())
    for _ in range(2):
        b.record_failure()
    b.record_success()
    for _ in range(2):
        b.record_failure()
    assert b.state == "closed" and b.consecutive_failures == 2


def test_half_open_after_cool_down_lets_exactly_one_probe_through() -> None:
    """After 10 s the first caller gets to probe; everyone else waits until the probe is decided."""
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 9.9
    assert b.state == "open" and b.retry_in_s() > 0 and not b.allow()
    clock.now += 0.1
    assert b.state == "half_open" and b.retry_in_s() == 0  # type: ignore[comparison-overlap]  # as above: time moved
    assert b.allow() is True
    assert b.allow() is False


def test_probe_success_closes() -> None:
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow() and b.consecutive_failures == 0


def test_probe_failure_opens_again_for_a_full_cool_down() -> None:
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    assert b.allow()
    b.record_failure()
    assert b.state == "open" and b.retry_in_s() == 10.0 and not b.allow()


def test_a_neutral_probe_frees_the_probe_slot() -> None:
    """A probe that ends in a 4xx of its own says nothing about the provider: the next caller may probe."""
    clock = VirtualClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    assert b.allow() and not b.allow()
    b.record_neutral()
    assert b.state == "half_open" and b.allow()
