"""IoT readings are scored against bounds; per-task thresholds decide sink or escalate."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.models import Classification, Moderation, Result
from pipeline.settings import RoutingSettings, Settings
from pipeline.stages.infer import MiniModel
from pipeline.stages.route import Router
from pipeline.tasks.anomaly import Bounds, load_bounds, score_readings

BOUNDS = {"temp": Bounds(min=0, max=100), "vib": Bounds(max=10)}


def test_reading_in_the_middle_scores_zero() -> None:
    a = score_readings({"temp": 50.0}, BOUNDS)
    assert a.score == 0.0 and not a.metrics["temp"].out_of_bounds


def test_reading_near_edge_scores_below_half_and_outside_above_half() -> None:
    near = score_readings({"temp": 97.0}, BOUNDS).score
    out = score_readings({"temp": 105.0}, BOUNDS).score
    far = score_readings({"temp": 200.0}, BOUNDS).score
    assert 0 < near < 0.5 < out < far <= 1.0


def test_one_sided_bound_and_unknown_metric() -> None:
    a = score_readings({"vib": 15.0, "mystery": 3.0}, BOUNDS)
    assert a.metrics["vib"].out_of_bounds and a.metrics["mystery"].score == 0.0
    assert any("mystery" in r for r in a.reasons)


def test_bundled_bounds_load_and_bad_bounds_are_config_errors(tmp_path: Path) -> None:
    assert "temperature_c" in load_bounds()
    bad = tmp_path / "b.yaml"
    bad.write_text("metrics:\n  t: {min: 5, max: 1}\n")
    with pytest.raises(ConfigError, match="min"):
        load_bounds(bad)


def decide(routing: RoutingSettings, **task_results: object) -> tuple[str, list[str]]:
    """The routing decision on these task results alone, as the worker's router makes it."""
    reasons = Router.configure(Settings(routing=routing)).reasons(task_results)
    return ("escalate" if reasons else "sink"), reasons


def _cls(conf: float) -> Classification:
    return Classification(label="a", confidence=conf, scores={"a": conf}, label_set="feed", method="zero-shot")


def _mod(uncertain: list[str], confidence: float = 0.9, flagged: bool = False) -> Moderation:
    return Moderation(flagged=flagged, confidence=confidence, categories={}, uncertain_categories=uncertain)


def test_confident_result_goes_to_sink() -> None:
    route, reasons = decide(
        RoutingSettings(), classification=_cls(0.9), moderation=_mod([]), summary=None, anomaly=None
    )
    assert (route, reasons) == ("sink", [])


def test_each_unsure_task_adds_its_reason() -> None:
    anomaly = score_readings({"temp": 500.0}, BOUNDS)
    route, reasons = decide(
        RoutingSettings(), classification=_cls(0.3), moderation=_mod(["hate"]), summary=None, anomaly=anomaly
    )
    assert route == "escalate"
    assert reasons == ["classify.low_confidence", "moderate.uncertain_category", "anomaly.high_score"]


def test_thresholds_come_from_settings() -> None:
    strict = RoutingSettings(classify_min_confidence=0.95, escalate_flagged=True)
    route, reasons = decide(
        strict, classification=_cls(0.9), moderation=_mod([], flagged=True), summary=None, anomaly=None
    )
    assert route == "escalate" and reasons == ["classify.low_confidence", "moderate.flagged"]


def test_outcomes_are_routed_by_type(mini_model: MiniModel) -> None:
    from datetime import UTC, datetime

    from pipeline.models import ErrorRecord, FeedEvent, ToDeadLetter, ToEscalation, ToSink

    route = Router.configure(mini_model.settings).route

    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = FeedEvent(id="r1", source="s", text="The striker scored twice in the cup final.", created_at=now)
    (result,) = mini_model.process([event])
    assert isinstance(result, Result)
    sink = route(event, result)
    assert isinstance(sink, ToSink) and sink.result.id == "r1"
    assert result.classification is not None
    unsure = result.model_copy(update={"classification": result.classification.model_copy(update={"confidence": 0.1})})
    esc = route(event, unsure, now=now)
    assert isinstance(esc, ToEscalation)
    assert esc.record.event["text"] == event.text and esc.record.reasons == ["classify.low_confidence"]
    dead = route(event, ErrorRecord(error="inference_error", message="boom", id="r1"))
    assert isinstance(dead, ToDeadLetter) and dead.error.message == "boom"
