"""The engine turns every event into exactly one result or error record, in order, whatever the input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.models import (
    AnyEvent,
    Conversation,
    ErrorRecord,
    FeedEvent,
    IoTMessage,
    Moderation,
    Result,
    Scores,
    TranscriptSegment,
)
from pipeline.stages.infer import MiniModel
from pipeline.stages.runtime import AsyncMiniModel
from pipeline.stages.validate import decode_line
from pipeline.tasks.moderate import ModerateTask

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def feed(i: str, text: str) -> FeedEvent:
    return FeedEvent(id=i, source="test", text=text, created_at=NOW)


def turn(conv: str, seq: int, speaker: str, text: str) -> TranscriptSegment:
    return TranscriptSegment(id=f"{conv}-{seq}", conversation_id=conv, seq=seq, speaker=speaker, text=text)


LONG_POST = (
    "The city council met on Tuesday to discuss the new transit plan. Residents packed the hall. "
    "The plan adds three bus lines and extends the tram to the airport. Critics said the budget was "
    "unrealistic. Supporters argued congestion costs more. The council votes next month."
)


def test_mixed_batch_gives_one_result_per_event_in_order(mini_model: MiniModel) -> None:
    events: list[AnyEvent] = [
        feed("f1", "The striker scored a hat-trick as the home team won the league title."),
        feed("f2", LONG_POST),
        turn("c1", 0, "customer", "I was billed twice this month and want my money back."),
        Conversation(
            id="conv",
            segments=[
                turn("c2", 1, "agent", "Thanks for calling support, how can I help?"),
                turn("c2", 0, "customer", "Hello?"),
                turn("c2", 2, "customer", "My internet drops every evening since the upgrade."),
                turn("c2", 3, "agent", "I see errors on your line, so I will send an engineer on Friday."),
                turn("c2", 4, "customer", "Great, thank you."),
            ],
        ),
        IoTMessage(id="i1", device_id="d", ts=NOW, readings={"temperature_c": 150.0}, text="overheat alarm"),
        IoTMessage(id="i2", device_id="d", ts=NOW, readings={"temperature_c": 20.0}),
    ]
    results = mini_model.process(events)
    assert [r.id for r in results] == [e.id for e in events]
    assert all(isinstance(r, Result) for r in results)
    f1, f2, seg, conv, hot, calm = results
    assert isinstance(f1, Result) and f1.classification and f1.classification.label == "sports"
    assert isinstance(f2, Result) and f2.summary and 0 < len(f2.summary.sentence_ids) <= 3
    assert isinstance(seg, Result) and seg.classification and seg.classification.label_set == "transcript"
    assert seg.summary is None
    assert isinstance(conv, Result) and conv.summary and ":" in conv.summary.text  # speaker-aware rendering
    assert (
        isinstance(hot, Result)
        and hot.anomaly
        and hot.anomaly.score > 0.8
        and "anomaly.high_score" in hot.escalation_reasons
    )
    assert hot.moderation is None  # device alerts are not moderated
    assert isinstance(calm, Result) and calm.classification is None and calm.anomaly and calm.anomaly.score == 0
    for r in results:
        assert isinstance(r, Result)
        assert r.model.quantization == "int8" and r.timings["batch_size"] == len(events)
        assert (r.route == "escalate") == bool(r.escalation_reasons)


def test_empty_text_gets_a_result_without_a_guessed_label(mini_model: MiniModel) -> None:
    (r,) = mini_model.process([feed("blank", " \u200b\n ")])
    assert isinstance(r, Result)
    assert r.classification is None and r.moderation is None and r.route == "sink" and r.input.tokens == 0


def test_huge_text_is_processed_and_reported_truncated(mini_model: MiniModel) -> None:
    text = "All quiet on the server front today. " * 4000  # ~150 KB, over the 100 000-character cap
    (r,) = mini_model.process([feed("big", text)])
    assert isinstance(r, Result) and r.input.truncated and r.input.chunks > 1


class _PoisonModerator:
    """Fault injection: the real moderator, except that it fails on one marked text."""

    def __init__(self, real: object) -> None:
        self.real = real

    def moderate(
        self, texts: Sequence[str], vectors: np.ndarray, categories: Sequence[tuple[str, ...] | None] | None = None
    ) -> list[Moderation]:
        if any("POISON" in t for t in texts):
            raise ValueError("cannot moderate this")
        return self.real.moderate(texts, vectors, categories)  # type: ignore[attr-defined, no-any-return]


def test_poison_event_is_isolated_by_bisection(mini_model: MiniModel) -> None:
    moderate = next(task for task in mini_model.tasks if isinstance(task, ModerateTask))
    assert isinstance(moderate, ModerateTask)
    poisoned_moderation = ModerateTask(mini_model.settings, _PoisonModerator(moderate.moderator))  # type: ignore[arg-type]
    tasks = [poisoned_moderation if task is moderate else task for task in mini_model.tasks]
    poisoned = MiniModel(mini_model.encoder, tasks, mini_model.settings)
    events = [feed(f"e{i}", "POISON" if i == 5 else f"ordinary post number {i}") for i in range(8)]
    results = poisoned.process(events)
    assert [r.id for r in results] == [e.id for e in events]
    errors = [r for r in results if isinstance(r, ErrorRecord)]
    assert [(e.id, e.error) for e in errors] == [("e5", "inference_error")]
    assert "cannot moderate this" in errors[0].message


def test_async_engine_runs_off_the_event_loop(mini_model: MiniModel) -> None:
    """While a batch runs in the executor, the loop keeps ticking."""

    async def main() -> tuple[int, list[Scores | ErrorRecord]]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        async with AsyncMiniModel(mini_model) as engine:
            task = asyncio.create_task(ticker())
            results = await engine.score([feed(f"a{i}", LONG_POST) for i in range(32)])
            done = True
            await task
        return ticks, results

    ticks, results = asyncio.run(main())
    assert len(results) == 32 and ticks > 5


odd_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["", " ", "\x00\x01\x02", "😀" * 50, "\u202e\u200b\ufeff", "a" * 20000, "\n\n\n"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(odd_text, min_size=1, max_size=6))
def test_any_text_gives_a_result_never_a_crash(mini_model: MiniModel, texts: list[str]) -> None:
    results = mini_model.process([feed(f"p{i}", t) for i, t in enumerate(texts)])
    assert [r.id for r in results] == [f"p{i}" for i in range(len(texts))]
    assert all(isinstance(r, Result) for r in results)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "text",
                    "source",
                    "created_at",
                    "readings",
                    "device_id",
                    "ts",
                    "segments",
                    "kind",
                    "seq",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(raw=st.one_of(st.binary(max_size=400), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_bytes_decode_to_an_event_or_an_error_record(raw: bytes) -> None:
    out = decode_line(raw, line=1)
    assert isinstance(out, (ErrorRecord, FeedEvent, TranscriptSegment, Conversation, IoTMessage))
    if isinstance(out, ErrorRecord):
        assert out.error in {"decode_error", "schema_error"} and out.message


def test_a_post_in_another_language_is_escalated_not_classified_with_false_confidence(mini_model: MiniModel) -> None:
    """The mini model is English-only: a French post escalates as language.unsupported, an English one does not,
    and an IoT log line is not language-identified at all."""
    french = feed("fr", "Le gouvernement a annoncé hier une réforme des retraites qui suscite la colère des syndicats.")
    english = feed("en", "The government announced a pension reform yesterday that angered the unions.")
    device = IoTMessage(
        id="i", device_id="d", ts=datetime(2026, 1, 1, tzinfo=UTC), text="Lüfter defekt, Temperatur hoch"
    )
    fr, en, iot = mini_model.process([french, english, device])
    assert isinstance(fr, Result) and isinstance(en, Result) and isinstance(iot, Result)
    assert fr.language is not None and (fr.language.code, fr.language.supported) == ("fr", False)
    assert fr.route == "escalate" and "language.unsupported" in fr.escalation_reasons
    assert en.language is not None and (en.language.code, en.language.supported) == ("en", True)
    assert "language.unsupported" not in en.escalation_reasons
    assert iot.language is None


def test_language_identification_can_be_turned_off(mini_model: MiniModel) -> None:
    """MINNOW_LANGUAGE__ENABLED=false: no language on results and no language.unsupported escalation."""
    from pipeline.settings import LanguageSettings
    from pipeline.tasks.language import LanguageTask

    off = mini_model.settings.model_copy(update={"language": LanguageSettings(enabled=False)})
    tasks = [LanguageTask.load(off, mini_model.encoder) if t.name == "language" else t for t in mini_model.tasks]
    french = feed("fr", "Le gouvernement a annoncé hier une réforme des retraites qui suscite la colère des syndicats.")
    (result,) = MiniModel(mini_model.encoder, tasks, off).process([french])
    assert isinstance(result, Result) and result.language is None
    assert "language.unsupported" not in result.escalation_reasons
