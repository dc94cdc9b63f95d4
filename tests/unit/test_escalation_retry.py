"""Retries: full-jitter backoff, Retry-After (seconds or HTTP-date), which errors are retried, and the breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeline.errors import AnswerError, CircuitOpenError, ProviderError
from pipeline.escalation.breaker import CircuitBreaker
from pipeline.escalation.caller import Caller
from pipeline.escalation.client import ChatReply, ChatRequest
from pipeline.escalation.limits import Limits
from pipeline.escalation.retry import RetryPolicy, parse_retry_after
from tests.escalation_support import VirtualClock

REQUEST = ChatRequest(
    messages=({"role": "user", "content": "x" * 400},), schema_name="s", schema={"type": "object"}, max_tokens=100
)
REPLY = ChatReply(content="{}", model="m", prompt_tokens=10, completion_tokens=5, latency_s=0.1)


class ScriptedSender:
    """Raises or returns the scripted items in order, noting the virtual time of each call."""

    def __init__(self, clock: VirtualClock, script: Sequence[ProviderError | AnswerError | ChatReply]) -> None:
        self.clock, self.script = clock, list(script)
        self.calls: list[float] = []

    async def complete(self, request: ChatRequest) -> ChatReply:
        self.calls.append(self.clock.now)
        item = self.script.pop(0) if self.script else REPLY
        if isinstance(item, Exception):
            raise item
        return item


def caller(
    clock: VirtualClock,
    sender: ScriptedSender,
    *,
    attempts: int = 4,
    mode: str = "wait",
    threshold: int = 5,
    cooldown_s: float = 30.0,
) -> Caller:
    return Caller(
        sender,
        limits=Limits(max_concurrency=4, requests_per_minute=10_000, tokens_per_minute=10_000_000, clock=clock),
        breaker=CircuitBreaker(threshold=threshold, cooldown_s=cooldown_s, clock=clock),
        policy=RetryPolicy(max_attempts=attempts, base_s=1.0, max_s=5.0),
        breaker_mode=mode,  # type: ignore[arg-type]
        clock=clock,
        uniform=lambda: 0.5,
    )


def since_first(sender: ScriptedSender) -> list[float]:
    return [round(t - sender.calls[0], 6) for t in sender.calls]


# ----------------------------------------------------------------------------------------- Retry-After
def test_retry_after_in_seconds_whole_or_fractional() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("-4") == 0.0


def test_retry_after_as_an_http_date() -> None:
    """An HTTP-date 12 s ahead of `now` means 12 s; one in the past means now."""
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=12), usegmt=True), now=now) == 12.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=12), usegmt=True), now=now) == 0.0


def test_retry_after_absent_or_unreadable_is_none() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


# ------------------------------------------------------------------------------------------- backoff
def test_full_jitter_backoff_doubles_its_ceiling_up_to_the_cap() -> None:
    """With uniform() = 1 the delay is the ceiling: 1, 2, 4, then capped at 5; with 0.5 it is half of it."""
    policy = RetryPolicy(max_attempts=6, base_s=1.0, max_s=5.0)
    assert [policy.backoff_s(n, lambda: 1.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert [policy.backoff_s(n, lambda: 0.5) for n in range(1, 4)] == [0.5, 1.0, 2.0]
    assert policy.backoff_s(3, lambda: 0.0) == 0.0


def test_5xx_and_timeouts_are_retried_with_backoff() -> None:
    """500, timeout, 503, then a reply: four calls, spaced by the jittered backoff 0.5, 1, 2 s."""
    clock = VirtualClock()
    sender = ScriptedSender(
        clock, [ProviderError("500", status=500), ProviderError("timeout"), ProviderError("503", status=503)]
    )
    reply = asyncio.run(caller(clock, sender).call(REQUEST))
    assert reply is REPLY
    assert since_first(sender) == [0.0, 0.5, 1.5, 3.5]


def test_retry_after_replaces_the_backoff_and_pauses_the_client() -> None:
    """A 429 with Retry-After 7: the retry comes exactly 7 s later, and the limiter is paused for everyone till then."""
    clock = VirtualClock()
    sender = ScriptedSender(clock, [ProviderError("429", status=429, retry_after_s=7.0)])
    c = caller(clock, sender)
    started = clock.now
    asyncio.run(c.call(REQUEST))
    assert since_first(sender) == [0.0, 7.0]
    assert c._limits.paused_until == started + 7.0


def test_a_429_without_retry_after_pauses_the_client_for_its_backoff() -> None:
    clock = VirtualClock()
    sender = ScriptedSender(clock, [ProviderError("429", status=429)])
    c = caller(clock, sender)
    started = clock.now
    asyncio.run(c.call(REQUEST))
    assert since_first(sender) == [0.0, 0.5]
    assert c._limits.paused_until == started + 0.5


def test_attempts_are_bounded() -> None:
    """max_attempts=3 and a provider that keeps failing: three calls, then the last error is raised."""
    clock = VirtualClock()
    sender = ScriptedSender(clock, [ProviderError(f"50{i}", status=500 + i) for i in range(5)])
    with pytest.raises(ProviderError, match="502") as raised:
        asyncio.run(caller(clock, sender, attempts=3).call(REQUEST))
    assert len(sender.calls) == 3 and raised.value.status == 502


def test_a_4xx_other_than_429_is_not_retried_and_not_held_against_the_provider() -> None:
    clock = VirtualClock()
    sender = ScriptedSender(clock, [ProviderError("400", status=400)])
    c = caller(clock, sender, threshold=1)
    with pytest.raises(ProviderError):
        asyncio.run(c.call(REQUEST))
    assert len(sender.calls) == 1 and c.breaker.state == "closed"


def test_an_unreadable_reply_is_not_retried_here() -> None:
    """AnswerError is the answer checker's business (answer retries); the caller passes it on after one call."""
    clock = VirtualClock()
    sender = ScriptedSender(clock, [AnswerError("garbage")])
    with pytest.raises(AnswerError):
        asyncio.run(caller(clock, sender).call(REQUEST))
    assert len(sender.calls) == 1


# ------------------------------------------------------------------------------------- breaker modes
def test_mode_review_refuses_while_open_without_sending() -> None:
    """Threshold 2: two failed calls open the circuit; the next call raises CircuitOpenError and sends nothing."""
    clock = VirtualClock()
    sender = ScriptedSender(clock, [ProviderError("500", status=500)] * 2)
    c = caller(clock, sender, attempts=1, mode="review", threshold=2)
    for _ in range(2):
        with pytest.raises(ProviderError):
            asyncio.run(c.call(REQUEST))
    with pytest.raises(CircuitOpenError):
        asyncio.run(c.call(REQUEST))
    assert len(sender.calls) == 2


def test_mode_wait_holds_the_retry_until_the_probe_may_go() -> None:
    """Threshold 1, cool-down 30 s: after the failure the retry waits the cool-down (not the 0.5 s backoff), probes,
    succeeds, and the circuit is closed again."""
    clock = VirtualClock()
    sender = ScriptedSender(clock, [ProviderError("503", status=503)])
    c = caller(clock, sender, threshold=1, cooldown_s=30.0)
    asyncio.run(c.call(REQUEST))
    assert since_first(sender) == [0.0, 30.0]
    assert c.breaker.state == "closed"
