"""One JSON encoding for every record Minnow writes: every field, nulls included, read back as the same model."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from pipeline.codec import encode
from pipeline.models import LabelRecord
from pipeline.review.verdicts import label_key

DECIDED_AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def _verdict(**fields: object) -> LabelRecord:
    common: dict[str, object] = {
        "id": "post-17",
        "kind": "feed",
        "text": "rates rose again",
        "source": "human",
        "decided_by": "ana",
        "decided_at": DECIDED_AT,
    }
    return LabelRecord.model_validate(common | fields)


def test_encode_writes_every_field_and_reads_back_as_the_same_model() -> None:
    """Nulls are written, not left out: the topic schemas require the fields that have no default."""
    verdict = _verdict(task="classify", label_set="feed", label="business")
    value = encode(verdict)
    assert orjson.loads(value) == {
        "id": "post-17",
        "kind": "feed",
        "task": "classify",
        "text": "rates rose again",
        "label_set": "feed",
        "label": "business",
        "flagged_categories": None,
        "summary": None,
        "source": "human",
        "decided_by": "ana",
        "decided_at": "2026-11-27T09:00:00Z",
    }
    assert LabelRecord.model_validate_json(value) == verdict


def test_an_empty_list_is_not_a_null() -> None:
    """A moderation verdict that flags nothing says so ([]); it is not the same as no moderation verdict (null)."""
    value = orjson.loads(encode(_verdict(task="moderate", flagged_categories=[])))
    assert value["flagged_categories"] == [] and value["label"] is None and value["summary"] is None


def test_the_labels_key_is_task_and_event_id() -> None:
    """Compaction keeps one verdict per item and task, whichever tool (escalator or review) wrote it."""
    assert label_key(_verdict(task="moderate", flagged_categories=["spam"])) == "moderate:post-17"
