"""Each event family knows itself (kind, key, time, encoder job, prompt text, topics), and the support-ticket family
added through that seam goes through validation, the engine, routing, the worker's outputs and the escalator's
prompt like the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.errors import SchemaError
from pipeline.escalation.tasks import build_prompt, tasks_for
from pipeline.models import (
    EVENT_ADAPTER,
    FAMILIES,
    Conversation,
    EscalationRecord,
    FeedEvent,
    InputInfo,
    IoTMessage,
    Result,
    SupportTicket,
    TranscriptSegment,
    guess_kind,
    label_text,
    unquoted,
)
from pipeline.settings import Settings
from pipeline.stages.infer import MiniModel
from pipeline.stages.validate import parse_event
from pipeline.stream import names
from pipeline.stream.worker import BatchProcessor
from tests.escalation_support import MINI, classification, moderation
from tests.unit.test_stream_units import FakeEngine, FakeSender, record

AT = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
TICKET = {
    "id": "msg-1",
    "thread_id": "T-9",
    "subject": "Refund for order 1234",
    "body": "Hello,\nI returned the shoes last week and have not seen the refund yet.\n\n"
    "> On 1 Dec 2026, Support <help@shop.example> wrote:\n> Please send them back with the label.",
    "from": "kim@example.com",
    "sent_at": "2026-12-04T09:30:00Z",
}
SEGMENT = TranscriptSegment(id="s-1", conversation_id="c-1", seq=1, speaker="agent", text="Hello.")


def test_a_missing_kind_is_told_by_each_familys_own_fields() -> None:
    assert guess_kind({"thread_id": "t", "body": "b"}) == "ticket"
    assert guess_kind({"device_id": "d", "readings": {}}) == "iot"
    assert guess_kind({"conversation_id": "c"}) == "transcript"
    assert guess_kind({"segments": []}) == "conversation"
    assert guess_kind({"text": "a post"}) == "feed"
    event = parse_event(orjson.dumps(TICKET))
    assert isinstance(event, SupportTicket) and event.sender == "kim@example.com"


def test_each_family_keys_its_outputs_and_tells_its_time() -> None:
    feed = FeedEvent(id="f", source="s", text="t", created_at=AT)
    iot = IoTMessage(id="m", device_id="dev", ts=AT)
    ticket = SupportTicket.model_validate(TICKET)
    conversation = Conversation(id="c-1", segments=[SEGMENT])
    assert [e.key() for e in (feed, SEGMENT, conversation, iot, ticket)] == [b"f", b"c-1", b"c-1", b"dev", b"T-9"]
    assert [e.event_time() for e in (feed, SEGMENT, conversation, iot, ticket)] == [AT, None, None, AT, AT]


def test_every_family_is_in_the_one_table_with_its_topics() -> None:
    assert set(FAMILIES) == {"feed", "transcript", "conversation", "iot", "ticket"}
    assert names.INPUT_TOPICS == {
        "iot": "iot.in",
        "transcript": "transcripts.in",
        "ticket": "tickets.in",
        "feed": "feeds.in",
    }
    assert names.SINK_TOPICS["conversation"] == names.SINK_TOPICS["transcript"] == "transcripts.enriched"
    assert names.SINK_TOPICS["ticket"] == "tickets.enriched"


def test_a_ticket_keeps_from_on_the_wire_and_is_read_without_its_quoting() -> None:
    ticket = SupportTicket.model_validate(TICKET)
    assert ticket.model_dump(mode="json")["from"] == "kim@example.com" and "sender" not in ticket.model_dump()
    assert EVENT_ADAPTER.validate_python(ticket.model_dump(mode="json")) == ticket
    job = ticket.encoder_job()
    assert job.label_set == "ticket" and job.moderate and job.summarize
    assert isinstance(job.text, str) and job.text.startswith("Refund for order 1234\n\nHello,")
    assert "wrote:" not in job.text and "> " not in job.text and "Please send them back" in job.text
    assert label_text(ticket.model_dump(mode="json")) == job.text
    assert ticket.prompt_text().startswith("Subject: Refund for order 1234\n\nHello,")


def test_unquoting_drops_reply_headers_and_markers_only() -> None:
    body = "Thanks.\n> On Mon, 1 Dec 2026 at 10:00, Ann <a@x.org> wrote:\n>> Older line\nPrice > cost here."
    assert unquoted(body) == "Thanks.\nOlder line\nPrice > cost here."


def test_a_ticket_without_a_sender_is_a_schema_error() -> None:
    bad = {k: v for k, v in TICKET.items() if k != "from"}
    with pytest.raises(SchemaError, match=r"ticket event does not match its schema: ticket\.from: Field required"):
        parse_event(orjson.dumps(bad))


def test_the_engine_classifies_a_ticket_with_its_own_label_set(mini_model: MiniModel) -> None:
    (result,) = mini_model.process([SupportTicket.model_validate(TICKET)])
    assert isinstance(result, Result) and result.kind == "ticket"
    assert result.classification is not None and result.classification.label_set == "ticket"
    assert result.classification.label == "refund"
    assert result.moderation is not None


def test_the_worker_sends_a_ticket_result_to_the_ticket_sink_keyed_by_thread() -> None:
    settings = Settings()
    processor = BatchProcessor(settings, FakeEngine(escalate=["msg-2"]), FakeSender())
    second = {**TICKET, "id": "msg-2"}
    outputs = asyncio.run(
        processor.handle(
            [
                record(orjson.dumps(TICKET), 0, topic="tickets.in"),
                record(orjson.dumps(second), 1, topic="tickets.in"),
            ]
        )
    )
    prefix = settings.kafka.topic_prefix
    assert [(o.topic, o.key, o.destination) for o in outputs] == [
        (prefix + "tickets.enriched", b"T-9", "sink"),
        (prefix + "escalations", b"T-9", "escalation"),
    ]
    assert outputs[0].event_time == AT
    escalation = orjson.loads(outputs[1].value or b"")
    assert escalation["event"]["from"] == "kim@example.com" and escalation["kind"] == "ticket"


def test_the_escalator_asks_about_a_ticket_by_its_subject_and_body() -> None:
    settings = Settings()
    ticket = SupportTicket.model_validate(TICKET)
    result = Result(
        id=ticket.id,
        kind="ticket",
        classification=classification(("refund", "billing", "complaint"), "ticket"),
        moderation=moderation(),
        route="escalate",
        escalation_reasons=["classify.low_confidence", "moderate.uncertain_category"],
        model=MINI,
        input=InputInfo(tokens=40, chunks=1, truncated=False),
    )
    escalation = EscalationRecord(
        id=ticket.id,
        kind="ticket",
        reasons=result.escalation_reasons,
        result=result,
        event=ticket.model_dump(mode="json"),
        escalated_at=AT,
    )
    tasks = tasks_for(escalation, settings)
    assert [t.name for t in tasks] == ["classify", "moderate"]
    prompt = build_prompt(escalation, ticket, tasks, settings)
    user = prompt.request.messages[-1]["content"]
    assert "The item is a support ticket or email" in user and "Subject: Refund for order 1234" in user
    assert "`ticket`" in user and "kim@example.com" not in user  # the sender is not part of the item text
