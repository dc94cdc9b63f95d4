"""Per-task prompts and answer schemas, answer checks, and the final result and label records built from an answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import AnswerError
from pipeline.escalation.tasks import (
    Prompt,
    answer_schema,
    build_prompt,
    final_result,
    label_records,
    read_answer,
    tasks_for,
)
from pipeline.models import EVENT_ADAPTER, AnyEvent, EscalationRecord, LargeModelInfo
from pipeline.settings import EscalationSettings, Settings, SummarySettings
from pipeline.tasks.base import Asked, Task
from pipeline.tasks.catalog import configure_tasks
from pipeline.tasks.moderate import CATEGORIES
from tests.escalation_support import AT, FEED_LABELS, conversation_event, escalation, feed_event, iot_event

SETTINGS = Settings()


def names(record: EscalationRecord) -> tuple[str, ...]:
    return tuple(task.name for task in tasks_for(record, SETTINGS))


def item_text(event: AnyEvent) -> str:
    """The text the large model reads: the event family's own."""
    return event.prompt_text()


INFO = LargeModelInfo(name="big-1", latency_ms=120.0, tokens_in=300, tokens_out=40, cost_usd=0.0001)


def prompt_for(event: dict[str, Any], reasons: list[str], *, summary: str | None = None, **kw: Any) -> Prompt:
    record, parsed = escalation(event, reasons, summary=summary)
    escalation_settings: dict[str, Any] = {"redact": True, "max_input_chars": 24_000, "max_output_tokens": 256}
    escalation_settings.update(kw)
    settings = Settings(
        escalation=EscalationSettings(**escalation_settings), summary=SummarySettings(max_sentences=3, max_chars=600)
    )
    return build_prompt(record, parsed, tasks_for(record, settings), settings)


def walk_objects(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = [schema] if schema.get("type") == "object" else []
    for value in schema.get("properties", {}).values():
        found += walk_objects(value)
    return found


def test_tasks_follow_the_reasons_and_long_items_get_a_summary() -> None:
    """classify.* → classify, moderate.* → moderate, anomaly.* → classify (an IoT message with text); an item with a
    mini summary (conversation, long post) also gets an abstractive one; IoT without text has nothing to settle."""
    record, _ = escalation(feed_event("a", "x"), ["classify.low_confidence"])
    assert names(record) == ("classify",)
    record, _ = escalation(feed_event("b", "x"), ["moderate.uncertain_category"], summary="s")
    assert names(record) == ("moderate", "summarize")
    record, _ = escalation(iot_event("c", "dev-1", "fan failure"), ["anomaly.high_score"])
    assert names(record) == ("classify",)
    record, _ = escalation(iot_event("d", "dev-1"), ["anomaly.high_score"], with_moderation=False)
    assert names(record) == ()


def test_the_schema_is_strict_everywhere() -> None:
    """OpenAI strict mode: every object lists all its properties as required and allows no others."""
    record, _ = escalation(
        feed_event("s", "x"), ["classify.low_confidence", "moderate.uncertain_category"], summary="s"
    )
    assert record.result.classification is not None and tuple(record.result.classification.scores) == FEED_LABELS
    schema = answer_schema(configure_tasks(SETTINGS)[:3], Asked(record, SETTINGS))
    objects = walk_objects(schema)
    assert len(objects) == 5
    for obj in objects:
        assert obj["additionalProperties"] is False and obj["required"] == list(obj["properties"])
    assert schema["properties"]["classification"]["properties"]["label"]["enum"] == list(FEED_LABELS)
    assert list(schema["properties"]["moderation"]["properties"]["categories"]["properties"]) == list(CATEGORIES)


def test_the_prompt_carries_the_redacted_text_and_keeps_the_mapping_in_process() -> None:
    prompt = prompt_for(feed_event("p", "Mail amy@example.com or call +44 20 7946 0958."), ["classify.low_confidence"])
    sent = orjson.dumps(prompt.request.body("m")).decode()
    assert "amy@example.com" not in sent and "7946" not in sent
    assert "[EMAIL_1]" in sent and "[PHONE_1]" in sent
    assert prompt.mapping == {"[EMAIL_1]": "amy@example.com", "[PHONE_1]": "+44 20 7946 0958"}
    assert "amy@example.com" not in repr(prompt)
    assert prompt.text == "Mail amy@example.com or call +44 20 7946 0958."


def test_redaction_can_be_turned_off() -> None:
    prompt = prompt_for(feed_event("p", "Mail amy@example.com"), ["classify.low_confidence"], redact=False)
    assert "amy@example.com" in prompt.request.messages[-1]["content"] and prompt.mapping == {}


def test_item_text_of_conversations_and_iot() -> None:
    conversation = EVENT_ADAPTER.validate_python(conversation_event("c1", [("agent", "Hi."), ("caller", "My bill.")]))
    assert item_text(conversation) == "agent: Hi.\ncaller: My bill."
    device = EVENT_ADAPTER.validate_python(iot_event("i1", "dev-9", "overheat"))
    assert item_text(device) == "overheat\nreadings: temp_c=97.5"


def test_a_long_text_is_cut_and_marked() -> None:
    prompt = prompt_for(feed_event("p", "word " * 1000), ["classify.low_confidence"], max_input_chars=200)
    assert len(prompt.text) == 200 and prompt.text.endswith(" […]")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{nope", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"classification": {"label": "world"}}', "confidence"),
        ('{"classification": {"label": "cooking", "confidence": 0.9}}', "not in the label set"),
        ('{"classification": {"label": "world", "confidence": 1.5}}', "confidence"),
        ('{"summary": {"text": "x"}}', "lacks the task"),
        ('{"classification": {"label": "world", "confidence": 0.9, "why": "x"}}', "why"),
    ],
)
def test_answers_that_do_not_fit_are_rejected(content: str, message: str) -> None:
    prompt = prompt_for(feed_event("p", "x"), ["classify.low_confidence"])
    with pytest.raises(AnswerError, match=message):
        read_answer(prompt, content)


