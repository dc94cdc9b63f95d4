"""Answers by content hash, so the same redacted request is paid for once (at-least-once replays included)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

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
    """A valid answer as the model gave it: placeholders unrestored, so it fits any item with the same redacted text."""

    answer: dict[str, Any]
    model: str


class AnswerCache:
    """A bounded LRU map from content key to answer; `max_entries` 0 keeps nothing."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, CachedAnswer] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAnswer | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: str, value: CachedAnswer) -> None:
        if self._max == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
