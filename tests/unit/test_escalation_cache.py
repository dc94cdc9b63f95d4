"""The content-hash cache: a key that changes with anything that changes the answer; bounded LRU in memory; a SQLite
file that outlives the process, bounded, with a TTL, and that never stops the escalator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client import REGISTRY

from pipeline.escalation.cache import AnswerCache, CachedAnswer, content_key
from pipeline.escalation.cache_file import (
    FILE_NAME,
    SCHEMA_VERSION,
    FileAnswerCache,
    _AnswerFile,
    cache_path,
    open_cache,
)
from pipeline.escalation.client import ChatClient, ChatRequest
from pipeline.escalation.escalator import Escalator
from pipeline.models import ToSink
from pipeline.settings import EngineSettings, EscalationSettings, Settings
from tests.escalation_support import escalation, feed_event
from tests.openai_server import OpenAIServer

T = TypeVar("T")
TTL_S = 100.0
ANSWER = CachedAnswer({"classification": {"label": "world", "confidence": 0.9}}, "gpt-x-2024", 120, 15)


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


class FakeClock:
    """Wall-clock seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def with_file(
    path: Path,
    body: Callable[[FileAnswerCache], Awaitable[T]],
    *,
    max_entries: int = 10,
    clock: FakeClock | None = None,
) -> T:
    """`body(store)` with the file at `path` opened for it and closed after: one process's lifetime."""

    async def main() -> T:
        store = FileAnswerCache(path, max_entries=max_entries, ttl_s=TTL_S, now=clock or FakeClock())
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


# ------------------------------------------------------------------------------------------------ the key
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


# ------------------------------------------------------------------------------------------------ in memory
def test_least_recently_used_entries_are_evicted_first() -> None:
    cache = AnswerCache(2)
    cache.keep("a", CachedAnswer({"x": 1}, "m"))
    cache.keep("b", CachedAnswer({"x": 2}, "m"))
    assert cache.lookup("a") is not None  # a is now the most recent
    cache.keep("c", CachedAnswer({"x": 3}, "m"))
    assert cache.lookup("b") is None and cache.lookup("a") is not None and cache.lookup("c") is not None
    assert len(cache) == 2 and (cache.hits, cache.misses) == (3, 1)


def test_size_zero_keeps_nothing() -> None:
    cache = AnswerCache(0)
    asyncio.run(cache.put("a", CachedAnswer({}, "m")))
    assert asyncio.run(cache.get("a")) is None and len(cache) == 0


def test_in_memory_answers_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = AnswerCache(10, ttl_s=TTL_S, now=clock)
    cache.keep("a", ANSWER)
    clock.now += TTL_S - 1
    assert cache.lookup("a") == ANSWER
    clock.now += 1
    assert cache.lookup("a") is None and len(cache) == 0


# ------------------------------------------------------------------------------------------------ in a file
def test_an_answer_outlives_the_process(tmp_path: Path) -> None:
    """Stored by one process, found by the next: answer, model and billed tokens as they were."""
    path = tmp_path / "cache.sqlite3"

    async def first(store: FileAnswerCache) -> None:
        assert store.persistent and await store.get("k1") is None
        await store.put("k1", ANSWER)

    async def second(store: FileAnswerCache) -> tuple[CachedAnswer | None, CachedAnswer | None, int]:
        return await store.get("k1"), await store.get("k2"), await store.entries()

    with_file(path, first)
    found, other, entries = with_file(path, second)
    assert (found, other, entries) == (ANSWER, None, 1)
    assert path.stat().st_mode & 0o777 == 0o600  # answers can quote names: the owner's only
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_settled_records_and_review_decisions_outlive_the_process(tmp_path: Path) -> None:
    """What a restarted escalator needs after a SIGKILL: which records were settled (by place and digest of their
    bytes: a recreated topic's offset 5 is another record), forgotten below the commit point; and a review decision
    kept by content like an answer."""
    path = tmp_path / "cache.sqlite3"
    decision = CachedAnswer({}, "gpt-4o-mini", review_reason="answer.invalid", review_error="still malformed")

    async def first(store: FileAnswerCache) -> None:
        for offset in (3, 5, 8):
            await store.mark_settled("t.escalations", 0, offset, f"d{offset}")
        await store.put("k-review", decision)

    async def second(store: FileAnswerCache) -> tuple[list[bool], CachedAnswer | None]:
        seen = [
            await store.was_settled("t.escalations", 0, 5, "d5"),
            await store.was_settled("t.escalations", 0, 5, "other-bytes"),
            await store.was_settled("t.escalations", 1, 5, "d5"),
        ]
        await store.forget_settled("t.escalations", 0, below=6)
        seen += [await store.was_settled("t.escalations", 0, o, f"d{o}") for o in (3, 5, 8)]
        return seen, await store.get("k-review")

    with_file(path, first)
    seen, kept = with_file(path, second)
    assert seen == [True, False, False, False, False, True]
    assert kept == decision


