"""Exactly-once for batch agents: each output goes into its input partition's Kafka transaction.

faust 0.15 (exactly_once) runs one transactional producer per input partition and commits input offsets with
`send_offsets_to_transaction`, but it only routes a send into a transaction when the *destination* is a topic
its consumer reads - our sinks are not, so faust alone writes them outside any transaction (measured: see
docs/architecture-stream.md). This module sends each output through the transactional producer of the input
partition it belongs to, and holds that producer's lock for a whole batch (sends, acknowledgements and the
acks of the input events), so faust's periodic commit can only ever commit a transaction together with the
offsets of every batch whose outputs it holds.

faust computes the offsets to commit *before* it takes a transaction's lock, so a batch that finished in
between would have its outputs committed with the older offsets (measured: 63 duplicates after a SIGKILL).
`install` therefore gates faust's commit: it takes every transaction's lock first, so offsets are computed
while no batch is in flight, and then commits without taking the locks again.

It reaches into faust's aiokafka producer (`_transaction_producers`, `_trn_locks`, `commit_transactions`) and
consumer (`commit`, `_acked`): faust-streaming is pinned below 0.16 for that reason, and the SIGKILL
integration tests in exactly-once mode are what prove it still holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from pipeline.errors import DeliveryError

if TYPE_CHECKING:
    import faust

    from pipeline.stream.worker import OutputRecord


log = logging.getLogger(__name__)


class Transactions:
    """The transactions of the input partitions this worker owns (a no-op under at-least-once)."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._installed = False
        self._gated = False  # faust's commit is running inside the gate, holding every transaction's lock

    @property
    def enabled(self) -> bool:
        return bool(self._app.in_transaction)

    def transactional_id(self, topic: str, partition: int) -> str:
        """faust's id for a partition's producer: app id, copartitioned group, partition."""
        group = self._app.assignor.group_for_topic(topic)
        return f"{self._app.conf.id}-{group}-{partition}"

    @asynccontextmanager
    async def hold(self, origins: Iterable[tuple[str, int]], *, within_s: float | None = None) -> AsyncIterator[None]:
        """Keep faust from committing these partitions' transactions until the block is done.

        A commit holds the locks while it waits for the transaction coordinator, which it does without a bound when
        the broker is gone; `within_s` bounds the wait for them (then DeliveryError: the worker exits 75).
        """
        if not self.enabled:
            yield
            return
        self.install()
        tids = {self.transactional_id(topic, partition) for topic, partition in origins}
        async with self._locked(tids, within_s=within_s):
            yield

    def install(self) -> None:
        """Gate faust's commits behind the transactions' locks (once; exactly-once mode only)."""
        if self._installed or not self.enabled:
            return
        self._installed = True
        consumer: Any = self._app.consumer
        producer = self._producer()
        faust_commit = consumer.commit
        faust_commit_transactions = producer.commit_transactions

        async def commit(*args: Any, **kwargs: Any) -> Any:
            async with self._locked(set(producer._trn_locks)):
                self._gated = True
                try:
                    return await faust_commit(*args, **kwargs)
                finally:
                    self._gated = False

        async def commit_transactions(
            tid_to_offset_map: Any, group_id: str, start_new_transaction: bool = True
        ) -> None:
            if not self._gated:  # not through the gate: faust's own locking
                await faust_commit_transactions(tid_to_offset_map, group_id, start_new_transaction)
                return
            for tid, offsets in tid_to_offset_map.items():
                transaction = producer._transaction_producers.get(tid)
                if transaction is None:
                    log.warning("commit for a transaction this worker no longer has: %s", tid)
                    continue
                await transaction.send_offsets_to_transaction(offsets, group_id)
                await transaction.commit_transaction()
                if start_new_transaction:
                    await transaction.begin_transaction()

        consumer.commit = commit
        producer.commit_transactions = commit_transactions

    @asynccontextmanager
    async def _locked(self, tids: set[str], *, within_s: float | None = None) -> AsyncIterator[None]:
        locks = self._producer()._trn_locks
        async with AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(within_s):
                    for tid in sorted(tids):  # one order everywhere, so two holders cannot wait on each other
                        # A partition revoked meanwhile has no lock; its send fails and the batch is retried.
                        lock: asyncio.Lock | None = locks.get(tid)
                        if lock is not None:
                            await stack.enter_async_context(lock)
            except TimeoutError as exc:
                raise DeliveryError(
                    f"the input partitions' transactions were not free within {within_s:.0f}s: a commit waits for "
                    "the transaction coordinator"
                ) from exc
            yield

    async def send(self, record: OutputRecord) -> Awaitable[Any]:
        """Schedule one output in its origin's transaction (the caller holds that transaction)."""
        assert record.origin is not None
        tid = self.transactional_id(*record.origin)
        producer = self._producer()._transaction_producers.get(tid)
        if producer is None:
            raise RuntimeError(f"no open transaction for {record.origin[0]}[{record.origin[1]}] (partition revoked?)")
        future: Awaitable[Any] = await producer.send(
            record.topic,
            record.value,
            key=record.key,
            partition=record.partition,
            headers=list(record.headers) or None,
        )
        return future

    async def commit_without_input(self, origins: Iterable[tuple[str, int]]) -> None:
        """Commit transactions that hold outputs no input offset will ever commit (timer outputs).

        faust commits a transaction only together with new input offsets; an idle close on a quiet partition
        would otherwise stay invisible until the broker aborts it. When the partition does have offsets to
        commit, faust's next commit takes the outputs along, so nothing is done here.
        """
        if not self.enabled:
            return
        producers = self._producer()._transaction_producers
        consumer: Any = self._app.consumer
        for tid, tps in self._tps_by_transaction(origins).items():
            async with self._locked({tid}):
                if any(consumer._acked.get(tp) for tp in tps):  # acked, not yet committed: faust's commit will
                    continue
                producer = producers.get(tid)
                if producer is not None:
                    await producer.commit_transaction()
                    await producer.begin_transaction()

    # ---------------------------------------------------------------------------------------- internals
    def _producer(self) -> Any:
        return self._app.consumer.transactions.producer

    def _tps_by_transaction(self, origins: Iterable[tuple[str, int]]) -> dict[str, list[Any]]:
        wanted = {self.transactional_id(topic, partition) for topic, partition in origins}
        by_tid: dict[str, list[Any]] = {}
        for tp in self._app.assignor.assigned_actives():
            try:
                tid = self.transactional_id(tp.topic, tp.partition)
            except KeyError:  # a topic outside the assignor's groups has no transaction of its own
                continue
            if tid in wanted:
                by_tid.setdefault(tid, []).append(tp)
        return by_tid
