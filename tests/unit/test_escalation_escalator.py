"""`Escalator.settle` against a real local Chat Completions server: outcomes are data, every path is measured."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from pipeline.escalation.client import ChatClient
from pipeline.escalation.escalator import Escalator, Outcome
from pipeline.models import AnyEvent, EscalationRecord, ToReview, ToSink
from pipeline.settings import EscalationSettings, Settings
from tests.escalation_support import conversation_event, escalation, feed_event, iot_event
from tests.openai_server import MALFORMED, REFUSAL, WRONG_SCHEMA, OpenAIServer, Step, answer, status

T = TypeVar("T")
PRICE_IN, PRICE_OUT = 1.0, 4.0  # USD per 1M tokens; the server's model name falls back to the configured model's


def run(
    body: Callable[[Escalator, OpenAIServer], Awaitable[T]], *steps: Step, **overrides: Any
) -> tuple[T, OpenAIServer]:
    """`body(escalator, server)` with a fresh server scripted with `steps` and fast retry settings."""

    async def main() -> tuple[T, OpenAIServer]:
        async with OpenAIServer() as server:
            server.script(*steps)
            values: dict[str, Any] = {
                "base_url": server.base_url,
                "prices": {"gpt-4o-mini": {"input_usd_per_mtok": PRICE_IN, "output_usd_per_mtok": PRICE_OUT}},
                "backoff_base_s": 0.01,
                "backoff_max_s": 0.05,
                "request_timeout_s": 2.0,
                "breaker_cooldown_s": 0.3,
            }
            values.update(overrides)
            cfg = EscalationSettings.model_validate(values)
            async with ChatClient(
                base_url=cfg.base_url, model=cfg.model, api_key=None, timeout_s=cfg.request_timeout_s
            ) as client:
                return await body(Escalator(Settings(escalation=cfg), client), server), server

    return asyncio.run(main())


def feed(
    event_id: str, text: str = "Rates rose again today.", reasons: tuple[str, ...] = ("classify.low_confidence",)
) -> tuple[EscalationRecord, AnyEvent]:
    return escalation(feed_event(event_id, text), list(reasons))


def settle_all(*items: tuple[EscalationRecord, Any]) -> Callable[[Escalator, OpenAIServer], Awaitable[list[Outcome]]]:
    async def body(escalator: Escalator, server: OpenAIServer) -> list[Outcome]:
        return list(await asyncio.gather(*(escalator.settle(record, event) for record, event in items)))

    return body


def settle_one_by_one(
    *items: tuple[EscalationRecord, Any],
) -> Callable[[Escalator, OpenAIServer], Awaitable[list[Outcome]]]:
    async def body(escalator: Escalator, server: OpenAIServer) -> list[Outcome]:
        return [await escalator.settle(record, event) for record, event in items]

    return body


def settled(outcome: Outcome) -> ToSink:
    assert isinstance(outcome, ToSink), outcome
    return outcome


def reviewed(outcome: Outcome) -> ToReview:
    assert isinstance(outcome, ToReview), outcome
    return outcome


# --------------------------------------------------------------------------------------- settled items
def test_cost_and_tokens_come_from_the_reported_usage() -> None:
    """tokens_in is the server's prompt_tokens (its own formula, not our estimate); cost = in x 1 + out x 4 USD per
    1M tokens; the budget counted the same amount."""

    async def body(escalator: Escalator, server: OpenAIServer) -> tuple[Outcome, float]:
        record, event = feed("p1")
        return await escalator.settle(record, event), escalator.budget.spend.day_usd

    (outcome, spent), server = run(body)
    result = settled(outcome).result
    info = result.large_model
    usage = server.requests[0]
    assert info is not None and info.name == "test-large-1" and not info.cached
    assert info.tokens_in == len(orjson.dumps(usage.body["messages"])) // 4
    assert info.cost_usd == pytest.approx((info.tokens_in * PRICE_IN + info.tokens_out * PRICE_OUT) / 1e6)
    assert spent == pytest.approx(info.cost_usd)
    assert result.decided_by == "large-model" and result.route == "sink"
    assert result.classification is not None and result.classification.label == "world"
    assert [label.task for label in settled(outcome).labels] == ["classify"]


def test_identical_content_is_sent_once() -> None:
    """Three items with the same text (a replay and a repost), one after another: one request; the others are
    answered from the cache at no cost, with their own ids."""
    items = [feed("p1", "Same words."), feed("p1", "Same words."), feed("p2", "Same words.")]
    outcomes, server = run(settle_one_by_one(*items))
    assert len(server.requests) == 1
    infos = [settled(o).result.large_model for o in outcomes]
    assert [i.cached for i in infos if i] == [False, True, True]
    assert [i.cost_usd for i in infos if i][1:] == [0.0, 0.0]
    assert [settled(o).result.id for o in outcomes] == ["p1", "p1", "p2"]
    assert [len(settled(o).labels) for o in outcomes] == [1, 1, 1]


def test_identical_content_in_flight_together_is_sent_once() -> None:
    outcomes, server = run(settle_all(*(feed(f"p{i}", "Same words.") for i in range(4))), answer(delay_s=0.1))
    assert len(server.requests) == 1
    assert sorted(settled(o).result.large_model.cached for o in outcomes) == [False, True, True, True]  # type: ignore[union-attr]


def test_a_malformed_answer_is_retried_and_both_requests_are_paid() -> None:
    outcomes, server = run(settle_one_by_one(feed("p1")), MALFORMED)
    info = settled(outcomes[0]).result.large_model
    assert len(server.requests) == 2 and info is not None
    assert info.tokens_in == sum(len(orjson.dumps(r.body["messages"])) // 4 for r in server.requests)


def test_answers_still_wrong_after_the_retries_go_to_review() -> None:
    """answer_retries=1: malformed, then off-schema → review `answer.invalid` with the answer read and the error.
    That decision is cached by content: the same item again (a replay after a crash, or a repeat) goes to review
    without a request, its error saying the decision was cached."""
    items = (feed("p1"), feed("p1"))
    outcomes, server = run(settle_one_by_one(*items), MALFORMED, WRONG_SCHEMA, answer_retries=1)
    review = reviewed(outcomes[0]).record
    assert review.review_reasons == ["answer.invalid"]
    assert review.large_model_answer == {"classification": {"label": "no-such-label", "confidence": 7}}
    assert review.large_model_error is not None and "confidence" in review.large_model_error
    assert review.result == items[0][0].result and review.event == items[0][0].event
    again = reviewed(outcomes[1]).record
    assert again.review_reasons == ["answer.invalid"] and "(cached decision)" in (again.large_model_error or "")
    assert len(server.requests) == 2


def test_a_refusal_is_an_invalid_answer() -> None:
    outcomes, _ = run(settle_one_by_one(feed("p1")), REFUSAL, answer_retries=0)
    assert reviewed(outcomes[0]).record.review_reasons == ["answer.invalid"]
    assert "refused" in (reviewed(outcomes[0]).record.large_model_error or "")


# ------------------------------------------------------------------------------------------- budget
def test_past_the_hard_cap_items_go_to_review_without_a_request() -> None:
    outcomes, server = run(
        settle_one_by_one(feed("p1")), daily_soft_cap_usd=0.0, daily_hard_cap_usd=0.0, monthly_soft_cap_usd=0.0
    )
    assert reviewed(outcomes[0]).record.review_reasons == ["budget.hard_cap"] and server.requests == []


def test_past_the_soft_cap_only_priority_reasons_are_sent() -> None:
    """Soft cap 0: a classify item keeps its mini result (sink, decided by the mini model, no labels); a moderation
    item with a priority reason is still sent."""
    items = (feed("p1"), feed("p2", "Some words.", ("moderate.uncertain_category",)))
    outcomes, server = run(settle_one_by_one(*items), daily_soft_cap_usd=0.0, monthly_soft_cap_usd=0.0)
    kept, sent = settled(outcomes[0]), settled(outcomes[1])
    assert kept.reason == "budget.soft_cap" and kept.labels == ()
    assert kept.result.decided_by == "mini-model" and kept.result.route == "sink"
    assert kept.result.classification == items[0][0].result.classification
    assert sent.reason == "large-model" and len(server.requests) == 1


def test_past_the_soft_cap_items_can_go_to_review_instead() -> None:
    outcomes, server = run(
        settle_one_by_one(feed("p1")), daily_soft_cap_usd=0.0, monthly_soft_cap_usd=0.0, soft_cap_action="review"
    )
    assert reviewed(outcomes[0]).record.review_reasons == ["budget.soft_cap"] and server.requests == []


# ---------------------------------------------------------------------------------------- redaction
PII = {
    "amy@example.com": "[EMAIL_1]",
    "(415) 555-0132": "[PHONE_1]",
    "4111 1111 1111 1111": "[CARD_1]",
    "GB82 WEST 1234 5698 7654 32": "[IBAN_1]",
    "221B Baker Street": "[ADDRESS_1]",
    "203.0.113.9": "[IP_1]",
}


def test_redaction_is_applied_to_every_request_body() -> None:
    """Items full of personal data, answered through 500s, a 429 and malformed answers: no original value is in any
    request body the server received, every placeholder is; summaries come back with the originals restored."""
    email, phone, card, iban, address, ip = PII
    text = f"Write to {email} or call {phone}. I paid with {card}. Send it to {address}. Log from {ip}. IBAN {iban}."
    items = [
        escalation(
            feed_event(f"p{i}", f"{text} Case {i}. More detail follows here. And the end."),
            ["classify.low_confidence", "moderate.uncertain_category"],
            summary="mini",
        )
        for i in range(4)
    ]
    items.append(
        escalation(
            conversation_event("c1", [("amy@example.com", "Hi, call me at (415) 555-0132."), ("agent", "Sure.")]),
            ["classify.low_confidence"],
            summary="mini",
        )
    )
    steps = (status(500), status(429, retry_after="0.05"), MALFORMED, status(503), MALFORMED)
    outcomes, server = run(settle_all(*items), *steps, max_concurrency=3, answer_retries=2)
    assert len(server.requests) >= len(items) + 3  # every scripted failure was retried
    for request in server.requests:
        body = request.raw.decode()
        assert [value for value in PII if value in body] == []
    for request in server.requests:
        if "Case" in request.item:
            assert all(placeholder in request.item for placeholder in PII.values())
    summaries = [settled(o).result.summary for o in outcomes]  # the server summarises with the first sentence
    assert [s.text if s else None for s in summaries] == [f"In short: Write to {email} or call {phone}."] * 4 + [
        f"In short: {email}: Hi, call me at {phone}."
    ]


def test_with_redaction_off_the_text_is_sent_as_it_is() -> None:
    outcomes, server = run(settle_one_by_one(feed("p1", "Write to amy@example.com")), redact=False)
    assert "amy@example.com" in server.requests[0].item and settled(outcomes[0])


# ------------------------------------------------------------------------------- provider behaviour
def test_no_request_leaves_before_a_retry_after_has_elapsed() -> None:
    """The first request gets 429 Retry-After 0.6 s while others are in flight: measured on the server, no request
    arrives from 50 ms after that 429 until 0.6 s after it (the 50 ms cover requests already on their way), and the
    rate-limited item and the items that queued behind it all arrive after the pause."""
    items = [feed(f"p{i}", f"Story number {i}.") for i in range(8)]
    slow = [answer(delay_s=0.2)] * 3
    outcomes, server = run(settle_all(*items), status(429, retry_after="0.6"), *slow, max_concurrency=4)
    assert all(isinstance(o, ToSink) for o in outcomes)
    limited = next(r for r in server.requests if r.status == 429)
    pause_ends = limited.responded_at + 0.6
    arrivals = [r.received_at for r in server.requests if r is not limited]
    assert [t for t in arrivals if limited.responded_at + 0.05 < t < pause_ends - 0.01] == []
    assert sum(t >= pause_ends - 0.01 for t in arrivals) >= 4  # the retry, and items 5-8 queued behind the slots


def test_5xx_is_retried_up_to_max_attempts_then_review() -> None:
    outcomes, server = run(settle_one_by_one(feed("p1")), *[status(502)] * 3, max_attempts=3)
    review = reviewed(outcomes[0]).record
    assert review.review_reasons == ["large_model.unavailable"] and len(server.requests) == 3
    assert "502" in (review.large_model_error or "")


def test_a_timeout_is_retried() -> None:
    outcomes, server = run(settle_one_by_one(feed("p1")), answer(delay_s=1.0), request_timeout_s=0.2)
    assert settled(outcomes[0]) and len(server.requests) == 2


def test_a_400_is_not_retried_and_goes_to_review() -> None:
    outcomes, server = run(settle_one_by_one(feed("p1")), status(400))
    assert reviewed(outcomes[0]).record.review_reasons == ["large_model.rejected"] and len(server.requests) == 1


def test_breaker_mode_review_sends_items_to_review_while_open() -> None:
    """Threshold 2, one attempt each: two failures open the circuit; the third item goes to review untried."""
    items = [feed(f"p{i}", f"Story {i}.") for i in range(3)]
    outcomes, server = run(
        settle_one_by_one(*items),
        status(500),
        status(500),
        breaker_threshold=2,
        max_attempts=1,
        breaker_mode="review",
        breaker_cooldown_s=30.0,
    )
    assert [reviewed(o).reason for o in outcomes] == ["large_model.unavailable"] * 2 + ["breaker.open"]
    assert len(server.requests) == 2


def test_breaker_mode_wait_holds_requests_until_the_cool_down_ends() -> None:
    """Threshold 1, cool-down 0.3 s: after a 500 the retry (and a second item) wait for the cool-down, measured on
    the server; the probe succeeds, and both items are settled."""

    async def body(escalator: Escalator, server: OpenAIServer) -> tuple[list[Outcome], str]:
        first = asyncio.create_task(escalator.settle(*feed("p1", "First.")))
        while not server.requests:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        state = escalator.breaker.state
        second = await escalator.settle(*feed("p2", "Second."))
        return [await first, second], state

    (outcomes, state_after_failure), server = run(body, status(500), breaker_threshold=1, max_attempts=3)
    assert state_after_failure == "open"
    assert all(isinstance(o, ToSink) for o in outcomes)
    failed_at = server.requests[0].responded_at
    assert all(r.received_at >= failed_at + 0.3 - 0.01 for r in server.requests[1:])


def test_an_item_with_nothing_to_ask_goes_to_review() -> None:
    """An IoT anomaly without text: no language task applies; a person looks at it."""
    record, event = escalation(iot_event("i1", "dev-1"), ["anomaly.high_score"], with_moderation=False)
    outcomes, server = run(settle_one_by_one((record, event)))
    assert reviewed(outcomes[0]).record.review_reasons == ["large_model.no_task"] and server.requests == []


def test_review_only_mode_sends_every_item_to_review_and_asks_nothing() -> None:
    """MINNOW_ESCALATION__MODE=review-only: each item, whatever its reasons, is a review record; no request leaves."""
    items = (feed("r1"), feed("r2", reasons=("moderate.flagged",)))
    outcomes, server = run(settle_one_by_one(*items), mode="review-only")
    assert [reviewed(o).record.review_reasons for o in outcomes] == [["escalation.review_only"]] * 2
    assert [reviewed(o).record.id for o in outcomes] == ["r1", "r2"] and server.requests == []


def test_auto_mode_is_review_only_exactly_when_no_key_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: no key (unset, or empty as a compose file passes an unset .env entry) -> review-only; a key or a key
    file -> the large model. The default mode asks the large model even without a key (local servers need none)."""
    key_file = tmp_path / "key"
    key_file.write_text("sk-file\n")

    def review_only(**values: Any) -> bool:
        return EscalationSettings.model_validate(values).review_only

    assert review_only(mode="auto") and review_only(mode="auto", api_key="  ")  # blank: as read from a compose file
    assert not review_only(mode="auto", api_key="sk-x") and not review_only(mode="auto", api_key_file=key_file)
    assert review_only(mode="review-only", api_key="sk-x") and not review_only()
    monkeypatch.setenv("MINNOW_ESCALATION__MODE", "auto")
    monkeypatch.setenv("MINNOW_ESCALATION__API_KEY", "")
    from_env = Settings().escalation
    assert from_env.api_key is None and from_env.review_only
