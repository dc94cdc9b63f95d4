"""OffsetFetch v7 as Kafka's protocol spells it, and how long a group waits for offsets a transaction holds
(pipeline/stream/stable_offsets.py; the broker-backed proof is tests/integration/test_stable_offsets.py)."""

from __future__ import annotations

from aiokafka import TopicPartition

from pipeline.stream.stable_offsets import OffsetFetchRequest_v7, OffsetFetchResponse_v7, Patience, partition_rows


def test_the_v7_request_is_encoded_as_kafkas_flexible_schema_says() -> None:
    """Compact strings and arrays (length + 1 as an unsigned varint), tagged-field sections, and require_stable as
    one byte after the topics: group "g", topic "t", partition 0, require_stable true."""
    encoded = OffsetFetchRequest_v7("g", [("t", [0], {})], True, {}).encode()
    assert encoded == bytes([0x02, ord("g"), 0x02, 0x02, ord("t"), 0x02, 0, 0, 0, 0, 0x00, 0x01, 0x00])


def test_a_v7_response_yields_each_partitions_offset_metadata_and_error() -> None:
    """A v7 answer (leader epoch and tags per partition) decoded from its bytes gives the same rows as v1-v3 do;
    null metadata reads as empty, and UNSTABLE_OFFSET_COMMIT (88) comes through as the partition's error."""
    response = OffsetFetchResponse_v7(
        0,
        [("t", [(0, 42, -1, None, 0, {}), (1, -1, -1, "m", 88, {})], {})],
        0,
        {},
    )
    decoded = OffsetFetchResponse_v7.decode(response.encode())
    assert partition_rows(decoded) == [(TopicPartition("t", 0), 42, "", 0), (TopicPartition("t", 1), -1, "m", 88)]


def test_a_groups_partitions_share_one_clock_and_a_quiet_group_starts_a_new_one() -> None:
    """The partitions of one hanging transaction, asked for one after another, do not wait `wait_s` each: once the
    group has waited that long, each is overdue at once. After `wait_s` without an unstable answer, a new wait
    starts from zero (a transaction pending hours later is waited for again)."""
    now = [0.0]
    patience = Patience(clock=lambda: now[0])
    patience.wait_s = 90.0
    feeds, devices = TopicPartition("feeds.in", 0), TopicPartition("iot.in", 0)
    assert not patience.overdue("g", feeds)
    now[0] = 89.0
    assert not patience.overdue("g", feeds)
    now[0] = 90.5
    assert patience.overdue("g", feeds)
    assert patience.overdue("g", devices)  # its first unstable answer, but the group has waited long enough
    assert not patience.overdue("other", devices)  # another group has its own clock
    now[0] = 500.0  # quiet since 90.5
    assert not patience.overdue("g", feeds)
