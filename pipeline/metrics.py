"""Prometheus instruments, named once. The stream worker updates them; /metrics serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("minnow_events_in_total", "Records consumed from input topics", ["topic"])
EVENTS_OUT = Counter("minnow_events_out_total", "Records produced and acknowledged, by output topic", ["topic"])
DEAD_LETTERS = Counter("minnow_dead_letters_total", "Records sent to the dead-letter topic, by error class", ["reason"])
ESCALATIONS = Counter("minnow_escalations_total", "Escalated results, by task and reason", ["task", "reason"])
BATCH_SIZE = Histogram("minnow_batch_size", "Events per engine batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
QUEUE_WAIT = Histogram("minnow_queue_wait_seconds", "From consumption to the start of the event's engine batch")
INFERENCE = Histogram("minnow_inference_seconds", "Engine time per batch")
EVENT_TO_SINK = Histogram(
    "minnow_event_to_sink_seconds",
    "From the event's own timestamp to its output being acknowledged",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
INFLIGHT = Gauge("minnow_inflight_events", "Events consumed whose outputs are not yet acknowledged")
CONSUMER_LAG = Gauge("minnow_consumer_lag", "High watermark minus committed offset", ["topic", "partition"])
PARTITIONS_ASSIGNED = Gauge("minnow_partitions_assigned", "Input partitions assigned to this worker")
