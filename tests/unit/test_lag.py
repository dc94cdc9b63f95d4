"""Each replica reports the lag of the partitions it holds only, and drops a partition's series when it loses it,
so `sum(minnow_consumer_lag)` across replicas counts every partition exactly once, before and after a rebalance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from pipeline.metrics import CONSUMER_LAG
from pipeline.stream.lag import LagReport, Partition

TOPIC = "t.feeds.in"
GROUP = "g"
# What the broker says each partition of the group still holds (what every replica would measure).
TRUE_LAG: dict[Partition, int] = {(TOPIC, 0): 40, (TOPIC, 1): 7, (TOPIC, 2): 0, (TOPIC, 3): 13}


class Replica:
    """One worker process: its own registry (as scraped separately) and its own report."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauge = Gauge("minnow_consumer_lag", "lag", ["group", "topic", "partition"], registry=self.registry)
        self.report = LagReport(GROUP, [TOPIC], gauge=gauge)

    def series(self) -> dict[tuple[str, str], float]:
        """(topic, partition) -> value of every lag series this replica exposes."""
        return {
            (sample.labels["topic"], sample.labels["partition"]): sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
        }

    def measure(self) -> None:
        """A tracker round: the whole group's lag is measured, the report keeps what this replica holds."""
        self.report.publish(TRUE_LAG)


def total(*replicas: Replica) -> float:
    """What `sum(minnow_consumer_lag)` reads across the replicas' scrapes."""
    return sum(value for replica in replicas for value in replica.series().values())


def test_a_replica_publishes_only_the_partitions_it_holds() -> None:
    """Measured for all four partitions, a replica holding 0 and 2 exposes those two series and no others."""
    replica = Replica()
    replica.report.assigned([(TOPIC, 0), (TOPIC, 2), ("t.feeds.in-changelog", 0)])  # changelogs are not inputs
    replica.measure()
    assert replica.series() == {(TOPIC, "0"): 40.0, (TOPIC, "2"): 0.0}


def test_sum_across_replicas_is_the_groups_lag_before_and_after_a_rebalance() -> None:
    """One replica holding everything, then two splitting the partitions: the sum is 60 records throughout, where
    reporting the whole group on each replica would read 120 after the second one joins."""
    first, second = Replica(), Replica()
    first.report.assigned(TRUE_LAG)
    first.measure()
    assert total(first, second) == sum(TRUE_LAG.values()) == 60

    # Eager rebalance: everything revoked, then each gets its new share.
    first.report.revoked(TRUE_LAG)
    second.report.revoked([])
    assert first.series() == {}, "a revoked partition's series goes at once, not at the next round"
    first.report.assigned([(TOPIC, 0), (TOPIC, 1)])
    second.report.assigned([(TOPIC, 2), (TOPIC, 3)])
    first.measure()
    second.measure()
    assert set(first.series()) == {(TOPIC, "0"), (TOPIC, "1")}
    assert set(second.series()) == {(TOPIC, "2"), (TOPIC, "3")}
    assert total(first, second) == 60


def test_a_new_assignment_drops_the_series_of_partitions_not_in_it() -> None:
    """Assigned 0-3 then only 3: the series of 0, 1 and 2 are removed without waiting for a tracker round."""
    replica = Replica()
    replica.report.assigned(TRUE_LAG)
    replica.measure()
    replica.report.assigned([(TOPIC, 3)])
    assert replica.series() == {(TOPIC, "3"): 13.0}


def test_a_measurement_that_lands_after_a_revocation_is_not_published() -> None:
    """A tracker round started before the rebalance finishes after it: the lost partition stays unreported."""
    replica = Replica()
    replica.report.assigned([(TOPIC, 0), (TOPIC, 1)])
    in_flight = {tp: TRUE_LAG[tp] for tp in replica.report.held}  # measured while still held
    replica.report.revoked([(TOPIC, 0)])
    replica.report.publish(in_flight)
    assert replica.series() == {(TOPIC, "1"): 7.0}


def test_the_default_report_writes_the_process_gauge_with_the_group_label() -> None:
    """The worker's report sets minnow_consumer_lag{group,topic,partition} and removes it on revocation."""
    report = LagReport("lag-unit-group", ["lag-unit.in"])
    report.assigned([("lag-unit.in", 5)])
    report.publish({("lag-unit.in", 5): 12})
    labels = {"group": "lag-unit-group", "topic": "lag-unit.in", "partition": "5"}

    def value() -> float | None:
        for metric in CONSUMER_LAG.collect():
            for sample in metric.samples:
                if sample.labels == labels:
                    return sample.value
        return None

    assert value() == 12.0
    report.revoked([("lag-unit.in", 5)])
    assert value() is None
