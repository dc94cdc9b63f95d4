"""One input's undeliverable batch stalls that input only: a few quick retries, then slow ones while the worker's
other inputs go on. The process exits (75) only when it cannot go on as a whole: every input is stalled, or faust
must hand partitions over (a rebalance, a stop) while a batch is still undelivered.

At-least-once only: a failed send inside an exactly-once transaction leaves the transaction to be aborted, which
faust cannot do and rewind, so there a delivery failure still ends the process at once, and a worker of several
families runs each in its own process instead (family_processes.py; docs/architecture-stream.md, "One input cannot
stop the others"). Knows nothing of faust: the agent passes in whether it may go on waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from pipeline import metrics
from pipeline.errors import DeliveryError

log = logging.getLogger(__name__)

# The longest of the quick retries' pauses (1 s, 2 s, 4 s, ...): they are for a leader moving or a broker restarting.
_MAX_QUICK_PAUSE_S = 8.0
# How often a waiting input looks whether it must give up (a rebalance or a stop began).
_LOOK_EVERY_S = 0.5


class Stalls:
    """Which of this worker's inputs (topic -> family) hold a batch they could not deliver."""

    def __init__(self, inputs: Mapping[str, str]) -> None:
        self._inputs = dict(inputs)
        self._stalled: set[str] = set()
        for topic, family in self._inputs.items():  # every input has its series from the start, for the alert
            metrics.INPUT_STALLED.labels(topic=topic, family=family).set(0)

    def stall(self, topic: str) -> None:
        self._stalled.add(topic)
        metrics.INPUT_STALLED.labels(topic=topic, family=self._inputs[topic]).set(1)

    def recover(self, topic: str) -> None:
        self._stalled.discard(topic)
        metrics.INPUT_STALLED.labels(topic=topic, family=self._inputs[topic]).set(0)

    def is_stalled(self, topic: str) -> bool:
        return topic in self._stalled

    @property
    def all_stalled(self) -> bool:
        """Nothing this process runs can make progress: better a restart than a process that only waits."""
        return bool(self._inputs) and self._stalled >= set(self._inputs)


class Patience:
    """How one input waits out a batch that failed to deliver: what BatchProcessor.handle asks after each failure."""

    def __init__(
        self,
        stalls: Stalls,
        topic: str,
        *,
        retries: int,
        stalled_retry_s: float,
        can_wait: Callable[[], bool] = lambda: True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stalls = stalls
        self._topic = topic
        self._retries = retries
        self._stalled_retry_s = stalled_retry_s
        self._can_wait = can_wait
        self._sleep = sleep
        self._clock = clock

    async def wait(self, attempt: int, exc: DeliveryError, *, where: str) -> None:
        """Return when the batch (read from `where`) should be sent again after its `attempt`-th failure; raise when
        the process must exit instead, so the batch is read again after a restart."""
        if attempt <= self._retries:
            pause = min(2.0 ** (attempt - 1), _MAX_QUICK_PAUSE_S, self._stalled_retry_s)
            log.warning(
                "batch read from %s not delivered (try %d of %d), sending it again in %.0f s: %s",
                where,
                attempt,
                self._retries + 1,
                pause,
                exc,
            )
            await self._pause(pause, exc, where)
            return
        if not self._stalls.is_stalled(self._topic):
            self._stalls.stall(self._topic)
            if self._stalls.all_stalled:
                raise DeliveryError(f"every input of this worker is stalled; the last, {where}: {exc}") from exc
            log.critical(
                "input %s stalled: the batch read from %s was not delivered after %d tries (%s); the worker's other "
                "inputs go on, this one sends the batch again every %.0f s",
                self._topic,
                where,
                attempt,
                exc,
                self._stalled_retry_s,
            )
        await self._pause(self._stalled_retry_s, exc, where)

    def delivered(self) -> None:
        """The batch went out after failing: a stalled input goes on."""
        if self._stalls.is_stalled(self._topic):
            self._stalls.recover(self._topic)
            log.warning("input %s delivers again; it goes on from where it stalled", self._topic)

    async def _pause(self, seconds: float, exc: DeliveryError, where: str) -> None:
        deadline = self._clock() + seconds
        while (left := deadline - self._clock()) > 0:
            # A rebalance or a stop waits for every consumed event to be acked, which this batch never will be while
            # undelivered: waiting on would hold every other input too.
            if not self._can_wait():
                raise DeliveryError(
                    f"partitions must be handed over while the batch read from {where} is undelivered: {exc}"
                ) from exc
            if self._stalls.all_stalled:
                raise DeliveryError(f"every input of this worker is stalled; this one, {where}: {exc}") from exc
            await self._sleep(min(_LOOK_EVERY_S, left))
