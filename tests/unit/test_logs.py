"""One log format: JSON lines that parse and carry per-event fields; no event text above DEBUG; secrets masked."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from pipeline import cli, logs
from pipeline.errors import ConfigError
from pipeline.escalation.escalator import Outcome
from pipeline.models import AnyEvent, ErrorRecord, EscalationRecord, Scores
from pipeline.settings import load_log_settings, load_settings
from pipeline.stages.infer import MiniModel
from pipeline.stages.validate import event_from_object
from pipeline.stream.worker import BatchProcessor, batch_agent
from pipeline.tasks.moderate import ModerateTask
from tests.unit.test_escalation_stream import TP, FakeConsumer, FakeProducer, messages, run_loop, settled
from tests.unit.test_stream_units import SETTINGS, FakeEngine, FakeSender, FakeStream, feed, record

MARKER = "zebra-quartz-marker-7731"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every line of every logger, DEBUG up, as the JSON formatter writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_parses_and_carries_its_context_and_extra_fields(captured: io.StringIO) -> None:
    """The JSON formatter writes one object per line: ts in UTC, level, logger, message, then the fields of the
    context and of `extra=`; a traceback stays inside the one line."""
    log = logging.getLogger("minnow.test")
    with logs.log_context(batch_id="b-1"):
        log.warning("to the dead-letter topic: %s", "decode_error", extra=logs.event_fields("e-1", "t.in", 3, 17))
        try:
            raise ValueError("broken")
        except ValueError:
            log.exception("failed")
    first, second = lines(captured)
    assert first["ts"].endswith("Z") and first["level"] == "WARNING" and first["logger"] == "minnow.test"
    assert first["message"] == "to the dead-letter topic: decode_error"
    assert {k: first[k] for k in logs.EVENT_FIELDS} == {
        "event_id": "e-1",
        "topic": "t.in",
        "partition": 3,
        "offset": 17,
        "batch_id": "b-1",
    }
    assert second["level"] == "ERROR" and "ValueError: broken" in second["exc"] and second["batch_id"] == "b-1"
    assert len(captured.getvalue().splitlines()) == 2


def test_the_text_format_shows_the_same_fields_for_people() -> None:
    """A text line is `ts LEVEL logger: message` followed by the per-event fields in a fixed order."""
    entry = logging.LogRecord("minnow.test", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    for key, value in logs.event_fields("e-2", "t.in", 1, 9).items():
        setattr(entry, key, value)
    text = logs.TextFormatter().format(entry)
    assert text.endswith("WARNING minnow.test: hello there event_id=e-2 topic=t.in partition=1 offset=9")


def test_the_format_follows_the_setting_and_defaults_to_json_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """MINNOW_LOG_FORMAT and MINNOW_LOG_LEVEL are read in any case; unset, a stream that is no terminal gets JSON;
    a value outside the choices is a ConfigError naming the variable."""
    monkeypatch.setenv("MINNOW_LOG_FORMAT", "TEXT")
    monkeypatch.setenv("MINNOW_LOG_LEVEL", "info")
    chosen = load_log_settings()
    assert (chosen.log_format, chosen.log_level) == ("text", "INFO")
    assert logs.default_format(io.StringIO()) == "json"
    monkeypatch.setenv("MINNOW_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="MINNOW_LOG_FORMAT"):
        load_log_settings()


def test_minnow_installs_one_handler_and_the_libraries_propagate_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`configure` replaces its own earlier handler (no duplicate lines), keeps others', and takes faust's and
    aiokafka's own handlers away so their lines come out in the same format."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    others = [h for h in before if not isinstance(h, logs._StderrHandler)]  # an earlier `minnow` in this session
    stray = logging.StreamHandler(io.StringIO())
    logging.getLogger("aiokafka").addHandler(stray)
    try:
        logs.configure("json", logging.INFO)
        logs.configure("json", logging.INFO)
        ours = [h for h in root.handlers if h not in others]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        assert all(h in root.handlers for h in others)
        assert logging.getLogger("aiokafka").handlers == [] and logging.getLogger("faust").propagate
    finally:
        root.handlers[:] = before
        root.setLevel(level)
        logging.getLogger("aiokafka").removeHandler(stray)


def test_a_registered_secret_never_reaches_a_line(monkeypatch: pytest.MonkeyPatch, captured: io.StringIO) -> None:
    """load_settings registers the SASL password; a line, a field or a traceback that would contain it shows the
    mask instead."""
    password = "sasl-pw-" + MARKER
    for name, value in {
        "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SASL_MECHANISM": "PLAIN",
        "SASL_USERNAME": "u",
        "SASL_PASSWORD": password,
    }.items():
        monkeypatch.setenv(f"MINNOW_KAFKA__{name}", value)
    settings = load_settings()
    assert settings.kafka.password() == password
    log = logging.getLogger("minnow.test")
    log.error("login with %s failed", password, extra={"config": {"password": password}})
    try:
        raise ConnectionError(f"auth failed for {password}")
    except ConnectionError:
        log.exception("broker said no")
    quoted = 'api"key\\' + MARKER  # escaped inside a JSON string: masked there too
    logs.register_secrets([quoted])
    log.error("key %s", quoted, extra={"nested": [quoted]})
    text = captured.getvalue()
    assert password not in text and text.count(logs.MASK) >= 5
    assert MARKER not in text and all(orjson.loads(line) for line in text.splitlines())
    assert password not in logs.TextFormatter().format(
        logging.LogRecord("x", logging.ERROR, __file__, 1, "pw=%s", (password,), None)
    )


class _Stream(FakeStream):
    async def ack(self, event: Any) -> None:
        return None


def _message(value: bytes, offset: int) -> Any:
    message = SimpleNamespace(topic="t.feeds.in", partition=2, offset=offset, key=b"k", value=value, headers=[])
    return SimpleNamespace(message=message)


def test_a_dead_letter_line_from_the_worker_names_the_event_where_it_was_read_and_its_batch(
    captured: io.StringIO,
) -> None:
    """Through the agent (take_events batches, as in production): each dead letter is one WARNING line with the
    event id (when readable), topic, partition, offset and the batch id; the two batches have different ids."""
    engine = FakeEngine(fail=["bad-in-engine"])
    processor = BatchProcessor(SETTINGS, engine, FakeSender())
    stream = _Stream([[_message(feed("ok"), 10), _message(b"{not json", 11)], [_message(feed("bad-in-engine"), 12)]])
    asyncio.run(batch_agent(processor, SETTINGS)(stream))
    dead = [line for line in lines(captured) if line["message"].startswith("to the dead-letter topic")]
    assert [(d["level"], d["event_id"], d["topic"], d["partition"], d["offset"], d["error"]) for d in dead] == [
        ("WARNING", None, "t.feeds.in", 2, 11, "decode_error"),
        ("WARNING", "bad-in-engine", "t.feeds.in", 2, 12, "inference_error"),
    ]
    assert all(len(d["batch_id"]) == 16 for d in dead) and dead[0]["batch_id"] != dead[1]["batch_id"]


class _QuotingEngine:
    """An engine that fails on every event with a message quoting its text, as a tokenizer error might."""

    async def score(self, events: Sequence[AnyEvent]) -> list[Scores | ErrorRecord]:
        return [
            ErrorRecord(error="inference_error", message=f"cannot read {e.prompt_text()!r}", id=e.id) for e in events
        ]


def test_no_event_text_reaches_a_line_above_debug(captured: io.StringIO) -> None:
    """Events whose text is a marker go to the sink, to escalation, fail in the engine (a message quoting the text)
    and fail to parse; the marker shows in DEBUG lines (so the test would see a leak) and in no INFO-or-above line."""
    text = f"Stocks rallied today, {MARKER}."
    inputs = [
        record(feed("sunk", text), 0),
        record(feed("unsure", text), 1),
        record(orjson.dumps({"id": "broken", "text": text, "source": 7, "created_at": MARKER}), 2),
        record(b"\xff" + text.encode(), 3),
    ]
    asyncio.run(BatchProcessor(SETTINGS, FakeEngine(escalate=["unsure"]), FakeSender()).handle(inputs))
    asyncio.run(BatchProcessor(SETTINGS, _QuotingEngine(), FakeSender()).handle([record(feed("quoted", text), 4)]))
    written = lines(captured)
    assert any(MARKER in line["message"] for line in written if line["level"] == "DEBUG")
    loud = [line for line in written if line["level"] != "DEBUG"]
    assert len(loud) >= 3  # the dead letters were logged above DEBUG, without the text
    assert not [line for line in loud if MARKER in orjson.dumps(line).decode()]


class _QuotingModerator:
    """The real moderator, except that it fails on the marker with a message quoting the texts it was given."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def moderate(self, texts: Sequence[str], vectors: Any, categories: Any = None) -> Any:
        if any(MARKER in t for t in texts):
            raise ValueError(f"cannot moderate {list(texts)!r}")
        return self.real.moderate(texts, vectors, categories)


