"""One request to the large model, made safe: breaker, limits, Retry-After pauses and retries with backoff."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from pipeline import metrics
from pipeline.errors import AnswerError, CircuitOpenError, ProviderError
from pipeline.escalation.breaker import CircuitBreaker
from pipeline.escalation.client import ChatReply, ChatRequest, ChatSender
from pipeline.escalation.limits import Clock, Limits
from pipeline.escalation.retry import RetryPolicy
from pipeline.settings import BreakerMode

log = logging.getLogger(__name__)

# While a probe is out (half-open), other waiters look again this often.
PROBE_POLL_S = 0.05


class Caller:
    """Sends one request, retrying 429, 5xx, timeouts and connection errors up to the policy's attempts.

    A 429 (or any error with Retry-After) pauses the whole client, not just this request: every request that has
    not yet left waits until the pause ends. The breaker counts provider faults; while it is open, mode `wait`
    holds requests until a probe may go, mode `review` refuses them with CircuitOpenError.
    """

    def __init__(
        self,
        client: ChatSender,
        *,
        limits: Limits,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        breaker_mode: BreakerMode,
        clock: Clock,
        uniform: Callable[[], float] = random.random,
        model: str = "",
    ) -> None:
        self._client = client
        self._limits = limits
        self._breaker = breaker
        self._policy = policy
        self._mode = breaker_mode
        self._clock = clock
        self._uniform = uniform
        self._breaker_gauge = metrics.ESCALATOR_BREAKER_OPEN.labels(model=model)
        self._publish_breaker()  # the series exists from the start: a dashboard shows "closed", not "no data"

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def call(self, request: ChatRequest) -> ChatReply:
        """The reply of the first attempt that got one; ProviderError once attempts are spent or on a final 4xx."""
        attempt = 0
        while True:
            attempt += 1
            await self._wait_for_breaker()
            try:
                reply = await self._send(request)
            except ProviderError as exc:
                self._after_failure(exc)
                if not exc.retryable or attempt >= self._policy.max_attempts:
                    raise
                delay = self._delay(exc, attempt)
                # A reply's body may echo the prompt: the status above DEBUG, the body below.
                problem = str(exc) if exc.status is None else f"HTTP {exc.status}"
                log.info(
                    "large model: %s; attempt %d/%d, retry in %.2fs", problem, attempt, self._policy.max_attempts, delay
                )
                log.debug("large model: %s", exc)
                await self._clock.sleep(delay)
                continue
            except AnswerError:
                self._breaker.record_success()  # the provider answered; what it said is the answer checker's concern
                self._publish_breaker()
                raise
            self._breaker.record_success()
            self._publish_breaker()
            return reply

    async def _send(self, request: ChatRequest) -> ChatReply:
        async with self._limits.permit(request.estimated_tokens) as permit:
            try:
                reply = await self._client.complete(request)
            except ProviderError as exc:
                metrics.ESCALATOR_REQUESTS.labels(status=_status_label(exc)).inc()
                permit.settle(0)  # nothing was billed
                raise
            except AnswerError:
                metrics.ESCALATOR_REQUESTS.labels(status="200").inc()
                raise
            metrics.ESCALATOR_REQUESTS.labels(status="200").inc()
            metrics.ESCALATOR_REQUEST_SECONDS.observe(reply.latency_s)
            if reply.prompt_tokens is not None and reply.completion_tokens is not None:
                permit.settle(reply.prompt_tokens + reply.completion_tokens)
            return reply

    async def _wait_for_breaker(self) -> None:
        while not self._breaker.allow():
            self._publish_breaker()
            if self._mode == "review":
                raise CircuitOpenError(
                    f"circuit open after {self._breaker.consecutive_failures} consecutive failures; "
                    f"next probe in {self._breaker.retry_in_s():.1f}s"
                )
            await self._clock.sleep(max(self._breaker.retry_in_s(), PROBE_POLL_S))

    def _after_failure(self, exc: ProviderError) -> None:
        if exc.provider_fault:
            self._breaker.record_failure()
        else:
            self._breaker.record_neutral()
        self._publish_breaker()
        if exc.retry_after_s is not None:
            self._limits.pause_for(exc.retry_after_s)

    def _delay(self, exc: ProviderError, attempt: int) -> float:
        if exc.retry_after_s is not None:
            return exc.retry_after_s
        delay = self._policy.backoff_s(attempt, self._uniform)
        if exc.status == 429:  # rate limited without a hint: everyone backs off, not just this request
            self._limits.pause_for(delay)
        return delay

    def _publish_breaker(self) -> None:
        self._breaker_gauge.set(0 if self._breaker.state == "closed" else 1)


def _status_label(exc: ProviderError) -> str:
    if exc.status is not None:
        return str(exc.status)
    return "timeout" if isinstance(exc.__cause__, TimeoutError) else "error"
