"""One logging setup for every `minnow` process: JSON lines or text on stderr, per-event fields, secrets masked.

`configure` installs one handler on the root logger; faust's, mode's and aiokafka's loggers propagate to it, so a
worker writes one format only (docs/operations.md "Logs"). A line's structured fields come from two places:
`log_context(...)` (a contextvar: the worker sets the batch id around a batch) and `extra={...}` at the call
(`event_fields(...)` for a per-event line: event id, topic, partition, offset). No Kafka here.

What is never logged is kept by the call sites (an event's text and an exception message that may quote it go to
DEBUG only); the formatters add one guard of their own: every value registered with `register_secrets` (the
SecretStr settings, registered by `load_settings`) is replaced by `**********` wherever it would appear.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson
from pydantic import ValidationError

LogFormat = Literal["json", "text"]
MASK = "**********"
# The fields of a per-event line, in the order a text line shows them.
EVENT_FIELDS = ("event_id", "topic", "partition", "offset", "batch_id")

_context: ContextVar[Mapping[str, Any]] = ContextVar("minnow_log_context", default={})  # noqa: B039 - never mutated
_secrets: set[str] = set()
# Attributes every LogRecord has: anything else on a record came from `extra=` and is a structured field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# Libraries whose own handlers would write a second format; they propagate to the root handler instead.
_LIBRARIES = ("faust", "mode", "aiokafka", "kafka")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields to every line logged inside the block (in this task or thread and what it starts)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> Mapping[str, Any]:
    """The fields `log_context` set for the code running now."""
    return _context.get()


def event_fields(event_id: str | None, topic: str, partition: int, offset: int, **more: Any) -> dict[str, Any]:
    """`extra=` of a per-event line: the event id (None when it could not be read) and where it was read."""
    return {"event_id": event_id, "topic": topic, "partition": partition, "offset": offset, **more}


def without_input(exc: ValidationError) -> str:
    """A validation error as `loc: msg; ...`, without the values it rejected (they may be an event's text)."""
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    return "; ".join(f"{'.'.join(map(str, p['loc'])) or '(value)'}: {p['msg']}" for p in problems)


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never reach a log line (passwords, API keys): masked by every formatter from now on, as
    they are and as they read inside a JSON string."""
    for value in values:
        if value and len(value) >= 4:  # masking "a" would mangle every line
            _secrets.update({value, orjson.dumps(value).decode()[1:-1]})


def mask(text: str) -> str:
    """The text with every registered secret replaced by the mask."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """A record's structured fields: the context's, then its own `extra=` (which win)."""
    fields = dict(_context.get())
    fields.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, message, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)  # a field never overwrites the four above
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a field of any type still makes a line; the line is one line (exceptions escaped). Masked
        # last, so a secret is caught wherever it sits (a nested field, a traceback).
        return mask(orjson.dumps(line, default=str).decode())


class TextFormatter(logging.Formatter):
    """For people at a terminal: `ts LEVEL logger: message key=value ...`, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        fields = fields_of(record)
        ordered = [k for k in EVENT_FIELDS if k in fields] + [k for k in fields if k not in EVENT_FIELDS]
        tail = "".join(f" {key}={fields[key]}" for key in ordered)
        text = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}{tail}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return mask(text)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream), like logging's own
    last-resort handler."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def default_format(stream: TextIO | None = None) -> LogFormat:
    """`text` for a person at a terminal, `json` otherwise (a container, a file, a pipe to a log collector)."""
    stream = stream or sys.stderr
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or odd stream
        return "json"


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(fmt: LogFormat | None = None, level: int | str = logging.WARNING) -> None:
    """Send every logger's lines to stderr in one format: replaces the handler installed by an earlier call, keeps
    handlers others installed (a test's capture), and makes the libraries' loggers propagate to it."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(formatter(fmt or default_format()))
    root.addHandler(handler)
    root.setLevel(level)
    for name in _LIBRARIES:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