def test_an_engine_failure_logs_the_event_id_above_debug_and_its_text_only_below(
    mini_model: MiniModel, captured: io.StringIO
) -> None:
    """The real engine's poison bisection logs the failing event's id and error class as a WARNING; the message,
    which quotes the text, only at DEBUG."""
    moderate = next(task for task in mini_model.tasks if isinstance(task, ModerateTask))
    poisoned = ModerateTask(mini_model.settings, _QuotingModerator(moderate.moderator))  # type: ignore[arg-type]
    tasks = [poisoned if task is moderate else task for task in mini_model.tasks]
    engine = MiniModel(mini_model.encoder, tasks, mini_model.settings)
    texts = [f"Ordinary post number {i}." for i in range(4)]
    texts[2] = f"A post that trips the moderator: {MARKER}."
    events = [event_from_object(orjson.loads(feed(f"e{i}", text))) for i, text in enumerate(texts)]
    engine.score(events)
    written = [line for line in lines(captured) if line["logger"] == "pipeline.stages.infer"]
    warning = [line for line in written if line["level"] == "WARNING"]
    assert [(w["event_id"], w["message"]) for w in warning] == [("e2", "event e2 failed in the engine: ValueError")]
    assert any(MARKER in line["message"] for line in written if line["level"] == "DEBUG")


