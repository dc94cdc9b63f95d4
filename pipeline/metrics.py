"""Prometheus instruments, named once. The stream worker and the escalator update them; /metrics serves them.

`family` is the worker input's family (feed, ticket, transcript, iot); the escalator's series of the shared counters
carry an empty family (Prometheus drops it), since the escalation topic carries every family. docs/operations.md
lists every instrument, deploy/grafana/minnow.json charts them and deploy/prometheus/alerts.yaml alerts on them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Where a worker's output went: `sink` (settled by the mini model), `escalation`, `deadletter`; the escalator's:
# `sink`, `labels`, `review`, `deadletter`.
EVENTS_IN = Counter("minnow_events_in_total", "Records consumed from input topics", ["topic", "family"])
EVENTS_OUT = Counter(
    "minnow_events_out_total",
    "Records produced and acknowledged, by output topic and destination",
    ["topic", "family", "destination"],
)
DEAD_LETTERS = Counter(
    "minnow_dead_letters_total", "Records sent to the dead-letter topic, by error class", ["reason", "family"]
)
ESCALATIONS = Counter("minnow_escalations_total", "Escalated results, by task and reason", ["task", "reason", "family"])
BATCH_SIZE = Histogram(
    "minnow_batch_size", "Events per engine batch", ["family"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
QUEUE_WAIT = Histogram(
    "minnow_queue_wait_seconds", "From consumption to the start of the event's engine batch", ["family"]
)
INFERENCE = Histogram("minnow_inference_seconds", "Engine time per batch", ["family"])
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
EVENT_TO_SINK = Histogram(
    "minnow_event_to_sink_seconds",
    "From the event's own timestamp to its output being acknowledged",
    ["family"],
    buckets=_LATENCY_BUCKETS,
)
PRODUCE_TO_SINK = Histogram(
    "minnow_produce_to_sink_seconds",
    "From the input record's Kafka timestamp (produced or appended) to its output being acknowledged",
    ["family"],
    buckets=_LATENCY_BUCKETS,
)
INFLIGHT = Gauge("minnow_inflight_events", "Events consumed whose outputs are not yet acknowledged")
CONSUMER_LAG = Gauge(
    "minnow_consumer_lag",
    "High watermark minus committed offset, for the partitions this process holds only",
    ["group", "topic", "partition"],
)
PARTITIONS_ASSIGNED = Gauge("minnow_partitions_assigned", "Input partitions assigned to this worker")
INPUT_STALLED = Gauge(
    "minnow_input_stalled",
    "1 while an input holds a batch it could not deliver after its retries (its partitions wait; the others go on)",
    ["topic", "family"],
)
# What the same results would have cost asked of the large model one by one (pipeline/escalation/counterfactual.py).
COUNTERFACTUAL_COST = Counter(
    "minnow_counterfactual_cost_usd_total",
    "Estimated USD had every result been asked of the large model at the configured price",
    ["family"],
)
COUNTERFACTUAL_TOKENS = Counter(
    "minnow_counterfactual_tokens_total",
    "Estimated large-model tokens had every result been asked of it",
    ["family", "direction"],
)

# The escalation tier (`minnow escalator`, docs/escalation.md).
ESCALATOR_REQUESTS = Counter(
    "minnow_escalator_requests_total", "Requests to the large model, by HTTP status, timeout or error", ["status"]
)
ESCALATOR_REQUEST_SECONDS = Histogram(
    "minnow_escalator_request_seconds",
    "Large-model request latency, send to last byte",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
ESCALATOR_TOKENS = Counter("minnow_escalator_tokens_total", "Tokens billed by the large model", ["direction"])
ESCALATOR_SPEND = Counter("minnow_escalator_spend_usd_total", "Estimated large-model spend in USD", ["model"])
ESCALATOR_SPEND_PERIOD = Gauge("minnow_escalator_budget_spent_usd", "Spend counted against the caps so far", ["period"])
ESCALATOR_BUDGET_CAP = Gauge(
    "minnow_escalator_budget_cap_usd",
    "The configured spend caps, by period (day, month) and cap (soft, hard)",
    ["period", "cap"],
)
ESCALATOR_CACHE_HITS = Counter("minnow_escalator_cache_hits_total", "Items answered from the content-hash cache")
ESCALATOR_OUTCOMES = Counter(
    "minnow_escalator_outcomes_total", "Escalation records settled and delivered, by outcome", ["outcome", "reason"]
)
ESCALATOR_BREAKER_OPEN = Gauge(
    "minnow_escalator_breaker_open",
    "1 while the circuit breaker is open or half-open, by the model it guards",
    ["model"],
)
ESCALATOR_INFLIGHT = Gauge("minnow_escalator_inflight_records", "Escalation records consumed and not yet delivered")
CONVERSATIONS_OPEN = Gauge("minnow_conversations_open", "Conversations gathering segments on this worker")
CONVERSATIONS_CLOSED = Counter(
    "minnow_conversations_closed_total", "Conversation records emitted, by why they closed", ["reason"]
)
IOT_WINDOWS = Counter("minnow_iot_windows_total", "Per-device window summaries emitted")
IOT_LATE_MESSAGES = Counter(
    "minnow_iot_late_messages_total",
    "IoT messages not folded into their window, by why (late, future, replayed)",
    ["placement"],
)
SEGMENTS_AFTER_CLOSE = Counter(
    "minnow_segments_after_close_total", "Segments of an already closed conversation (replays, stragglers)"
)
