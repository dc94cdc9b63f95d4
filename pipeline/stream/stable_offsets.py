"""Committed offsets read only once they are stable (KIP-447's `require_stable`), for every consumer group.

An exactly-once worker commits its input offsets inside its transactions. When the broker restarts in the middle
of completing such a transaction (its commit decided, the markers not yet written), the offsets stay *pending*
until the broker has written them, and an OffsetFetch without `require_stable` answers the offsets from before
that transaction. A worker restarted meanwhile would start from there and produce again the outputs the
transaction is about to make visible: measured, 46 duplicates to a read_committed consumer in 1 of 2 broker-kill
runs (docs/faults.md). With `require_stable` the broker answers UNSTABLE_OFFSET_COMMIT for such a partition
until the transaction is complete, and the consumer asks again after its retry backoff - what the Java consumer
has done under read_committed since Kafka 2.5.

aiokafka 0.14 speaks OffsetFetch up to v3 only, so this module adds v7 (flexible encoding, `require_stable`) and
replaces `GroupCoordinator._do_fetch_commit_offsets`, which both of aiokafka's paths to committed offsets go
through (the assignment's refresh and `committed()`). A broker older than 2.5 gets the v1-v3 request as before.
A group that never commits in a transaction never sees the error, so every group gets it. The wait is bounded
(`MINNOW_KAFKA__STABLE_OFFSETS_WAIT_S`): a transaction the broker never completes must not keep a worker from
starting for ever. `tests/integration/test_stable_offsets.py` holds a transaction open with offsets in it and
proves a consumer waits for its commit and starts after it, and starts from the older offset once the bound passes.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any, TypeAlias

from aiokafka import errors as kafka_errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import (
    OffsetFetchRequest_v1,
    OffsetFetchRequest_v2,
    OffsetFetchRequest_v3,
)
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

NO_COMMITTED_OFFSET = -1
AIOKAFKA_FETCH = GroupCoordinator._do_fetch_commit_offsets  # aiokafka's own, before `install` (tests compare)


class UnstableOffsetCommitError(kafka_errors.BrokerResponseError):  # type: ignore[misc]  # aiokafka: no hints
    """A transaction holding offsets for the partition is still being completed; ask again (retriable)."""

    errno = 88
    message = "UNSTABLE_OFFSET_COMMIT"
    description = "There are unstable offsets that need to be cleared."
    retriable = True


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]  # noqa: N801  # aiokafka's names; it ships no hints
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("topic", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition", Int32),
                        ("offset", Int64),
                        ("leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("consumer_group", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("topic", CompactString("utf-8")),
                ("partitions", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


StableOffsetFetchStruct: TypeAlias = (
    OffsetFetchRequest_v1 | OffsetFetchRequest_v2 | OffsetFetchRequest_v3 | OffsetFetchRequest_v7
)


class StableOffsetFetchRequest(Request[StableOffsetFetchStruct]):  # type: ignore[misc]
    """OffsetFetch at v7 (with `require_stable` as asked) where the broker speaks it, else at the highest of v1-v3."""

    API_KEY = 9

    def __init__(self, group_id: str, partitions: list[tuple[str, list[int]]], *, require_stable: bool) -> None:
        self._group_id = group_id
        self._partitions = partitions
        self._require_stable = require_stable

    def build(self, request_struct_class: type[StableOffsetFetchStruct]) -> StableOffsetFetchStruct:
        if request_struct_class is OffsetFetchRequest_v7:
            topics: list[tuple[str, list[int], dict[int, bytes]]] = [(t, ps, {}) for t, ps in self._partitions]
            return OffsetFetchRequest_v7(self._group_id, topics, self._require_stable, {})
        return request_struct_class(self._group_id, self._partitions)


Row: TypeAlias = tuple[TopicPartition, int, str, int]  # partition, offset, metadata, error code


def partition_rows(response: Any) -> list[Row]:
    """(partition, offset, metadata, error code) of every partition in a v1-v3 or v7 response."""
    rows = []
    for topic_row in response.topics:
        topic, partitions = topic_row[0], topic_row[1]
        for row in partitions:
            if response.API_VERSION >= 5:  # (partition, offset, leader epoch, metadata, error, tags)
                partition, offset, _epoch, metadata, error_code = row[:5]
            else:
                partition, offset, metadata, error_code = row
            rows.append((TopicPartition(topic, partition), offset, metadata or "", error_code))
    return rows


class Patience:
    """How long each consumer group has been waiting for offsets a transaction holds, and how long it may.

    A transaction the broker never completes (a hanging transaction: seen in 2 of 11 runs of the broker-kill test
    that SIGKILLs the only broker, whose transaction log then came back without the transaction's offsets partition
    while the group's log kept the pending offsets) would otherwise keep a worker from starting for ever; the Java
    consumer has that problem too (KIP-664). Past `wait_s` a partition starts from its last stable offset, which can
    repeat the outputs of the transaction's batches should it ever commit - said in a WARNING.

    The clock is the group's, not each partition's: faust asks for its partitions' offsets one after another, and
    the partitions of one hanging transaction would otherwise wait `wait_s` each. A wait ends once the group has had
    no unstable answer for `wait_s`; the next one starts a new clock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = 90.0
        self._clock = clock
        self._since: dict[str, float] = {}  # group -> when its current wait began
        self._last: dict[str, float] = {}  # group -> its latest unstable answer

    def overdue(self, group_id: str, tp: TopicPartition) -> bool:
        now = self._clock()
        if group_id not in self._since or now - self._last[group_id] > self.wait_s:
            self._since[group_id] = now
            log.warning(
                "committed offset of %s[%d] (group %s) is held by a transaction the broker has not completed; "
                "waiting up to %.0f s for it (MINNOW_KAFKA__STABLE_OFFSETS_WAIT_S)",
                tp.topic,
                tp.partition,
                group_id,
                self.wait_s,
            )
        self._last[group_id] = now
        return now - self._since[group_id] >= self.wait_s


PATIENCE = Patience()


async def _fetch(coordinator: Any, partitions: list[TopicPartition], *, require_stable: bool) -> list[Row]:
    by_topic: dict[str, list[int]] = collections.defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    request = StableOffsetFetchRequest(coordinator.group_id, list(by_topic.items()), require_stable=require_stable)
    return partition_rows(await coordinator._send_req(request))


async def _fetch_stable_offsets(self: Any, partitions: list[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
    """aiokafka's `_do_fetch_commit_offsets`, asking for stable offsets; its error handling kept as it is."""
    group_id = self.group_id
    rows = await _fetch(self, partitions, require_stable=True)
    unstable = [tp for tp, _offset, _metadata, code in rows if code == UnstableOffsetCommitError.errno]
    overdue = [tp for tp in unstable if PATIENCE.overdue(group_id, tp)]
    if len(overdue) < len(unstable):
        raise UnstableOffsetCommitError()  # retriable: aiokafka asks again after its retry backoff
    if overdue:
        log.warning(
            "committed offsets of %s still held by a transaction after %.0f s: starting from the last stable ones "
            "(the transaction's outputs are repeated should it ever commit; docs/faults.md, hanging transactions)",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in overdue),
            PATIENCE.wait_s,
        )
        rows = [row for row in rows if row[3] != UnstableOffsetCommitError.errno]
        rows += await _fetch(self, overdue, require_stable=False)
    offsets = {}
    for tp, offset, metadata, error_code in rows:
        error_type = kafka_errors.for_code(error_code)
        if error_type is not kafka_errors.NoError:
            if error_type is kafka_errors.GroupLoadInProgressError:
                raise error_type()
            if error_type is kafka_errors.NotCoordinatorForGroupError:
                self.coordinator_dead()
                raise error_type()
            if error_type is kafka_errors.UnknownTopicOrPartitionError:
                log.warning("OffsetFetch: unknown topic %s", tp.topic)
                continue
            if error_type is kafka_errors.GroupAuthorizationFailedError:
                raise error_type(group_id)
            raise kafka_errors.KafkaError(repr(error_type()))
        if offset != NO_COMMITTED_OFFSET:
            offsets[tp] = OffsetAndMetadata(offset, metadata)
    return offsets


def install(wait_s: float) -> None:
    """Make every aiokafka consumer group in this process read stable committed offsets, waiting at most `wait_s`
    for a partition's (idempotent)."""
    PATIENCE.wait_s = wait_s
    GroupCoordinator._do_fetch_commit_offsets = _fetch_stable_offsets