class _BrokenEscalator:
    """Fails to settle record p-1 with a message quoting the event, as a bug might; settles the others."""

    blocked = False

    async def settle(self, record: EscalationRecord, event: AnyEvent) -> Outcome:
        if record.id == "p-1":
            raise RuntimeError(f"cannot settle {MARKER}")
        return settled(record)


def test_the_escalators_lines_for_a_record_name_it_and_where_it_was_read(captured: io.StringIO) -> None:
    """The escalator's loop: a record whose settlement fails gets an ERROR line and a dead-letter WARNING line, both
    with its event id, topic, partition and offset; the exception's message (quoting the event) only at DEBUG."""
    consumer, producer = FakeConsumer(messages(3)), FakeProducer()
    assert run_loop(consumer, producer, _BrokenEscalator(), lambda: len(producer.sent) == 5) == 0
    written = [line for line in lines(captured) if line["logger"] == "pipeline.stream.escalator"]
    loud = [line for line in written if line["level"] in ("ERROR", "WARNING")]
    assert [(line["level"], line["event_id"], line["topic"], line["partition"], line["offset"]) for line in loud] == [
        ("ERROR", "p-1", TP.topic, TP.partition, 1),
        ("WARNING", "p-1", TP.topic, TP.partition, 1),
    ]
    assert not [line for line in lines(captured) if line["level"] != "DEBUG" and MARKER in orjson.dumps(line).decode()]
    assert any(MARKER in line.get("exc", "") for line in written if line["level"] == "DEBUG")


def test_the_cli_sets_up_logging_before_the_command_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`minnow` reads MINNOW_LOG_FORMAT first: a bad value is the usual one-line error (exit 2), not a crash."""
    monkeypatch.setenv("MINNOW_LOG_FORMAT", "xml")
    assert cli.main(["topics", "schemas", "--check"]) == 2
