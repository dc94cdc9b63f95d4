"""Which consumed offsets may be committed when records finish out of order."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable

from aiokafka import TopicPartition


class OffsetLedger:
    """Per partition, the offsets taken and which are finished; a partition commits up to its first unfinished one.

    Records finish out of order (each waits on its own request); committing past an unfinished one would lose it
    on a crash, so the commit point is one past the longest finished run from the oldest offset taken.
    """

    def __init__(self) -> None:
        self._open: dict[TopicPartition, OrderedDict[int, bool]] = {}
        self._ready: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def take(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, OrderedDict())[offset] = False

    def finish(self, tp: TopicPartition, offset: int) -> None:
        pending = self._open.get(tp)
        if pending is None or offset not in pending:
            return  # the partition was revoked meanwhile
        pending[offset] = True
        while pending and pending[next(iter(pending))]:
            done, _ = pending.popitem(last=False)
            self._ready[tp] = done + 1

    def in_flight(self, partitions: Collection[TopicPartition] | None = None) -> int:
        return sum(len(p) for tp, p in self._open.items() if partitions is None or tp in partitions)

    def committable(self, partitions: Collection[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Next offsets to commit that are past what was committed (for the given partitions, or all)."""
        return {
            tp: offset
            for tp, offset in self._ready.items()
            if (partitions is None or tp in partitions) and offset > self._committed.get(tp, -1)
        }

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._open.pop(tp, None)
            self._ready.pop(tp, None)
            self._committed.pop(tp, None)
