"""Topic names, record keys and dead-letter header names: the wire contract, in one place (no Kafka imports)."""

from __future__ import annotations

from pipeline.models import FAMILIES

# Logical topic names; the real name is `Settings.topic(logical)`: MINNOW_TOPICS__<NAME>, else
# MINNOW_KAFKA__TOPIC_PREFIX + the logical name (see topics/). The families'
# own topics are declared on their event models (pipeline/models.py); these are views of that one table.
INPUT_TOPICS = {kind: family.input_topic for kind, family in FAMILIES.items() if family.input_topic is not None}
SINK_TOPICS = {kind: family.sink_topic for kind, family in FAMILIES.items()}
ESCALATION_TOPIC = "escalations"
REVIEW_TOPIC = "review"
DEADLETTER_TOPIC = "deadletter"
IOT_WINDOWS_TOPIC = "iot.windows"
LABELS_TOPIC = "labels"
# Changelogs of worker state (compacted); partition n holds the state of the input topic's partition n.
STATE_TOPICS = {"conversation": "conversations.changelog", "device": "iot.devices.changelog"}

# Headers on every dead-letter record; the value is the original bytes, untouched.
DLQ_SOURCE_TOPIC = "minnow.source.topic"
DLQ_SOURCE_PARTITION = "minnow.source.partition"
DLQ_SOURCE_OFFSET = "minnow.source.offset"
DLQ_ERROR_CLASS = "minnow.error.class"
DLQ_ERROR_MESSAGE = "minnow.error.message"
DLQ_FIRST_SEEN = "minnow.first_seen"
DLQ_ATTEMPT = "minnow.attempt"
# The input record's own headers travel with its dead letter under this prefix, so they can never be taken for
# Minnow's (deadletter.original_headers).
ORIGINAL_HEADER_PREFIX = "minnow.original."

# On a review record that `minnow review` put back at the end of the queue: how many times it was skipped.
REVIEW_SKIPS = "minnow.review.skips"