def test_moderation_answers_must_score_every_category_within_0_1() -> None:
    prompt = prompt_for(feed_event("p", "x"), ["moderate.uncertain_category"])
    scores = dict.fromkeys(CATEGORIES, 0.1)
    with pytest.raises(AnswerError, match="are not"):
        read_answer(prompt, orjson.dumps({"moderation": {"categories": {"hate": 0.1}}}).decode())
    with pytest.raises(AnswerError, match=r"outside 0\.\.1: spam") as raised:
        read_answer(prompt, orjson.dumps({"moderation": {"categories": {**scores, "spam": 3}}}).decode())
    assert raised.value.answer == {"moderation": {"categories": {**scores, "spam": 3}}}


def test_final_result_and_labels_from_an_answer() -> None:
    """The large model's label, moderation and summary replace the mini's; route sink, decided_by large-model, the
    large model's info attached; placeholders in the summary restored; one label record per task."""
    text = "Mail amy@example.com about the hate flyers. They were everywhere. People were upset. The council met."
    record, parsed = escalation(
        feed_event("p9", text), ["classify.low_confidence", "moderate.uncertain_category"], summary="mini summary"
    )
    tasks: tuple[Task, ...] = tasks_for(record, SETTINGS)
    prompt = build_prompt(record, parsed, tasks, SETTINGS)
    scores = {**dict.fromkeys(CATEGORIES, 0.05), "hate": 0.9, "harassment": 0.6}
    answer = read_answer(
        prompt,
        orjson.dumps(
            {
                "classification": {"label": "world", "confidence": 0.8},
                "moderation": {"categories": scores},
                "summary": {"text": "Flyers mailed to [EMAIL_1] upset people."},
            }
        ).decode(),
    )
    result = final_result(record, prompt, answer, INFO)
    assert result.route == "sink" and result.decided_by == "large-model" and result.large_model == INFO
    assert result.classification is not None and result.classification.label == "world"
    assert result.classification.scores == {"world": 0.8} and result.classification.label_set == "feed"
    assert result.moderation is not None and result.moderation.flagged_categories == ["harassment", "hate"]
    assert result.moderation.confidence == 0.2  # harassment at 0.6 is the least certain: |2 * 0.6 - 1|
    assert result.summary is not None and result.summary.text == "Flyers mailed to amy@example.com upset people."
    assert result.escalation_reasons == record.reasons and result.timings["large_model"] == 120.0
    labels = label_records(record, prompt, answer, model="big-1", now=AT)
    assert [(lr.task, lr.label, lr.flagged_categories, lr.summary) for lr in labels] == [
        ("classify", "world", None, None),
        ("moderate", None, ["harassment", "hate"], None),
        ("summarize", None, None, "Flyers mailed to amy@example.com upset people."),
    ]
    assert {lr.text for lr in labels} == {text} and {lr.decided_by for lr in labels} == {"big-1"}


def test_a_conversation_label_holds_the_text_the_mini_model_classifies_not_the_prompt() -> None:
    """The large model reads `speaker: text` lines; the label record keeps the turns as the engine embeds them
    (one per line, no speakers), so `minnow train --from-topic` fits heads on the heads' own inputs."""
    turns = [("agent", "How can I help?"), ("customer", "I was billed twice, call me at +44 20 7946 0958.")]
    record, parsed = escalation(conversation_event("call-3", turns), ["classify.low_confidence"])
    prompt = build_prompt(record, parsed, configure_tasks(SETTINGS)[:1], SETTINGS)
    assert "customer: I was billed twice" in prompt.text
    answer = read_answer(prompt, orjson.dumps({"classification": {"label": "billing", "confidence": 0.9}}).decode())
    (label,) = label_records(record, prompt, answer, model="big-1", now=AT)
    assert label.text == "How can I help?\nI was billed twice, call me at +44 20 7946 0958."


def test_an_unsupported_language_is_classified_and_moderated_by_the_large_model() -> None:
    record, _ = escalation(feed_event("fr", "Une phrase en français."), ["language.unsupported"])
    assert names(record) == ("classify", "moderate")
