"""The answer cache in a SQLite file, so answers outlive the process: a replay after a crash is not paid again.

One file in WAL mode, a table `answers` (key, the validated answer JSON with its placeholders, the model name,
the tokens it was billed, when it was stored; or a final review decision) and a table `settled` (the input records
whose outputs were all delivered, until their offsets are committed). Past `max_entries` the oldest answers go;
an answer older than `ttl_s` is a miss. Every SQLite call runs on one thread of its own, off the event loop. The
file never stops the escalator: one that cannot be opened, or fails later, is given up with a warning and answers
are kept in memory until the next start; a corrupt one is moved aside (`<name>.corrupt`) and a new one started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from pipeline.escalation.cache import AnswerCache, CachedAnswer, EscalatorStore
from pipeline.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

FILE_NAME = "escalation-cache.sqlite3"
# PRAGMA application_id ("MnEc"): a SQLite file with another id is someone else's, and is left alone.
APPLICATION_ID = 0x4D6E4563
# PRAGMA user_version: a cache written by another layout is emptied, not migrated (it is only a cache).
SCHEMA_VERSION = 2
# Another escalator process writing the same file holds its lock for well under a millisecond.
BUSY_TIMEOUT_S = 5.0
_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_FILE_ERRORS = (sqlite3.Error, OSError, ValueError)

_SCHEMA = (
    "CREATE TABLE answers (key TEXT PRIMARY KEY, answer BLOB NOT NULL, model TEXT NOT NULL,"
    " tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, stored_at REAL NOT NULL,"
    " review_reason TEXT, review_error TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX answers_by_age ON answers (stored_at)",
    "CREATE TABLE settled (topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,"
    " digest TEXT NOT NULL, PRIMARY KEY (topic, partition, offset))",
)


def cache_path(settings: Settings) -> Path | None:
    """The file MINNOW_ESCALATION__CACHE_FILE names (`auto`: under the engine cache dir), or None for memory only."""
    cfg = settings.escalation
    if cfg.cache_size == 0 or cfg.cache_file == "none":
        return None
    if cfg.cache_file == "auto":
        return settings.engine.cache_dir.expanduser() / FILE_NAME
    return cfg.cache_file.expanduser()


@contextlib.asynccontextmanager
async def open_cache(settings: Settings, *, now: Callable[[], float] = time.time) -> AsyncIterator[EscalatorStore]:
    """The answer store the settings ask for, open for the block and closed after it; opening never raises."""
    cfg = settings.escalation
    path = cache_path(settings)
    if path is None:
        log.info("answer cache: in memory, %d answers at most", cfg.cache_size)
        yield AnswerCache(cfg.cache_size, ttl_s=cfg.cache_ttl_s)
        return
    store = FileAnswerCache(path, max_entries=cfg.cache_size, ttl_s=cfg.cache_ttl_s, now=now)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class _CorruptFileError(Exception):
    """The file is not a readable SQLite database (or fails its integrity check)."""


class _ForeignFileError(Exception):
    """The file is a SQLite database, but not a Minnow answer cache."""


class _AnswerFile:
    """The SQLite side, synchronous: every call is made on the cache's own thread."""

    def __init__(self, conn: sqlite3.Connection, *, max_entries: int, ttl_s: float, now: Callable[[], float]) -> None:
        self._conn = conn
        self._max = max_entries
        self._ttl_s = ttl_s
        self._now = now

    @classmethod
    def open(cls, path: Path, *, max_entries: int, ttl_s: float, now: Callable[[], float]) -> _AnswerFile:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Answers can quote what redaction misses (names): the owner only, and SQLite gives -wal and -shm the same.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            _check_ours(conn)  # before anything is written: someone else's database is left as it is
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _CorruptFileError("; ".join(str(p) for p in problems[:3]))
            # WAL: readers never wait for the writer; NORMAL: a commit survives a killed process without an fsync
            # (a power cut may lose the last answers, which are then paid again: at-least-once, as before).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with _transaction(conn):
                _prepare(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if exc.sqlite_errorcode & 0xFF in _CORRUPT_CODES:
                raise _CorruptFileError(str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise
        return cls(conn, max_entries=max_entries, ttl_s=ttl_s, now=now)

    def get(self, key: str) -> CachedAnswer | None:
        row = self._conn.execute(
            "SELECT answer, model, tokens_in, tokens_out, stored_at, review_reason, review_error"
            " FROM answers WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None or self._now() - row[4] >= self._ttl_s:
            return None
        answer: Any = orjson.loads(row[0])
        if not isinstance(answer, dict):
            raise ValueError(f"cached answer {key[:12]}… is not a JSON object")
        return CachedAnswer(answer, str(row[1]), int(row[2]), int(row[3]), row[5], str(row[6]))

    def put(self, key: str, value: CachedAnswer) -> None:
        now = self._now()
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT INTO answers"
                " (key, answer, model, tokens_in, tokens_out, stored_at, review_reason, review_error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, model = excluded.model,"
                " tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, stored_at = excluded.stored_at,"
                " review_reason = excluded.review_reason, review_error = excluded.review_error",
                (
                    key,
                    orjson.dumps(value.answer),
                    value.model,
                    value.tokens_in,
                    value.tokens_out,
                    now,
                    value.review_reason,
                    value.review_error,
                ),
            )
            self._conn.execute("DELETE FROM answers WHERE stored_at <= ?", (now - self._ttl_s,))
            (count,) = self._conn.execute("SELECT count(*) FROM answers").fetchone()
            if count > self._max:
                self._conn.execute(
                    "DELETE FROM answers WHERE rowid IN (SELECT rowid FROM answers ORDER BY stored_at, rowid LIMIT ?)",
                    (count - self._max,),
                )

    def count(self) -> int:
        (count,) = self._conn.execute("SELECT count(*) FROM answers").fetchone()
        return int(count)

    def was_settled(self, topic: str, partition: int, offset: int, digest: str) -> bool:
        row = self._conn.execute(
            "SELECT digest FROM settled WHERE topic = ? AND partition = ? AND offset = ?", (topic, partition, offset)
        ).fetchone()
        return row is not None and row[0] == digest

    def mark_settled(self, topic: str, partition: int, offset: int, digest: str) -> None:
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT OR REPLACE INTO settled (topic, partition, offset, digest) VALUES (?, ?, ?, ?)",
                (topic, partition, offset, digest),
            )

    def forget_settled(self, topic: str, partition: int, below: int) -> None:
        with _transaction(self._conn):
            self._conn.execute(
                "DELETE FROM settled WHERE topic = ? AND partition = ? AND offset < ?", (topic, partition, below)
            )

    def close(self) -> None:
        self._conn.close()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE: take the write lock up front, so two processes sharing the file wait (busy timeout), not fail.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_ours(conn: sqlite3.Connection) -> int:
    """The file's application_id: ours, or 0 for an empty database; _ForeignFileError for anything else."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    if app_id != APPLICATION_ID and conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
        raise _ForeignFileError(f"a SQLite database that is not a Minnow answer cache (application_id {app_id})")
    return int(app_id)


def _prepare(conn: sqlite3.Connection) -> None:
    """Make the file an answer cache of this layout: a new file gets the table, an older layout is emptied."""
    app_id = _check_ours(conn)  # again, inside the write lock: another process may have just created it
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if app_id == APPLICATION_ID and version == SCHEMA_VERSION:
        return
    conn.execute("DROP TABLE IF EXISTS answers")
    conn.execute("DROP TABLE IF EXISTS settled")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _move_aside(path: Path) -> Path:
    """`path` (and its -wal and -shm) renamed to `<name>.corrupt…`, replacing an older set; the new name."""
    aside = path.with_name(path.name + ".corrupt")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    return aside


class FileAnswerCache:
    """An `AnswerStore` on a SQLite file, every call on one thread; in memory once the file has failed.

    `open()` before use and `close()` after; `persistent` says whether the file is in use.
    """

    def __init__(self, path: Path, *, max_entries: int, ttl_s: float, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._max = max_entries
        self._ttl_s = ttl_s
        self._now = now
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minnow-answer-cache")
        self._file: _AnswerFile | None = None
        self._memory = AnswerCache(max_entries, ttl_s=ttl_s, now=now)

    @property
    def persistent(self) -> bool:
        return self._file is not None

    async def open(self) -> None:
        """Open the file (a corrupt one is moved aside first); on any failure, warn and keep answers in memory."""
        self._file = await self._in_thread(self._open_file)
        if self._file is not None:
            log.info("answer cache: %s, %d answers", self.path, await self._in_thread(self._file.count))

    async def get(self, key: str) -> CachedAnswer | None:
        file = self._file
        if file is None:
            return self._memory.lookup(key)
        try:
            return await self._in_thread(file.get, key)
        except _FILE_ERRORS as exc:
            await self._give_up(file, "read", exc)
            return None

    async def put(self, key: str, value: CachedAnswer) -> None:
        file = self._file
        if file is None:
            self._memory.keep(key, value)
            return
        try:
            await self._in_thread(file.put, key, value)
        except _FILE_ERRORS as exc:
            await self._give_up(file, "write", exc)
            self._memory.keep(key, value)

    async def was_settled(self, topic: str, partition: int, offset: int, digest: str) -> bool:
        file = self._file
        if file is None:
            return await self._memory.was_settled(topic, partition, offset, digest)
        try:
            return await self._in_thread(file.was_settled, topic, partition, offset, digest)
        except _FILE_ERRORS as exc:
            await self._give_up(file, "read", exc)
            return False

    async def mark_settled(self, topic: str, partition: int, offset: int, digest: str) -> None:
        file = self._file
        if file is None:
            await self._memory.mark_settled(topic, partition, offset, digest)
            return
        try:
            await self._in_thread(file.mark_settled, topic, partition, offset, digest)
        except _FILE_ERRORS as exc:
            await self._give_up(file, "write", exc)
            await self._memory.mark_settled(topic, partition, offset, digest)

    async def forget_settled(self, topic: str, partition: int, below: int) -> None:
        file = self._file
        if file is None:
            await self._memory.forget_settled(topic, partition, below)
            return
        try:
            await self._in_thread(file.forget_settled, topic, partition, below)
        except _FILE_ERRORS as exc:
            await self._give_up(file, "write", exc)

    async def entries(self) -> int:
        """How many answers are kept (expired ones not yet dropped included)."""
        file = self._file
        if file is None:
            return len(self._memory)
        return await self._in_thread(file.count)

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(*_FILE_ERRORS):
                await self._in_thread(file.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------------------------------ internals
    async def _in_thread(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    def _open_file(self) -> _AnswerFile | None:
        try:
            try:
                return self._open_once()
            except _CorruptFileError as exc:
                aside = _move_aside(self.path)
                log.warning("answer cache %s is corrupt (%s): moved to %s, starting empty", self.path, exc, aside)
                return self._open_once()
        except (_CorruptFileError, _ForeignFileError, *_FILE_ERRORS) as exc:
            log.warning(
                "answer cache %s cannot be used (%s): answers are kept in memory until the next start", self.path, exc
            )
            return None

    def _open_once(self) -> _AnswerFile:
        return _AnswerFile.open(self.path, max_entries=self._max, ttl_s=self._ttl_s, now=self._now)

    async def _give_up(self, file: _AnswerFile, doing: str, exc: BaseException) -> None:
        if self._file is not file:  # another call gave up on it already
            return
        self._file = None
        log.warning(
            "answer cache %s failed to %s (%s): answers are kept in memory until the next start", self.path, doing, exc
        )
        with contextlib.suppress(*_FILE_ERRORS):
            await self._in_thread(file.close)
