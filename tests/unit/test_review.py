"""`minnow review` without a broker: scripted keystrokes and answers files give exactly the expected label records."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.models import (
    Classification,
    InputInfo,
    LabelRecord,
    ModelInfo,
    Moderation,
    Result,
    ReviewRecord,
)
from pipeline.review import verdicts
from pipeline.review.prompt import ask, decide, read_answers, render
from pipeline.review.verdicts import Quit, Skip, Verdict, label_key, label_records

NOW = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
LABELS = {"world": 0.41, "sports": 0.05, "business": 0.38, "sci_tech": 0.16}
CATEGORIES = {"harassment": 0.1, "hate": 0.05, "self-harm": 0.0, "sexual": 0.0, "violence": 0.52, "illicit": 0.1}
CATEGORIES |= {"profanity": 0.0, "spam": 0.3}
TEXT = "Oil prices jump after the strait is closed - Tankers wait as navies patrol the shipping lane."


def review_record(
    *, answer: dict[str, Any] | None = None, moderated: bool = True, event_id: str = "post-17"
) -> ReviewRecord:
    moderation = Moderation(
        flagged=True,
        confidence=0.04,
        categories=CATEGORIES,
        flagged_categories=["violence"],
        uncertain_categories=["violence"],
    )
    result = Result(
        id=event_id,
        kind="feed",
        classification=Classification(
            label="world", confidence=0.41, scores=LABELS, label_set="feed", method="zero-shot"
        ),
        moderation=moderation if moderated else None,
        route="escalate",
        escalation_reasons=["classify.low_confidence", "moderate.uncertain_category"],
        model=ModelInfo(name="mini", version="1", quantization="int8"),
        input=InputInfo(tokens=24, chunks=1, truncated=False),
    )
    return ReviewRecord(
        id=event_id,
        kind="feed",
        reasons=result.escalation_reasons,
        review_reasons=["budget.hard_cap"],
        event={"kind": "feed", "id": event_id, "source": "wire", "text": TEXT, "created_at": "2026-11-27T09:00:00Z"},
        result=result,
        large_model_answer=answer,
        sent_at=NOW,
    )


LARGE = {
    "classification": {"label": "business", "confidence": 0.8},
    "moderation": {"categories": dict.fromkeys(CATEGORIES, 0.0) | {"violence": 0.2, "spam": 0.7}},
}


def run_prompt(record: ReviewRecord, *keys: str) -> tuple[verdicts.Decision, str]:
    """Type `keys` at the prompt; what was shown comes back with the decision."""
    typed = iter(keys)
    shown: list[str] = []

    def read_line(prompt: str) -> str:
        shown.append(prompt)
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    decision = ask(record, read_line, shown.append, where="(partition 0 offset 3)")
    return decision, "\n".join(shown)


def label(task: str, **fields: Any) -> LabelRecord:
    base: dict[str, Any] = {
        "id": "post-17",
        "kind": "feed",
        "text": TEXT,
        "source": "human",
        "decided_by": "alice",
        "decided_at": NOW,
    }
    return LabelRecord.model_validate(base | {"task": task} | fields)


def records_for(keys: tuple[str, ...], *, answer: dict[str, Any] | None = LARGE) -> list[LabelRecord]:
    decision, _ = run_prompt(review_record(answer=answer), *keys)
    assert isinstance(decision, Verdict)
    return label_records(review_record(answer=answer), decision, reviewer="alice", now=NOW)


# ------------------------------------------------------------------------------------------ keystrokes
@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            ("m",),
            [
                label("classify", label_set="feed", label="world"),
                label("moderate", flagged_categories=["violence"]),
            ],
        ),
        (
            ("l",),
            [
                label("classify", label_set="feed", label="business"),
                label("moderate", flagged_categories=["spam"]),
            ],
        ),
        (("3",), [label("classify", label_set="feed", label="business")]),
        (("SCI_TECH",), [label("classify", label_set="feed", label="sci_tech")]),
        (
            ("f", "5, spam", "2"),
            [
                label("classify", label_set="feed", label="sports"),
                label("moderate", flagged_categories=["violence", "spam"]),
            ],
        ),
        (("f", "", "d"), [label("moderate", flagged_categories=[])]),
        (
            ("f", "hate", "l"),
            [
                label("classify", label_set="feed", label="business"),
                label("moderate", flagged_categories=["hate"]),
            ],
        ),
        (("nonsense", "9", "?", "r", "d", "world"), [label("classify", label_set="feed", label="world")]),
    ],
)
def test_keystrokes_give_exactly_these_label_records(keys: tuple[str, ...], expected: list[LabelRecord]) -> None:
    assert records_for(keys) == expected


def test_label_records_are_keyed_task_colon_id() -> None:
    assert [label_key(r) for r in records_for(("m",))] == ["classify:post-17", "moderate:post-17"]


def test_skip_quit_and_end_of_input_settle_nothing() -> None:
    assert isinstance(run_prompt(review_record(), "s")[0], Skip)
    assert isinstance(run_prompt(review_record(), "q")[0], Quit)
    assert isinstance(run_prompt(review_record())[0], Quit)  # Ctrl-D
    assert isinstance(run_prompt(review_record(), "f")[0], Quit)  # Ctrl-D at the flags prompt


def test_accepting_a_missing_large_answer_is_refused_and_asked_again() -> None:
    decision, shown = run_prompt(review_record(answer=None), "l", "m")
    assert decision == Verdict(label="world", flagged_categories=("violence",), basis="mini-model")
    assert "no usable large-model answer to accept" in shown
    assert "large model:    no answer" in shown


def test_a_large_answer_outside_the_label_set_is_shown_but_not_offered() -> None:
    record = review_record(answer={"classification": {"label": "weather", "confidence": 0.9}})
    assert verdicts.large_verdict(record) is None
    screen = render(record, width=100)
    assert "(no usable label or flags)" in screen and "weather" in screen
    assert "[l]" not in screen


def test_the_screen_shows_text_scores_reasons_flags_and_the_large_answer() -> None:
    screen = render(review_record(answer=LARGE), where="(partition 0 offset 3)", width=100)
    assert "── feed post-17 (partition 0 offset 3) sent 2026-11-27 10:30 UTC" in screen
    assert "Oil prices jump after the strait is closed" in screen
    assert "mini model:     world 0.41 (zero-shot, label set feed)" in screen
    assert "1 world 0.41 · 2 sports 0.05 · 3 business 0.38 · 4 sci_tech 0.16" in screen
    assert "moderation:     flagged: violence 0.52 (confidence 0.04)" in screen
    assert "why a person:   budget.hard_cap" in screen
    assert "why escalated:  classify.low_confidence, moderate.uncertain_category" in screen
    assert "large model:    label business; flags spam" in screen
    assert "[m] mini: world   [l] large: business   [1-4] relabel" in screen


@pytest.mark.parametrize(
    "record",
    [
        review_record(moderated=False),
        review_record().model_copy(update={"reasons": ["classify.low_confidence"]}),
    ],
    ids=["not moderated", "moderation not in question"],
)
def test_accepting_the_mini_answer_settles_moderation_only_when_it_was_in_question(record: ReviewRecord) -> None:
    decision, _ = run_prompt(record, "m")
    assert isinstance(decision, Verdict)
    assert label_records(record, decision, reviewer="alice", now=NOW) == [
        label("classify", label_set="feed", label="world")
    ]


def test_a_label_outside_the_set_is_refused_when_records_are_made() -> None:
    with pytest.raises(InputError, match="'weather' is not in the item's label set"):
        label_records(review_record(), Verdict(label="weather"), reviewer="alice", now=NOW)


def test_conversation_text_is_its_turns_in_order() -> None:
    event = {
        "kind": "conversation",
        "id": "c1",
        "segments": [{"seq": 2, "speaker": "b", "text": "second"}, {"seq": 1, "speaker": "a", "text": "first"}],
    }
    assert verdicts.event_text(event) == "first\nsecond"


def test_a_person_is_offered_the_flags_the_escalator_would_set() -> None:
    """The review reads a large model's scores with the escalator's own rule: at FLAG_AT a category flags."""
    from pipeline.tasks.moderate import FLAG_AT

    at_threshold = dict.fromkeys(CATEGORIES, 0.0) | {"hate": FLAG_AT, "spam": FLAG_AT - 0.01}
    offered = verdicts.large_verdict(review_record(answer={"moderation": {"categories": at_threshold}}))
    assert offered is not None and offered.flagged_categories == ("hate",)


# --------------------------------------------------------------------------------------- answers file
def test_answers_file_and_policy_decide_without_a_person(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(
        "# settled offline\n"
        '{"id": "a", "label": "sports"}\n'
        '{"id": "b", "accept": "large", "flags": []}\n'
        '{"id": "c", "skip": true}\n'
        '{"id": "d", "accept": "large"}\n'
        '{"id": "a", "label": "business"}\n'
    )
    answers = read_answers(path)
    assert decide(review_record(answer=LARGE), answers["a"], None) == Verdict(label="business")
    assert decide(review_record(answer=LARGE), answers["b"], None) == Verdict("business", (), "large-model")
    assert decide(review_record(), answers["c"], "mini") == Skip()
    assert decide(review_record(answer=None), answers["d"], None) == Skip()  # nothing to accept: left for a person
    assert decide(review_record(), None, "mini") == Verdict("world", ("violence",), "mini-model")
    assert decide(review_record(), None, None) == Skip()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a"}', "say what to do"),
        ('{"id": "a", "skip": true, "label": "x"}', "skip cannot be combined"),
        ('{"id": "a", "accept": "mini", "label": "x"}', "not both"),
        ('{"id": "a", "accept": "oracle"}', "accept"),
        ("not json", "answers.jsonl:1"),
    ],
)
def test_a_bad_answers_line_is_a_config_error_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        read_answers(path)


def test_the_review_core_imports_no_kafka_library() -> None:
    code = (
        "import sys, pipeline.review.prompt, pipeline.review.verdicts, pipeline.commands.train;"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'kafka'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_persons_verdict_becomes_the_label_records_a_large_models_same_answer_would() -> None:
    """One path from verdict to training data: the tasks label a person's verdict as they label a large model's
    answer; only who decided differs."""
    from pipeline.escalation.tasks import build_prompt, checked
    from pipeline.escalation.tasks import label_records as model_label_records
    from pipeline.models import EVENT_ADAPTER, EscalationRecord
    from pipeline.settings import Settings
    from pipeline.tasks.catalog import configure_tasks

    record = review_record()
    verdict = Verdict(label="business", flagged_categories=("spam", "violence"))
    by_person = label_records(record, verdict, reviewer="alice", now=NOW)
    escalation = EscalationRecord(
        id=record.id,
        kind=record.kind,
        reasons=record.reasons,
        result=record.result,
        event=record.event,
        escalated_at=NOW,
    )
    settings = Settings()
    prompt = build_prompt(
        escalation, EVENT_ADAPTER.validate_python(record.event), configure_tasks(settings)[:2], settings
    )
    by_model = model_label_records(escalation, prompt, checked(prompt, verdict.sections(record)), model="m", now=NOW)

    def fields(label: LabelRecord) -> tuple[object, ...]:
        return (label.task, label.label_set, label.label, label.flagged_categories, label.text)

    assert [fields(lr) for lr in by_person] == [fields(lr) for lr in by_model]
    assert [fields(lr)[:4] for lr in by_person] == [
        ("classify", "feed", "business", None),
        ("moderate", None, None, ["violence", "spam"]),
    ]
    assert {(lr.source, lr.decided_by) for lr in by_person} == {("human", "alice")}
