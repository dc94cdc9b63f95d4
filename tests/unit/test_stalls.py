"""A batch that cannot be delivered stalls its own input only (at-least-once): quick retries, then slow ones while
the worker's other inputs go on; the process gives up only when it cannot go on as a whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

from pipeline.errors import DeliveryError
from pipeline.stream.stalls import Patience, Stalls
from pipeline.stream.transactions import Transactions
from pipeline.stream.worker import BatchProcessor, InputRecord, batch_agent
from tests.unit.test_stream_units import (
    SETTINGS,
    FakeEngine,
    FakeSender,
    FakeStream,
    _event,
    feed,
    metric,
    record,
)

TOPIC = "t.feeds.in"


class Clock:
    """Virtual time for the patience: `sleep` moves `now` on, and heals the sender once `now` reaches `heal_at`."""

    def __init__(self, sender: FakeSender, *, heal_at: float | None = None) -> None:
        self.sender, self.heal_at = sender, heal_at
        self.now = 0.0
        self.pauses: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self.heal_at is not None and self.now >= self.heal_at:
            self.sender.fail = None
        await asyncio.sleep(0)

    def patience(self, stalls: Stalls, *, retries: int, can_wait: Callable[[], bool] = lambda: True) -> Patience:
        return Patience(
            stalls, TOPIC, retries=retries, stalled_retry_s=30, can_wait=can_wait, sleep=self.sleep, clock=self.time
        )


def processor(sender: FakeSender, patience: Patience | None) -> BatchProcessor:
    return BatchProcessor(SETTINGS, FakeEngine(), sender, patience=patience)


def two_records() -> list[InputRecord]:
    return [record(feed("a"), 7, topic="feeds.in"), record(feed("b"), 8, topic="feeds.in")]


def test_a_batch_that_fails_once_is_sent_again_whole_and_in_order_without_stalling() -> None:
    """One failure costs a quick retry of the whole batch, in its order; the input never counts as stalled."""
    sender = FakeSender(fail=RuntimeError("leader moved"))
    clock = Clock(sender, heal_at=0.5)
    stalls = Stalls({TOPIC: "feed"})
    delivered = asyncio.run(processor(sender, clock.patience(stalls, retries=2)).handle(two_records()))
    assert [o.key for o in delivered] == [o.key for o in sender.sent[2:]], "the second try sends the batch again"
    assert [o.key for o in sender.sent[:2]] == [o.key for o in sender.sent[2:]], "in the same order"
    assert len(sender.sent) == 4 and not stalls.is_stalled(TOPIC) and clock.now == 1.0
    assert metric("minnow_input_stalled", topic=TOPIC, family="feed") == 0


def test_after_its_retries_an_input_stalls_says_where_and_recovers_when_delivery_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the quick retries the input is stalled (gauge 1, one CRITICAL line naming the batch's partition and
    offsets) while another input is not; once a slow retry delivers, the gauge is back to 0."""
    sender = FakeSender(fail=RuntimeError("NotEnoughReplicas"))
    stalls = Stalls({TOPIC: "feed", "t.tickets.in": "ticket"})
    seen: list[float] = []

    class Watch(Clock):
        async def sleep(self, seconds: float) -> None:
            seen.append(metric("minnow_input_stalled", topic=TOPIC, family="feed"))
            await super().sleep(seconds)

    # Quick pauses of 1 s and 2 s (retries=2), then slow ones of 30 s; it heals during the second slow pause.
    clock = Watch(sender, heal_at=40)
    delivered = asyncio.run(processor(sender, clock.patience(stalls, retries=2)).handle(two_records()))
    assert len(delivered) == 2
    assert clock.now == 1 + 2 + 30 + 30, "sent again after 1 s, 2 s, then every 30 s"
    assert max(seen) == 1, "the input counted as stalled while it waited"
    assert metric("minnow_input_stalled", topic=TOPIC, family="feed") == 0, "and not any more once delivered"
    assert metric("minnow_input_stalled", topic="t.tickets.in", family="ticket") == 0
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "t.feeds.in[2]@7-8" in critical[0] and "other inputs go on" in critical[0]
    assert len(sender.sent) == 2 * 5, "first try, two quick retries, two slow ones"


def test_when_every_input_is_stalled_the_process_gives_up() -> None:
    """A worker whose only input stalls cannot go on at all: the failure is raised (the agent exits 75)."""
    sender = FakeSender(fail=RuntimeError("broker gone"))
    clock = Clock(sender)
    patience = clock.patience(Stalls({TOPIC: "feed"}), retries=1)
    with pytest.raises(DeliveryError, match=r"every input of this worker is stalled.*t.feeds.in\[2\]@7-8"):
        asyncio.run(processor(sender, patience).handle(two_records()))
    assert clock.now == 1.0 and len(sender.sent) == 4


