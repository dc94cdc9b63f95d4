"""Answers by content hash, so the same redacted request is paid for once (at-least-once replays included), and
which input records were settled, so a replay after a crash skips them.

`AnswerStore` is what the escalator uses: `AnswerCache` here keeps answers in memory; `cache_file.FileAnswerCache`
keeps them in a SQLite file across restarts. Both are `SettledRecords` too.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from pipeline.escalation.client import ChatRequest


def content_key(request: ChatRequest, *, tasks: tuple[str, ...], model: str, prompt_version: str) -> str:
    """sha256 over the tasks, the model, the prompt version and the request as sent (redacted text, schema)."""
    payload = orjson.dumps(
        {
            "tasks": list(tasks),
            "model": model,
            "prompt_version": prompt_version,
            "messages": list(request.messages),
            "schema": request.schema,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """A valid answer as the model gave it: placeholders unrestored, so it fits any item with the same redacted text.

    `tokens_in` / `tokens_out` are what getting it was billed (every attempt), kept for the record; a hit costs 0.
    """

    answer: dict[str, Any]
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    # A final decision that was a review (the model's answers stayed invalid, or it rejected the request): the same
    # content goes to review again without a request. `answer` is then empty.
    review_reason: str | None = None
    review_error: str = ""


# Review reasons that are decisions about the content, not about the moment (breaker, budget, an outage): cached.
FINAL_REVIEW_REASONS = frozenset({"answer.invalid", "large_model.rejected"})


class AnswerStore(Protocol):
    """Where the escalator looks answers up and keeps them. Neither call raises: a broken store is a miss."""

    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, value: CachedAnswer) -> None: ...


class SettledRecords(Protocol):
    """Input records whose outputs were all delivered, by (topic, partition, offset) and a digest of their bytes:
    what a restarted escalator skips although its offsets were not committed yet (out-of-order completion keeps
    the commit point behind them). Neither call raises: a broken store is a miss."""

    async def was_settled(self, topic: str, partition: int, offset: int, digest: str) -> bool: ...

    async def mark_settled(self, topic: str, partition: int, offset: int, digest: str) -> None: ...

    async def forget_settled(self, topic: str, partition: int, below: int) -> None: ...


class EscalatorStore(AnswerStore, SettledRecords, Protocol):
    """What `minnow escalator` keeps across records: answers and settled records (`cache_file.open_cache`)."""


class AnswerCache:
    """A bounded LRU map from content key to answer, in memory; `max_entries` 0 keeps nothing.

    An answer older than `ttl_s` (by `now`, seconds) is a miss and is dropped.
    """

    def __init__(
        self, max_entries: int, *, ttl_s: float = float("inf"), now: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_entries
        self._ttl_s = ttl_s
        self._now = now
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._settled: dict[tuple[str, int, int], str] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedAnswer | None:
        return self.lookup(key)

    async def put(self, key: str, value: CachedAnswer) -> None:
        self.keep(key, value)

    def lookup(self, key: str) -> CachedAnswer | None:
        found = self._entries.get(key)
        if found is not None and self._now() - found[0] >= self._ttl_s:
            del self._entries[key]
            found = None
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[1]

    def keep(self, key: str, value: CachedAnswer) -> None:
        if self._max == 0:
            return
        self._entries[key] = (self._now(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def was_settled(self, topic: str, partition: int, offset: int, digest: str) -> bool:
        return self._settled.get((topic, partition, offset)) == digest

    async def mark_settled(self, topic: str, partition: int, offset: int, digest: str) -> None:
        self._settled[(topic, partition, offset)] = digest

    async def forget_settled(self, topic: str, partition: int, below: int) -> None:
        for place in [p for p in self._settled if p[0] == topic and p[1] == partition and p[2] < below]:
            del self._settled[place]
