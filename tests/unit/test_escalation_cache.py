"""The content-hash cache: bounded LRU, and a key that changes with anything that changes the answer."""

from __future__ import annotations

from pipeline.escalation.cache import AnswerCache, CachedAnswer, content_key
from pipeline.escalation.client import ChatRequest


def request(text: str, labels: tuple[str, ...] = ("a", "b")) -> ChatRequest:
    schema = {"type": "object", "properties": {"label": {"enum": list(labels)}}}
    return ChatRequest(({"role": "user", "content": text},), "answer", schema, 64)


def key(
    text: str,
    *,
    labels: tuple[str, ...] = ("a", "b"),
    tasks: tuple[str, ...] = ("classify",),
    model: str = "m",
    prompt_version: str = "p1",
) -> str:
    return content_key(request(text, labels), tasks=tasks, model=model, prompt_version=prompt_version)


def test_the_key_is_stable_and_changes_with_content_task_model_prompt_and_schema() -> None:
    base = key("Call [PHONE_1] now")
    assert base == key("Call [PHONE_1] now") and len(base) == 64
    others = {
        key("Call [PHONE_2] now"),
        key("Call [PHONE_1] now", tasks=("classify", "moderate")),
        key("Call [PHONE_1] now", model="m2"),
        key("Call [PHONE_1] now", prompt_version="p2"),
        key("Call [PHONE_1] now", labels=("a", "c")),
    }
    assert base not in others and len(others) == 5


def test_least_recently_used_entries_are_evicted_first() -> None:
    cache = AnswerCache(2)
    cache.put("a", CachedAnswer({"x": 1}, "m"))
    cache.put("b", CachedAnswer({"x": 2}, "m"))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", CachedAnswer({"x": 3}, "m"))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2 and (cache.hits, cache.misses) == (3, 1)


def test_size_zero_keeps_nothing() -> None:
    cache = AnswerCache(0)
    cache.put("a", CachedAnswer({}, "m"))
    assert cache.get("a") is None and len(cache) == 0
