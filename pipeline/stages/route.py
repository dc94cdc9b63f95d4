"""Where every event goes, decided once, after scoring and after the stateful steps: sink, escalation or dead letter.

The tasks say why they are unsure (`Task.reasons`); this module turns a scored event into its routed outcome —
data, not exceptions. The escalator settles escalated items into the same outcome types (`ToSink` with its label
records, or `ToReview` when no machine may settle them: pipeline/escalation/escalator.py), and the streaming layer
picks each outcome's topic by its type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.models import (
    AnyEvent,
    ErrorRecord,
    EscalationRecord,
    Result,
    Route,
    Scores,
    ToDeadLetter,
    ToEscalation,
    ToSink,
)
from pipeline.settings import Settings
from pipeline.tasks.base import Task
from pipeline.tasks.catalog import configure_tasks


class Router:
    """Decides sink or escalation from the tasks' reasons; built once per process from the task list."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self._tasks = tuple(tasks)

    @classmethod
    def configure(cls, settings: Settings) -> Router:
        return cls(configure_tasks(settings))

    def reasons(self, fields: Mapping[str, Any]) -> list[str]:
        """Every task's escalation reasons for the task results in `fields` (task field -> result), in task order."""
        return [reason for task in self._tasks for reason in task.reasons(fields.get(task.field))]

    def decide(self, scores: Scores) -> tuple[Route, list[str]]:
        """`escalate` with reason codes `task.reason` when any task is unsure; `sink` otherwise."""
        reasons = self.reasons({task.field: getattr(scores, task.field) for task in self._tasks})
        return ("escalate" if reasons else "sink"), reasons

    def result(self, scores: Scores, event: AnyEvent | None = None) -> Result:
        """The enriched result: the scores and the route they earn, with the event as produced when it has one."""
        route, reasons = self.decide(scores)
        task_results = {name: getattr(scores, name) for name in Scores.model_fields}
        original = event.original if event is not None else None
        return Result(**task_results, route=route, escalation_reasons=reasons, original=original)

    def route(
        self, event: AnyEvent, outcome: Scores | ErrorRecord, *, now: datetime | None = None
    ) -> ToSink | ToEscalation | ToDeadLetter:
        """Where one event goes. The escalation record carries the original event for the large model."""
        if isinstance(outcome, ErrorRecord):
            return ToDeadLetter(error=outcome)
        result = self.result(outcome, event)
        if result.route == "sink":
            return ToSink(result=result)
        return ToEscalation(
            record=EscalationRecord(
                id=result.id,
                kind=result.kind,
                reasons=result.escalation_reasons,
                result=result,
                event=event.model_dump(mode="json"),
                escalated_at=now or datetime.now(UTC),
            )
        )
