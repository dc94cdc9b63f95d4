"""Settle one escalated item: cache, budget, the large model (through limits, retries, breaker), answer checks."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline import metrics
from pipeline.errors import AnswerError, CircuitOpenError, ProviderError
from pipeline.escalation.breaker import CircuitBreaker
from pipeline.escalation.budget import Budget, PriceTable
from pipeline.escalation.cache import FINAL_REVIEW_REASONS, AnswerCache, AnswerStore, CachedAnswer, content_key
from pipeline.escalation.caller import Caller
from pipeline.escalation.client import CHARS_PER_TOKEN, ChatReply, ChatRequest, ChatSender
from pipeline.escalation.injection import markers_in
from pipeline.escalation.limits import Clock, Limits, SystemClock
from pipeline.escalation.retry import RetryPolicy
from pipeline.escalation.tasks import (
    PROMPT_VERSION,
    Answers,
    Prompt,
    build_prompt,
    checked,
    disagreements,
    final_result,
    label_records,
    read_answer,
    restored,
    tasks_for,
)
from pipeline.models import AnyEvent, EscalationRecord, LargeModelInfo, ReviewRecord, ToReview, ToSink
from pipeline.settings import Settings
from pipeline.tasks.catalog import configure_tasks

log = logging.getLogger(__name__)


Outcome = ToSink | ToReview  # what settling an escalated item comes to
REVIEW_ONLY = "escalation.review_only"  # the review reason of every item in review-only mode


@dataclass
class _Bill:
    """What one item's requests cost together (every attempt is paid, valid answer or not)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Escalator:
    """`settle(record, event)` returns an Outcome; provider failures, caps and bad answers are data, not raised.

    Answers are cached in `cache`; without one, in memory (`minnow escalator` passes the file `open_cache` opens).
    """

    def __init__(
        self,
        settings: Settings,
        client: ChatSender,
        *,
        clock: Clock | None = None,
        now: Callable[[], datetime] = _utcnow,
        uniform: Callable[[], float] = random.random,
        budget: Budget | None = None,
        cache: AnswerStore | None = None,
    ) -> None:
        self._settings = settings
        self._cfg = cfg = settings.escalation
        self._now = now
        clock = clock or SystemClock()
        self.breaker = CircuitBreaker(threshold=cfg.breaker_threshold, cooldown_s=cfg.breaker_cooldown_s, clock=clock)
        self.limits = Limits(
            max_concurrency=cfg.max_concurrency,
            requests_per_minute=cfg.requests_per_minute,
            tokens_per_minute=cfg.tokens_per_minute,
            clock=clock,
        )
        self._caller = Caller(
            client,
            limits=self.limits,
            breaker=self.breaker,
            policy=RetryPolicy(cfg.max_attempts, cfg.backoff_base_s, cfg.backoff_max_s),
            breaker_mode=cfg.breaker_mode,
            clock=clock,
            uniform=uniform,
            model=cfg.model,
        )
        self.prices = PriceTable(cfg.prices, cfg.model)
        self.budget = budget or Budget(cfg, now=now)
        self.cache: AnswerStore = cache if cache is not None else AnswerCache(cfg.cache_size, ttl_s=cfg.cache_ttl_s)
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._tasks = configure_tasks(settings)

    @property
    def blocked(self) -> bool:
        """True while the breaker is open in mode `wait`: the stream layer stops taking escalations."""
        return self._cfg.breaker_mode == "wait" and self.breaker.state == "open"

    async def settle(self, record: EscalationRecord, event: AnyEvent) -> Outcome:
        if self._cfg.review_only:  # no large model to ask: a person settles every item
            return self._review(record, REVIEW_ONLY, error="review-only mode: no large model is asked")
        tasks = tasks_for(record, self._settings, self._tasks)
        if not tasks:
            reasons = ", ".join(record.reasons) or "none"
            return self._review(record, "large_model.no_task", error=f"nothing a language model can settle: {reasons}")
        prompt = build_prompt(record, event, tasks, self._settings)
        key = content_key(prompt.request, tasks=prompt.task_names, model=self._cfg.model, prompt_version=PROMPT_VERSION)
        # Identical content in flight: wait for it, then read the cache, so the same request is not paid twice. The
        # lead is taken before the cache is read (a read may yield), so only one item at a time reads and asks.
        while (leader := self._inflight.get(key)) is not None:
            await asyncio.shield(leader)
        self._inflight[key] = done = asyncio.get_running_loop().create_future()
        try:
            cached = await self.cache.get(key)
            settled = self._from_cache(record, prompt, cached) if cached is not None else None
            if settled is not None:
                metrics.ESCALATOR_CACHE_HITS.inc()
                return settled
            outcome = await self._ask(record, prompt, key)
            if isinstance(outcome, ToReview) and outcome.reason in FINAL_REVIEW_REASONS:
                # A decision about the content, paid for once: a replay or the same content again is not asked.
                error = outcome.record.large_model_error or ""
                await self.cache.put(
                    key, CachedAnswer({}, self._cfg.model, review_reason=outcome.reason, review_error=error)
                )
            return outcome
        finally:
            del self._inflight[key]
            done.set_result(None)

    # ------------------------------------------------------------------------------------------ internals
    async def _ask(self, record: EscalationRecord, prompt: Prompt, key: str) -> Outcome:
        request = prompt.request
        estimate = self.prices.cost_usd(self._cfg.model, request.estimated_input_tokens, request.max_tokens)
        admission = self.budget.admit(record.reasons, estimate)
        if admission.refused == "budget.hard_cap":
            return self._review(record, "budget.hard_cap", error=f"spend cap reached: {self.budget.spend}")
        if admission.refused == "budget.soft_cap":
            if self._cfg.soft_cap_action == "review":
                return self._review(record, "budget.soft_cap", error=f"soft spend cap reached: {self.budget.spend}")
            return ToSink(result=record.result.model_copy(update={"route": "sink"}), settled_by="budget.soft_cap")
        try:
            return await self._attempts(record, prompt, key)
        finally:
            self.budget.release(admission)

    async def _attempts(self, record: EscalationRecord, prompt: Prompt, key: str) -> Outcome:
        bill = _Bill()
        error, answer_read = "", None
        for _ in range(1 + self._cfg.answer_retries):
            try:
                reply = await self._caller.call(prompt.request)
            except CircuitOpenError as exc:
                return self._review(record, "breaker.open", error=str(exc), bill=bill)
            except ProviderError as exc:
                reason = "large_model.unavailable" if exc.retryable or exc.provider_fault else "large_model.rejected"
                return self._review(record, reason, error=str(exc), bill=bill)
            except AnswerError as exc:  # the reply itself was unreadable: nothing billed that we can see
                error = str(exc)
                continue
            self._charge(bill, reply, prompt.request)
            try:
                if reply.refusal is not None:
                    raise AnswerError(f"the model refused: {reply.refusal[:200]}")
                answer = read_answer(prompt, reply.content)
            except AnswerError as exc:
                # The answer may quote the event: what was wrong with it only at DEBUG.
                log.info("large model answer for %s rejected", record.id)
                log.debug("large model answer for %s rejected: %s", record.id, exc)
                error, answer_read = str(exc), exc.answer
                continue
            # Stored before the item's outputs leave, so an item delivered and replayed after a crash is a hit.
            cached = CachedAnswer(answer.dump(), reply.model, bill.tokens_in, bill.tokens_out)
            await self.cache.put(key, cached)
            return self._decided(record, prompt, answer, reply, bill)
        return self._review(
            record,
            "answer.invalid",
            error=error,
            answer=restored(answer_read, prompt.mapping) if answer_read is not None else None,
            bill=bill,
        )

    def _charge(self, bill: _Bill, reply: ChatReply, request: ChatRequest) -> None:
        # Without usage in the reply, the estimate is what the budget counts: better too much than nothing.
        tokens_in = reply.prompt_tokens if reply.prompt_tokens is not None else request.estimated_input_tokens
        tokens_out = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else max(len(reply.content) // CHARS_PER_TOKEN, 1)
        )
        cost = self.prices.cost_usd(reply.model, tokens_in, tokens_out)
        bill.tokens_in += tokens_in
        bill.tokens_out += tokens_out
        bill.cost_usd += cost
        self.budget.charge(cost)
        metrics.ESCALATOR_TOKENS.labels(direction="in").inc(tokens_in)
        metrics.ESCALATOR_TOKENS.labels(direction="out").inc(tokens_out)
        metrics.ESCALATOR_SPEND.labels(model=reply.model).inc(cost)

    def _decided(
        self, record: EscalationRecord, prompt: Prompt, answer: Answers, reply: ChatReply, bill: _Bill
    ) -> Outcome:
        info = LargeModelInfo(
            name=reply.model,
            latency_ms=round(reply.latency_s * 1000, 3),
            tokens_in=bill.tokens_in,
            tokens_out=bill.tokens_out,
            cost_usd=bill.cost_usd,
        )
        return self._settled(record, prompt, answer, info, settled_by="large-model", bill=bill)

    def _from_cache(self, record: EscalationRecord, prompt: Prompt, cached: CachedAnswer) -> Outcome | None:
        """The cached answer as a settlement; None when it no longer fits the prompt (it is asked again)."""
        if cached.review_reason is not None:  # decided before: this content goes to review, without a request
            return self._review(record, cached.review_reason, error=f"{cached.review_error} (cached decision)")
        try:
            answer = checked(prompt, cached.answer)
        except AnswerError:
            return None
        info = LargeModelInfo(name=cached.model, latency_ms=0.0, tokens_in=0, tokens_out=0, cost_usd=0.0, cached=True)
        return self._settled(record, prompt, answer, info, settled_by="cache", bill=None)

    def _settled(
        self,
        record: EscalationRecord,
        prompt: Prompt,
        answer: Answers,
        info: LargeModelInfo,
        *,
        settled_by: str,
        bill: _Bill | None,
    ) -> Outcome:
        """A valid answer: to the sink with its label records, unless it looks like the text steered it.

        Text written at the model (injection markers) plus a verdict that departs from the mini model's is held for
        a person (`answer.suspicious`): neither the result nor a label record leaves, since labels train the mini
        model and a sink result is acted upon. The same check runs on a cached answer, so a replay is held too.
        """
        if self._cfg.injection_check:
            markers = markers_in(prompt.text)
            departures = disagreements(prompt, answer) if markers else []
            if departures:
                error = (
                    f"the item text addresses the model ({', '.join(markers)}) and the answer departs from the mini "
                    f"model ({'; '.join(departures)}): held for a person, no label written"
                )
                return self._review(
                    record, "answer.suspicious", error=error, answer=restored(answer.dump(), prompt.mapping), bill=bill
                )
        labels = label_records(record, prompt, answer, model=info.name, now=self._now())
        return ToSink(result=final_result(record, prompt, answer, info), labels=tuple(labels), settled_by=settled_by)

    def _review(
        self,
        record: EscalationRecord,
        reason: str,
        *,
        error: str,
        answer: dict[str, Any] | None = None,
        bill: _Bill | None = None,
    ) -> ToReview:
        if bill is not None and bill.cost_usd:
            error = f"{error} (spent {bill.cost_usd:.6f} USD on {bill.tokens_in}+{bill.tokens_out} tokens)"
        return ToReview(
            record=ReviewRecord(
                id=record.id,
                kind=record.kind,
                reasons=list(record.reasons),
                review_reasons=[reason],
                event=record.event,
                result=record.result,
                large_model_answer=answer,
                large_model_error=error or None,
                sent_at=self._now(),
            )
        )