def test_the_memory_store_keeps_settled_records_the_same_way() -> None:
    """Without a file (MINNOW_ESCALATION__CACHE_FILE=none) the same calls work, for the life of the process."""

    async def main() -> list[bool]:
        store = AnswerCache(10)
        await store.mark_settled("t", 0, 1, "d1")
        before = [await store.was_settled("t", 0, 1, "d1"), await store.was_settled("t", 0, 1, "x")]
        await store.forget_settled("t", 0, below=2)
        return [*before, await store.was_settled("t", 0, 1, "d1")]

    assert asyncio.run(main()) == [True, False, False]


def test_past_the_bound_the_oldest_answers_go(tmp_path: Path) -> None:
    """max_entries 3: a fourth answer drops the first stored (reads do not keep an answer), in this run and the next."""
    path, clock = tmp_path / "cache.sqlite3", FakeClock()

    async def fill(store: FileAnswerCache) -> list[bool]:
        for name in ("a", "b", "c"):
            await store.put(name, ANSWER)
            clock.now += 1
        assert await store.get("a") == ANSWER
        await store.put("d", ANSWER)
        return [await store.get(name) is not None for name in "abcd"]

    async def after_restart(store: FileAnswerCache) -> tuple[list[bool], int]:
        return [await store.get(name) is not None for name in "abcd"], await store.entries()

    assert with_file(path, fill, max_entries=3, clock=clock) == [False, True, True, True]
    assert with_file(path, after_restart, max_entries=3, clock=clock) == ([False, True, True, True], 3)


def test_answers_expire_after_the_ttl_and_are_dropped(tmp_path: Path) -> None:
    path, clock = tmp_path / "cache.sqlite3", FakeClock()

    async def body(store: FileAnswerCache) -> list[object]:
        await store.put("old", ANSWER)
        clock.now += TTL_S - 1
        seen: list[object] = [await store.get("old")]
        clock.now += 1
        seen.append(await store.get("old"))
        await store.put("new", ANSWER)  # a write drops what has expired
        seen.append(await store.entries())
        return seen

    assert with_file(path, body, clock=clock) == [ANSWER, None, 1]


