"""Which partitions' consumer lag this process reports: only those it holds, so a sum() across replicas is right.

Every replica could measure the lag of the whole group, but if each published it, `sum(minnow_consumer_lag)` over
three replicas would read three times the backlog. A `LagReport` follows the rebalances of one consumer group
(`assigned` with the whole new assignment, `revoked` with what is taken away), publishes the measured lag of the
partitions it holds, and removes the series of a partition the moment it is lost, so no stale value lingers on
the old owner beside the new owner's. Measuring is `health.track_lag`'s job; this module only decides what shows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from prometheus_client import Gauge

from pipeline.metrics import CONSUMER_LAG

Partition = tuple[str, int]
"""(topic, partition); aiokafka's and faust's TopicPartition are named tuples of the same shape."""


class LagReport:
    """The lag series of one consumer group in this process: the partitions it holds, nothing else."""

    def __init__(self, group: str, topics: Collection[str], gauge: Gauge = CONSUMER_LAG) -> None:
        self.group = group
        self.topics = frozenset(topics)
        self._gauge = gauge
        self._held: frozenset[Partition] = frozenset()
        self._shown: set[Partition] = set()

    @property
    def held(self) -> frozenset[Partition]:
        return self._held

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """The whole new assignment (eager rebalancing); partitions of other topics (changelogs) are ignored."""
        self._held = frozenset((tp[0], int(tp[1])) for tp in partitions if tp[0] in self.topics)
        self._drop_unheld()

    def revoked(self, partitions: Iterable[Partition]) -> None:
        """Partitions taken away: their series go at once, before another replica reports them."""
        self._held = self._held - {(tp[0], int(tp[1])) for tp in partitions}
        self._drop_unheld()

    def publish(self, lags: Mapping[Partition, int]) -> None:
        """Set the series of the held partitions; a measurement of one lost meanwhile is dropped."""
        for tp, lag in lags.items():
            if tp in self._held:
                self._gauge.labels(group=self.group, topic=tp[0], partition=str(tp[1])).set(lag)
                self._shown.add(tp)
        self._drop_unheld()

    def _drop_unheld(self) -> None:
        for tp in self._shown - self._held:
            self._gauge.remove(self.group, tp[0], str(tp[1]))
        self._shown &= self._held
