"""A stream chooses its tasks and its moderation categories (MINNOW_FAMILIES__<FAMILY>__*), and nothing else changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.errors import ConfigError
from pipeline.models import EncoderJob, FeedEvent, Result, TranscriptSegment
from pipeline.settings import FamiliesSettings, FamilyTasks, Settings, load_settings
from pipeline.stages.infer import MiniModel, chosen
from pipeline.tasks.moderate import ModerateTask

NOW = datetime(2026, 11, 1, tzinfo=UTC)
FULL = EncoderJob("some text", "feed", moderate=True, summarize=True)


def test_unset_choice_leaves_the_familys_job_as_it_is() -> None:
    """No setting: every task the family does still runs."""
    assert chosen(FULL, FamilyTasks()) == FULL


def test_a_choice_switches_off_the_tasks_it_does_not_name() -> None:
    """Moderation only: no label set, no summary, no language identification."""
    job = chosen(FULL, FamilyTasks(tasks=("moderate",)))
    assert (job.label_set, job.moderate, job.summarize, job.identify_language) == (None, True, False, False)


def test_naming_a_task_never_switches_on_one_the_family_does_not_do() -> None:
    """An IoT message is not summarized or moderated because a stream named those tasks."""
    iot = EncoderJob("fan stalled", "iot", moderate=False, summarize=False, identify_language=False)
    assert chosen(iot, FamilyTasks(tasks=("classify", "moderate", "summarize", "language"))) == iot


def test_moderation_categories_travel_with_the_job() -> None:
    job = chosen(FULL, FamilyTasks(moderation_categories=("hate", "harassment")))
    assert job.moderation_categories == ("hate", "harassment") and job.label_set == "feed"


def test_conversations_follow_the_transcript_choice() -> None:
    families = FamiliesSettings(transcript=FamilyTasks(tasks=("summarize",)))
    assert families.of("conversation") is families.transcript
    assert families.of("feed").tasks is None


def test_choices_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINNOW_FAMILIES__FEED__TASKS", '["moderate"]')
    monkeypatch.setenv("MINNOW_FAMILIES__FEED__MODERATION_CATEGORIES", '["hate", "harassment"]')
    families = load_settings().families
    assert families.feed == FamilyTasks(tasks=("moderate",), moderation_categories=("hate", "harassment"))
    assert families.ticket == FamilyTasks()


def test_an_unknown_task_name_stops_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINNOW_FAMILIES__FEED__TASKS", '["moderation"]')
    with pytest.raises(ConfigError, match="MINNOW_FAMILIES__FEED__TASKS"):
        load_settings()


def test_a_moderation_only_stream_gets_moderation_and_nothing_else(mini_model: MiniModel) -> None:
    """Through the real model: feeds moderated only, transcripts untouched; no classification reason can escalate."""
    settings = Settings(
        engine=mini_model.settings.engine, families=FamiliesSettings(feed=FamilyTasks(tasks=("moderate",)))
    )
    model = MiniModel(mini_model.encoder, mini_model.tasks, settings)
    post = FeedEvent(id="p", source="t", text="Shares fell sharply after the bank cut its forecast.", created_at=NOW)
    segment = TranscriptSegment(id="s", conversation_id="c", seq=0, speaker="a", text="I was charged twice this month.")
    feed_result, segment_result = model.process([post, segment])
    assert isinstance(feed_result, Result) and isinstance(segment_result, Result)
    assert feed_result.moderation is not None
    assert (feed_result.classification, feed_result.summary, feed_result.language) == (None, None, None)
    assert not any(reason.startswith("classify.") for reason in feed_result.escalation_reasons)
    assert segment_result.classification is not None and segment_result.moderation is not None


def test_a_trimmed_category_set_is_all_a_result_reports_flags_and_escalates_for(mini_model: MiniModel) -> None:
    """An insult scored for `spam` only: not flagged, only `spam` on the result; untrimmed, harassment flags it."""
    insult = FeedEvent(id="i", source="t", text="You are a worthless idiot and everyone hates you.", created_at=NOW)
    full = mini_model.process([insult])[0]
    assert (
        isinstance(full, Result) and full.moderation is not None and "harassment" in full.moderation.flagged_categories
    )
    families = FamiliesSettings(feed=FamilyTasks(moderation_categories=("spam",)))
    settings = Settings(engine=mini_model.settings.engine, families=families)
    trimmed = MiniModel(mini_model.encoder, mini_model.tasks, settings).process([insult])[0]
    assert isinstance(trimmed, Result) and trimmed.moderation is not None
    assert list(trimmed.moderation.categories) == ["spam"]
    assert trimmed.moderation.categories["spam"] == full.moderation.categories["spam"]
    assert not trimmed.moderation.flagged and trimmed.moderation.uncertain_categories == []
    assert all(reason.startswith("spam ") for reason in trimmed.moderation.reasons)


def test_an_unknown_moderation_category_stops_start_up_with_the_known_ones() -> None:
    settings = Settings(families=FamiliesSettings(feed=FamilyTasks(moderation_categories=("hate", "slurs"))))
    with pytest.raises(ConfigError, match="MINNOW_FAMILIES__FEED__MODERATION_CATEGORIES: unknown slurs; choose from"):
        ModerateTask.configure(settings)
