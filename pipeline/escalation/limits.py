"""Request limits towards the large model: bounded concurrency, requests and tokens per minute, global pauses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """Monotonic time and sleeping, injectable so tests run on virtual time."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TokenBucket:
    """`capacity` tokens, refilled continuously at `per_second`; may go negative when a charge is corrected."""

    def __init__(self, capacity: float, per_second: float, clock: Clock) -> None:
        self.capacity = capacity
        self._rate = per_second
        self._clock = clock
        self._tokens = capacity
        self._at = clock.monotonic()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` tokens are there (0 when they are now)."""
        self._refill()
        return max(amount - self._tokens, 0.0) / self._rate

    def take(self, amount: float) -> None:
        self._refill()
        self._tokens -= amount

    def give_back(self, amount: float) -> None:
        """Correct an earlier charge: positive returns tokens, negative charges more."""
        self._refill()
        self._tokens = min(self._tokens + amount, self.capacity)

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self._tokens + (now - self._at) * self._rate, self.capacity)
        self._at = now


@dataclass
class Permit:
    """The right to send one request; `settle` corrects the token estimate once the reply's usage is known."""

    _tokens: TokenBucket
    estimated_tokens: int
    _settled: bool = False

    def settle(self, actual_tokens: int) -> None:
        if not self._settled:
            self._settled = True
            self._tokens.give_back(self.estimated_tokens - actual_tokens)


class Limits:
    """Every request passes here: a concurrency slot, then its turn at the rate buckets and any global pause.

    One waiter at a time holds the turn (FIFO), so a large request is not starved by a stream of small ones, and
    with one sleeper at a time a virtual clock in the tests advances exactly as real time would.
    """

    def __init__(self, *, max_concurrency: int, requests_per_minute: int, tokens_per_minute: int, clock: Clock) -> None:
        self._clock = clock
        self._slots = asyncio.Semaphore(max_concurrency)
        self._turn = asyncio.Lock()
        self._requests = TokenBucket(requests_per_minute, requests_per_minute / 60.0, clock)
        self._tokens = TokenBucket(tokens_per_minute, tokens_per_minute / 60.0, clock)
        self._paused_until = float("-inf")

    def pause_for(self, seconds: float) -> None:
        """No request leaves this client before `seconds` from now (a 429's Retry-After pauses everyone)."""
        self._paused_until = max(self._paused_until, self._clock.monotonic() + seconds)

    @property
    def paused_until(self) -> float:
        return self._paused_until

    @asynccontextmanager
    async def permit(self, estimated_tokens: int) -> AsyncIterator[Permit]:
        """Hold a slot for the duration of one request; tokens are charged up front at the estimate."""
        # A request larger than the whole bucket could never pass; it waits for a full bucket instead.
        amount = min(max(estimated_tokens, 1), int(self._tokens.capacity))
        async with self._slots:
            async with self._turn:
                while (wait := self._wait_s(amount)) > 0:
                    await self._clock.sleep(wait)
                self._requests.take(1)
                self._tokens.take(amount)
            yield Permit(self._tokens, amount)

    def _wait_s(self, amount: int) -> float:
        paused = self._paused_until - self._clock.monotonic()
        return max(paused, self._requests.wait_s(1), self._tokens.wait_s(amount))
