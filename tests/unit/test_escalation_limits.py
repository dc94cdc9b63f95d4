"""The limiter holds requests and tokens per minute, bounds concurrency and honours pauses (virtual clock)."""

from __future__ import annotations

import asyncio

from pipeline.escalation.limits import Limits
from tests.escalation_support import VirtualClock


def limits(clock: VirtualClock, *, rpm: int = 10_000, tpm: int = 10_000_000, concurrency: int = 8) -> Limits:
    return Limits(max_concurrency=concurrency, requests_per_minute=rpm, tokens_per_minute=tpm, clock=clock)


async def send_times(
    limiter: Limits, clock: VirtualClock, estimates: list[int], actual: int | None = None
) -> list[float]:
    """One request after another; the virtual time each was let through (the first at 0)."""
    start, times = clock.now, []
    for estimate in estimates:
        async with limiter.permit(estimate) as permit:
            times.append(round(clock.now - start, 6))
            if actual is not None:
                permit.settle(actual)
    return times


def test_requests_per_minute_allow_a_burst_then_one_per_interval() -> None:
    """rpm=60: the first 60 requests go at once (a full bucket), then one per second."""
    clock = VirtualClock()
    times = asyncio.run(send_times(limits(clock, rpm=60), clock, [1] * 63))
    assert times[:60] == [0.0] * 60
    assert times[60:] == [1.0, 2.0, 3.0]


def test_tokens_per_minute_hold_requests_by_their_estimate() -> None:
    """tpm=6000 (100 tokens/s): two 3000-token estimates empty the bucket, the third waits 30 s for 3000 more."""
    clock = VirtualClock()
    times = asyncio.run(send_times(limits(clock, tpm=6000), clock, [3000, 3000, 3000]))
    assert times == [0.0, 0.0, 30.0]


def test_usage_corrects_the_token_estimate() -> None:
    """Estimated 3000, used 1000: 2000 come back at once, so four such requests fit in a 6000 bucket without waiting."""
    clock = VirtualClock()
    times = asyncio.run(send_times(limits(clock, tpm=6000), clock, [3000] * 4, actual=1000))
    assert times == [0.0, 0.0, 0.0, 0.0]


def test_usage_above_the_estimate_charges_the_difference() -> None:
    """Estimated 1000, used 4000: the bucket is charged 4000 per request, and the next one waits for it."""
    clock = VirtualClock()
    times = asyncio.run(send_times(limits(clock, tpm=6000), clock, [1000, 1000, 1000], actual=4000))
    # After two requests the bucket holds 6000 - 8000 = -2000; a 1000 estimate needs 3000 more: 30 s.
    assert times == [0.0, 0.0, 30.0]


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket() -> None:
    """An estimate above tokens_per_minute is charged as the whole bucket instead of waiting forever."""
    clock = VirtualClock()
    times = asyncio.run(send_times(limits(clock, tpm=600), clock, [5000, 5000]))
    assert times == [0.0, 60.0]


def test_a_pause_holds_every_request_until_it_ends() -> None:
    """pause_for(5): the next request, whoever sends it, leaves 5 s later."""
    clock = VirtualClock()
    limiter = limits(clock)
    limiter.pause_for(5.0)
    assert asyncio.run(send_times(limiter, clock, [10])) == [5.0]


def test_concurrency_is_bounded() -> None:
    """max_concurrency=2: with five requests that each stay open, never more than two permits are held at once."""
    clock = VirtualClock()
    limiter = limits(clock, concurrency=2)
    held, most = 0, 0

    async def request() -> None:
        nonlocal held, most
        async with limiter.permit(1):
            held += 1
            most = max(most, held)
            await asyncio.sleep(0.01)
            held -= 1

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(5)))

    asyncio.run(main())
    assert most == 2
