"""Conversation assembly in the transcript worker: the open conversations, their changelog and the idle sweep.

The state lives in a mapping of conversation id -> `ConversationState` JSON (the faust table's store in the
worker, so a worker that takes over a partition rebuilds it from the changelog). Every change is written to the
changelog *partition of the input record* (partition n of transcripts.in <-> partition n of the changelog), as
an output of the same batch: acknowledged before the batch's offsets are, and in exactly-once mode inside the
same transaction. faust's own table writes cannot do this from a batch agent - they take the partition from
"the current event", and a batch holds many.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, MutableMapping, Sequence

from pipeline import metrics
from pipeline.codec import encode
from pipeline.models import AnyEvent, ErrorRecord, Scores, TranscriptSegment
from pipeline.settings import Settings
from pipeline.stages.assemble import ConversationState, add_segment, close, due
from pipeline.stream import names
from pipeline.stream.deadletter import Provenance
from pipeline.stream.state import changelog_record, wait_ready
from pipeline.stream.worker import Emitted, InputRecord, OutputRecord, Stepped

StateStore = MutableMapping[bytes, bytes]  # conversation id -> ConversationState JSON


class Conversations:
    """Keeps conversations open across batches and emits each once: on its final segment, when idle, or full."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        clock: Callable[[], float] = time.time,
        input_topic: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._idle_s = settings.worker.conversation_idle_s
        self._keep_closed_s = settings.worker.conversation_keep_closed_s
        self._max_bytes = settings.worker.conversation_max_bytes
        self._input_topic = input_topic or settings.topic(names.INPUT_TOPICS["transcript"])
        self._changelog_topic = settings.topic(names.STATE_TOPICS["conversation"])
        # The agent's batches and the idle sweep both change the store; they take turns.
        self._lock = asyncio.Lock()

    async def ready(self, records: Sequence[InputRecord]) -> None:
        await wait_ready(self._store, records)

    async def step(self, valid: Sequence[tuple[AnyEvent, InputRecord]], scores: list[Scores | ErrorRecord]) -> Stepped:
        """Add the batch's segments (their scores do not depend on the conversation so far); emits the conversations
        they close, and the changelog writes."""
        async with self._lock:
            now = self._clock()
            touched: dict[str, ConversationState] = {}
            closed: list[Emitted] = []
            for event, record in valid:
                if not isinstance(event, TranscriptSegment):
                    continue
                conversation_id = event.conversation_id
                state = touched.get(conversation_id) or self._load(conversation_id)
                partition = record.source.partition
                step = add_segment(state, event, partition=partition, now=now, max_bytes=self._max_bytes)
                if step.ignored:
                    metrics.SEGMENTS_AFTER_CLOSE.inc()
                    continue
                touched[conversation_id] = step.state
                if step.closed is not None:
                    closed.append(Emitted(step.closed, record))
                    metrics.CONVERSATIONS_CLOSED.labels(reason=step.state.close_reason or "final").inc()
            return Stepped(scores, closed, [self._write(state) for state in touched.values()])

    async def sweep(self, partitions: Collection[int]) -> Stepped:
        """Close conversations idle for `conversation_idle_s` and drop old closed markers, on these partitions.

        Only pass partitions the worker has caught up on: after a restart, a conversation's next segments may be
        waiting in the backlog, and "idle" means no segment arrived, not that the worker was down.

        Returns the conversations to emit and the changelog writes; the store already holds the new states (delivery
        failure ends the process, and the restarted worker rebuilds the store from the changelog).
        """
        async with self._lock:
            now = self._clock()
            everything = self._states()
            states = [state for state in everything if state.partition in partitions]
            idle, expired = due(
                [(s.conversation_id, s) for s in states],
                now=now,
                idle_s=self._idle_s,
                keep_closed_s=self._keep_closed_s,
            )
            emitted: list[Emitted] = []
            writes: list[OutputRecord] = []
            for state in idle:
                step = close(state, "idle", now=now)
                if step.closed is not None:
                    emitted.append(Emitted(step.closed, self._origin(state)))
                writes.append(self._write(step.state))
                metrics.CONVERSATIONS_CLOSED.labels(reason="idle").inc()
            writes.extend(self._forget(state) for state in expired)
            # Sampled here, from the states this sweep reads anyway: counting on every batch would parse the
            # whole store on the batch path.
            metrics.CONVERSATIONS_OPEN.set(sum(1 for s in everything if s.closed_at is None) - len(idle))
            return Stepped(emitted=emitted, writes=writes)

    # ---------------------------------------------------------------------------------------- internals
    def _load(self, conversation_id: str) -> ConversationState | None:
        raw = self._store.get(conversation_id.encode())
        return ConversationState.model_validate_json(raw) if raw else None

    def _states(self) -> list[ConversationState]:
        return [ConversationState.model_validate_json(raw) for raw in list(self._store.values()) if raw]

    def _write(self, state: ConversationState) -> OutputRecord:
        key = state.conversation_id.encode()
        value = encode(state)
        self._store[key] = value
        return self._changelog(state, value)

    def _forget(self, state: ConversationState) -> OutputRecord:
        self._store.pop(state.conversation_id.encode(), None)
        return self._changelog(state, None)  # a tombstone: compaction removes the key

    def _changelog(self, state: ConversationState, value: bytes | None) -> OutputRecord:
        return changelog_record(
            self._changelog_topic,
            state.conversation_id.encode(),
            value,
            input_topic=self._input_topic,
            partition=state.partition,
        )

    def _origin(self, state: ConversationState) -> InputRecord:
        """Provenance for an idle close: no input record triggered it, only the partition is known."""
        source = Provenance(topic=self._input_topic, partition=state.partition, offset=-1)
        return InputRecord(source=source, key=state.conversation_id.encode(), value=None, consumed_at=time.monotonic())