def test_a_corrupt_file_is_moved_aside_and_a_new_one_started(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cache.sqlite3"
    garbage = b"this is not a SQLite database " * 200
    path.write_bytes(garbage)

    async def body(store: FileAnswerCache) -> tuple[bool, CachedAnswer | None, CachedAnswer | None]:
        missing = await store.get("k1")
        await store.put("k1", ANSWER)
        return store.persistent, missing, await store.get("k1")

    with caplog.at_level(logging.WARNING, "pipeline.escalation.cache_file"):
        assert with_file(path, body) == (True, None, ANSWER)
    assert "is corrupt" in caplog.text and str(path) in caplog.text
    assert (tmp_path / "cache.sqlite3.corrupt").read_bytes() == garbage
    assert with_file(path, lambda store: store.get("k1")) == ANSWER  # the new file is a good one


def test_a_damaged_database_is_treated_as_corrupt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A real cache whose pages were overwritten on disk (not just a foreign header) is also set aside."""
    path = tmp_path / "cache.sqlite3"

    async def fill(store: FileAnswerCache) -> None:
        for i in range(200):
            await store.put(f"k{i}", ANSWER)

    with_file(path, fill, max_entries=1000)
    data = bytearray(path.read_bytes())
    data[4096 : 4096 * 3] = b"\xff" * (4096 * 2)  # the table's pages, past the header page
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, "pipeline.escalation.cache_file"):
        assert with_file(path, lambda store: store.entries()) == 0
    assert "is corrupt" in caplog.text and (tmp_path / "cache.sqlite3.corrupt").exists()


def test_a_file_that_cannot_be_opened_leaves_answers_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The path is a directory: a warning, nothing moved or deleted, and the cache still works for this run."""
    path = tmp_path / "a-directory"
    path.mkdir()

    async def body(store: FileAnswerCache) -> tuple[bool, CachedAnswer | None]:
        await store.put("k1", ANSWER)
        return store.persistent, await store.get("k1")

    with caplog.at_level(logging.WARNING, "pipeline.escalation.cache_file"):
        assert with_file(path, body) == (False, ANSWER)
    assert "kept in memory" in caplog.text and path.is_dir() and list(tmp_path.iterdir()) == [path]


def test_someone_elses_sqlite_file_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        conn.commit()
    before = path.read_bytes()

    async def persistent(store: FileAnswerCache) -> bool:
        return store.persistent

    with caplog.at_level(logging.WARNING, "pipeline.escalation.cache_file"):
        assert with_file(path, persistent) is False
    assert "not a Minnow answer cache" in caplog.text and path.read_bytes() == before


def test_a_cache_of_another_layout_is_emptied(tmp_path: Path) -> None:
    """A file from another version of the table (PRAGMA user_version) starts empty instead of being misread."""
    path = tmp_path / "cache.sqlite3"
    with_file(path, lambda store: store.put("k1", ANSWER))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    async def body(store: FileAnswerCache) -> tuple[bool, CachedAnswer | None, int]:
        return store.persistent, await store.get("k1"), await store.entries()

    assert with_file(path, body) == (True, None, 0)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_file_failing_mid_run_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A disk error on a read is a miss with a warning; the rest of the run keeps answers in memory."""

    def broken(self: _AnswerFile, key: str) -> CachedAnswer | None:
        raise sqlite3.OperationalError("disk I/O error")

    async def body(store: FileAnswerCache) -> tuple[CachedAnswer | None, bool, CachedAnswer | None]:
        await store.put("k1", ANSWER)
        monkeypatch.setattr(_AnswerFile, "get", broken)
        missed = await store.get("k1")
        await store.put("k2", ANSWER)
        return missed, store.persistent, await store.get("k2")

    with caplog.at_level(logging.WARNING, "pipeline.escalation.cache_file"):
        assert with_file(tmp_path / "cache.sqlite3", body) == (None, False, ANSWER)
    assert "failed to read" in caplog.text and "disk I/O error" in caplog.text


# ------------------------------------------------------------------------------------------------ settings
def test_where_the_file_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = EngineSettings(cache_dir=tmp_path / "engine")

    def where(**escalation: object) -> Path | None:
        return cache_path(Settings(engine=engine, escalation=EscalationSettings.model_validate(escalation)))

    assert where() == tmp_path / "engine" / FILE_NAME
    assert where(cache_file="None") is None and where(cache_file="none") is None
    assert where(cache_size=0) is None
    assert where(cache_file=str(tmp_path / "c.sqlite3")) == tmp_path / "c.sqlite3"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert where(cache_file="~/answers.sqlite3") == tmp_path / "answers.sqlite3"
    with pytest.raises(ValueError, match="auto or none"):
        EscalationSettings(cache_file=" ")  # type: ignore[arg-type]  # what an empty variable gives


# ------------------------------------------------------------------------------------------------ the escalator
def test_a_restarted_escalator_answers_from_the_file_and_counts_the_hit(tmp_path: Path) -> None:
    """The first escalator pays for the item; the next one, on the same file, settles it from the cache: no
    request, 0 tokens and USD, `cached`, one more `minnow_escalator_cache_hits_total`, the original restored. The
    file holds the answer with placeholders, never the personal data."""
    email = "amy@example.com"
    record, event = escalation(
        feed_event("p1", f"Write to {email} today. Rates rose again."), ["classify.low_confidence"], summary="mini"
    )

    async def one_life(server: OpenAIServer) -> ToSink:
        cfg = EscalationSettings(base_url=server.base_url, cache_file=tmp_path / "cache.sqlite3")
        settings = Settings(escalation=cfg)
        async with (
            ChatClient(base_url=cfg.base_url, model=cfg.model, api_key=None, timeout_s=5.0) as client,
            open_cache(settings) as cache,
        ):
            outcome = await Escalator(settings, client, cache=cache).settle(record, event)
        assert isinstance(outcome, ToSink)
        return outcome

    async def main() -> tuple[ToSink, ToSink, int, float]:
        async with OpenAIServer() as server:
            first = await one_life(server)
            hits_before = REGISTRY.get_sample_value("minnow_escalator_cache_hits_total") or 0.0
            second = await one_life(server)
            hits = (REGISTRY.get_sample_value("minnow_escalator_cache_hits_total") or 0.0) - hits_before
            return first, second, len(server.requests), hits

    first, second, requests, hits = asyncio.run(main())
    assert requests == 1 and hits == 1
    info = second.result.large_model
    assert second.reason == "cache" and info is not None and info.cached
    assert (info.tokens_in, info.tokens_out, info.cost_usd) == (0, 0, 0.0)
    assert second.result.summary == first.result.summary
    assert second.result.summary is not None and email in second.result.summary.text
    assert [label.task for label in second.labels] == ["classify", "summarize"]
    stored = (tmp_path / "cache.sqlite3").read_bytes()  # closed: the WAL is folded into the file
    assert b"[EMAIL_1]" in stored and email.encode() not in stored
