"""The counterfactual cost: what asking the large model about every result would have cost, estimated the way the
escalator estimates (its own prompt, characters / 4, the configured price), with an answer it would accept."""

from __future__ import annotations

import orjson
import pytest

from pipeline.escalation.client import CHARS_PER_TOKEN
from pipeline.escalation.counterfactual import NOTHING, Counterfactual, filled
from pipeline.escalation.tasks import build_prompt, read_answer, tasks_for
from pipeline.models import AnyEvent, EscalationRecord
from pipeline.settings import EscalationSettings, ModelPrice, Settings
from tests.escalation_support import conversation_event, escalation, feed_event, iot_event, ticket_event

SETTINGS = Settings()
TEXT = "Central bank leaves interest rates unchanged as inflation cools for a third month."


def test_every_task_is_asked_and_the_input_estimate_is_the_escalators_own() -> None:
    """An item the mini model classified, moderated and summarized: the counterfactual asks all three tasks, with
    the very prompt the escalator builds for that item unsure in all of them, and counts its input tokens alike."""
    record, event = escalation(
        feed_event("f-1", TEXT), ["classify.low_confidence", "moderate.uncertain_category"], summary="Rates held."
    )
    asked = Counterfactual(SETTINGS).asked(event, record.result)
    assert asked is not None
    prompt, _ = asked
    assert prompt.task_names == ("classify", "moderate", "summarize")
    escalators = build_prompt(record, event, tasks_for(record, SETTINGS), SETTINGS)
    assert prompt.request == escalators.request
    estimate = Counterfactual(SETTINGS).estimate(event, record.result)
    assert estimate.tokens_in == escalators.request.estimated_input_tokens


def test_only_confident_tasks_still_count_every_task() -> None:
    """A result routed to the sink (no reasons at all) costs as much as an unsure one: the counterfactual is the
    whole stream sent to the large model, not only what was escalated."""
    unsure, event = escalation(feed_event("f-2", TEXT), ["classify.low_confidence"])
    sure = unsure.result.model_copy(update={"route": "sink", "escalation_reasons": []})
    counterfactual = Counterfactual(SETTINGS)
    assert counterfactual.estimate(event, sure) == counterfactual.estimate(event, unsure.result)
    assert counterfactual.estimate(event, sure).tokens_in > len(TEXT) // CHARS_PER_TOKEN, "prompt and schema too"


@pytest.mark.parametrize(
    "item",
    [
        escalation(feed_event("f-3", TEXT), ["classify.low_confidence"], summary="Rates held for now."),
        escalation(ticket_event("t-1", "T-1", "I was charged twice for one order."), ["classify.low_confidence"]),
        escalation(
            conversation_event("c-1", [("customer", "My router drops every evening."), ("agent", "Let me check.")]),
            ["classify.low_confidence"],
            summary="Router drops.",
        ),
    ],
    ids=["feed", "ticket", "conversation"],
)
def test_the_estimated_answer_is_one_the_escalator_would_accept(item: tuple[EscalationRecord, AnyEvent]) -> None:
    """The output estimate is a real answer: the mini model's result written in the schema passes the escalator's
    own answer check, and its compact JSON length / 4 is the output tokens."""
    record, event = item
    asked = Counterfactual(SETTINGS).asked(event, record.result)
    assert asked is not None
    prompt, answer = asked
    text = orjson.dumps(answer).decode()
    read_answer(prompt, text)  # raises AnswerError if the answer does not fit the prompt
    estimate = Counterfactual(SETTINGS).estimate(event, record.result)
    assert estimate.tokens_out == len(text) // CHARS_PER_TOKEN


def test_the_price_is_the_configured_models() -> None:
    """USD = tokens at MINNOW_ESCALATION__MODEL's price in MINNOW_ESCALATION__PRICES."""
    settings = Settings(
        escalation=EscalationSettings(
            model="big-1", prices={"big-1": ModelPrice(input_usd_per_mtok=2.0, output_usd_per_mtok=8.0)}
        )
    )
    record, event = escalation(feed_event("f-4", TEXT), ["classify.low_confidence"])
    estimate = Counterfactual(settings).estimate(event, record.result)
    assert estimate.usd == pytest.approx((estimate.tokens_in * 2.0 + estimate.tokens_out * 8.0) / 1e6)


def test_an_item_with_nothing_for_a_language_model_costs_nothing() -> None:
    """An IoT reading without text has no task a large model settles: zero, not a made-up figure."""
    record, event = escalation(iot_event("r-1", "dev-1"), ["anomaly.high_score"], with_moderation=False)
    assert Counterfactual(SETTINGS).estimate(event, record.result) == NOTHING


def test_the_text_is_cut_like_the_escalator_cuts_it() -> None:
    """A text far over MINNOW_ESCALATION__MAX_INPUT_CHARS costs what its cut prompt costs, not its whole length."""
    settings = Settings(escalation=EscalationSettings(max_input_chars=400))
    long_text = "word " * 5000
    record, event = escalation(feed_event("f-5", long_text), ["classify.low_confidence"])
    estimate = Counterfactual(settings).estimate(event, record.result)
    assert estimate.tokens_in < (400 + 2000) // CHARS_PER_TOKEN


def test_filled_takes_the_mini_values_and_typical_ones_where_it_has_none() -> None:
    """Fields the mini result has are copied (numbers to two places); others get a typical value of their type."""
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["a", "b"]},
            "confidence": {"type": "number"},
            "flag": {"type": "boolean"},
            "note": {"type": "string"},
            "items": {"type": "array", "items": {"type": "integer"}},
        },
    }
    assert filled(schema, {"label": "b", "confidence": 0.87654, "items": [3, 4]}) == {
        "label": "b",
        "confidence": 0.88,
        "flag": False,
        "note": "",
        "items": [3, 4],
    }
    assert filled(schema, None)["label"] == "a"
