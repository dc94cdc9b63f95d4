"""One JSON encoding for every record Minnow writes: null fields left out, read back as the same model."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from pipeline.models import LabelRecord
from pipeline.review.verdicts import label_key
from pipeline.stream.codec import encode

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


def test_encode_leaves_out_null_fields_and_reads_back_as_the_same_model() -> None:
    verdict = _verdict(task="classify", label_set="feed", label="business")
    value = encode(verdict)
    assert orjson.loads(value) == {
        "id": "post-17",
        "kind": "feed",
        "task": "classify",
        "text": "rates rose again",
        "label_set": "feed",
        "label": "business",
        "source": "human",
        "decided_by": "ana",
        "decided_at": "2026-11-27T09:00:00Z",
    }
    assert LabelRecord.model_validate_json(value) == verdict


def test_an_empty_list_is_kept_only_none_is_left_out() -> None:
    """A moderation verdict that flags nothing says so ([]); it is not the same as no moderation verdict."""
    value = orjson.loads(encode(_verdict(task="moderate", flagged_categories=[])))
    assert value["flagged_categories"] == [] and "label" not in value and "summary" not in value


def test_the_labels_key_is_task_and_event_id() -> None:
    """Compaction keeps one verdict per item and task, whichever tool (escalator or review) wrote it."""
    assert label_key(_verdict(task="moderate", flagged_categories=["spam"])) == "moderate:post-17"