def test_a_second_input_stalling_ends_the_process_too() -> None:
    """Two inputs, both stalled: the one that stalls last raises instead of waiting beside the other."""
    stalls = Stalls({TOPIC: "feed", "t.tickets.in": "ticket"})
    stalls.stall("t.tickets.in")
    sender = FakeSender(fail=RuntimeError("broker gone"))
    patience = Clock(sender).patience(stalls, retries=0)
    with pytest.raises(DeliveryError, match="every input of this worker is stalled"):
        asyncio.run(processor(sender, patience).handle(two_records()))


def test_a_rebalance_or_stop_while_waiting_ends_the_wait() -> None:
    """faust waits for every consumed event to be acked before it hands partitions over; an undelivered batch never
    is, so the wait gives up (the process exits) as soon as a rebalance or a stop begins."""
    sender = FakeSender(fail=RuntimeError("NotEnoughReplicas"))
    clock = Clock(sender)
    flow = {"active": True}

    async def sleep(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.pauses) == 5:
            flow["active"] = False

    stalls = Stalls({TOPIC: "feed", "t.tickets.in": "ticket"})
    patience = Patience(
        stalls, TOPIC, retries=0, stalled_retry_s=30, can_wait=lambda: flow["active"], sleep=sleep, clock=clock.time
    )
    with pytest.raises(DeliveryError, match="partitions must be handed over"):
        asyncio.run(processor(sender, patience).handle(two_records()))
    assert len(clock.pauses) == 5


def test_without_patience_a_failure_is_raised_at_once() -> None:
    """Exactly-once has no patience: a failed send spoils the transaction, so the batch fails on its first try."""
    sender = FakeSender(fail=RuntimeError("fenced"))
    with pytest.raises(DeliveryError):
        asyncio.run(processor(sender, None).handle(two_records()))
    assert len(sender.sent) == 2


# ------------------------------------------------------------------------- commits cut off from the broker
class _StopError(Exception):
    pass


class AckingStream(FakeStream):
    async def ack(self, event: Any) -> None:
        return None


def test_a_commit_that_never_returns_ends_the_process_after_the_delivery_timeout() -> None:
    """A worker that cannot commit (its group coordinator gone: faust's commit then waits without a bound) exits 75
    after the delivery timeout instead of hanging with its batch delivered but never committed."""
    failures: list[BaseException] = []

    def on_failure(exc: BaseException) -> NoReturn:
        failures.append(exc)
        raise _StopError

    async def commit(origins: set[tuple[str, int]]) -> None:
        await asyncio.Event().wait()  # the coordinator never answers

    settings = SETTINGS.model_copy(update={"worker": SETTINGS.worker.model_copy(update={"delivery_timeout_s": 0.2})})
    processor = BatchProcessor(settings, FakeEngine(), FakeSender())
    stream = AckingStream([[_event(feed("a"), 0)]])
    agent = batch_agent(processor, settings, on_failure=on_failure, commit=commit)
    with pytest.raises(_StopError):
        asyncio.run(asyncio.wait_for(agent(stream), 5))
    assert len(failures) == 1 and "offsets not committed within" in str(failures[0])


def test_waiting_for_a_transaction_that_a_stuck_commit_holds_is_bounded() -> None:
    """Exactly-once: faust's commit holds the partitions' transaction locks while it waits for the transaction
    coordinator; a batch waits for them at most `within_s`, then fails (the agent exits 75)."""
    lock = asyncio.Lock()
    producer = SimpleNamespace(_trn_locks={"app-0-1": lock}, _transaction_producers={}, commit_transactions=None)
    consumer = SimpleNamespace(transactions=SimpleNamespace(producer=producer), commit=None)
    app: Any = SimpleNamespace(
        in_transaction=True,
        consumer=consumer,
        conf=SimpleNamespace(id="app"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
    )
    transactions = Transactions(app)

    async def scenario() -> str:
        await lock.acquire()  # a commit in progress, waiting for the coordinator
        try:
            async with transactions.hold([("t.feeds.in", 1)], within_s=0.1):
                return "entered"
        except DeliveryError as exc:
            return str(exc)

    assert "transactions were not free within" in asyncio.run(asyncio.wait_for(scenario(), 5))
