"""What a result would have cost asked of the large model instead: the "money saved" beside the real spend.

The worker keeps `minnow_counterfactual_cost_usd_total{family}`: for every result it routes (to the sink or to
escalation; dead letters are never asked), what the escalator would have paid had it asked the large model about
that item, with every task the mini model ran for it. The estimate is the escalator's own arithmetic:

- the request is the one the escalator builds (`build_prompt`: system message, task list, item text cut at
  MINNOW_ESCALATION__MAX_INPUT_CHARS, answer schema) for an item whose every task is unsure, so every task a
  large model can settle is asked (classification, moderation, summary; an IoT reading without text, nothing);
- input tokens are its characters / 4 (`ChatRequest.estimated_input_tokens`, what the escalator's budget and
  token bucket count before a reply says otherwise); the item text is measured unredacted (placeholders such as
  `[EMAIL_1]` are about as long as what they replace, and redaction is the costly part of building a prompt);
- output tokens are the answer the large model would write if it agreed with the mini model: the answer schema
  filled with the mini model's own result (its label and confidence, category scores, summary text), serialized
  as compact JSON, characters / 4 — the escalator's rule for a reply that reports no usage. Not
  MINNOW_ESCALATION__MAX_OUTPUT_TOKENS: that is an allowance, and charging it in full would overstate the saving
  several times over;
- the price is the configured model's (MINNOW_ESCALATION__MODEL in MINNOW_ESCALATION__PRICES).

Left out, so the saving is if anything understated: answer retries, and what the mini model itself costs to run.
Left in, so it is if anything overstated: the escalator's cache would answer repeated texts for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel

from pipeline.escalation.budget import PriceTable
from pipeline.escalation.client import CHARS_PER_TOKEN
from pipeline.escalation.tasks import Prompt, build_prompt, tasks_for
from pipeline.models import AnyEvent, EscalationRecord, Result
from pipeline.settings import Settings
from pipeline.tasks.catalog import configure_tasks

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Estimate:
    """The large-model tokens and USD one result would have cost."""

    tokens_in: int
    tokens_out: int
    usd: float


NOTHING = Estimate(0, 0, 0.0)


class Counterfactual:
    """Estimates, per routed result, what asking the large model instead would have cost (no I/O)."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.escalation
        self._model = cfg.model
        self._prices = PriceTable(cfg.prices, cfg.model)
        # The escalator's prompt, item text measured as it is (see the module docstring).
        self._settings = settings.model_copy(update={"escalation": cfg.model_copy(update={"redact": False})})
        self._tasks = configure_tasks(settings)
        self._every_task_unsure = [f"{task.name}.counterfactual" for task in self._tasks]

    def estimate(self, event: AnyEvent, result: Result) -> Estimate:
        asked = self.asked(event, result)
        if asked is None:
            return NOTHING
        prompt, answer = asked
        tokens_in = prompt.request.estimated_input_tokens
        tokens_out = max(len(orjson.dumps(answer)) // CHARS_PER_TOKEN, 1)
        return Estimate(tokens_in, tokens_out, self._prices.cost_usd(self._model, tokens_in, tokens_out))

    def asked(self, event: AnyEvent, result: Result) -> tuple[Prompt, dict[str, Any]] | None:
        """The prompt the escalator would send about the item with every task unsure, and the answer estimated for
        it; None when a large model has nothing to settle."""
        # Not validated: only the fields the tasks read are used, and this runs once per routed event.
        record = EscalationRecord.model_construct(
            id=result.id,
            kind=result.kind,
            reasons=self._every_task_unsure,
            result=result,
            event={},
            escalated_at=_EPOCH,
        )
        tasks = tasks_for(record, self._settings, self._tasks)
        if not tasks:
            return None
        prompt = build_prompt(record, event, tasks, self._settings)
        sections = prompt.request.schema["properties"]
        return prompt, {task.field: filled(sections[task.field], getattr(result, task.field)) for task in tasks}


def filled(schema: dict[str, Any], mini: Any) -> Any:
    """A value of `schema` taken from the mini model's result where it has the same field, else a typical one."""
    if isinstance(mini, BaseModel):
        mini = mini.model_dump()
    kind = schema.get("type")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        source = mini if isinstance(mini, dict) else {}
        return {name: filled(sub, source.get(name)) for name, sub in properties.items()}
    if kind == "array":
        return [filled(schema.get("items", {}), item) for item in (mini if isinstance(mini, list) else [])]
    if kind == "string" and not isinstance(mini, str):
        choices = schema.get("enum")
        return str(choices[0]) if choices else ""
    return _scalar(str(kind), mini)


def _scalar(kind: str, mini: Any) -> Any:
    """The mini model's value when it has the schema's type (numbers to two places), else a typical one."""
    if isinstance(mini, bool):
        return mini if kind == "boolean" else _TYPICAL.get(kind)
    if kind == "number" and isinstance(mini, int | float):
        return round(mini, 2)
    if (kind == "integer" and isinstance(mini, int)) or (kind == "string" and isinstance(mini, str)):
        return mini
    return _TYPICAL.get(kind)


# What the large model writes where the mini model has no value of its own: a confidence or score such as 0.93.
_TYPICAL: dict[str, Any] = {"number": 0.93, "integer": 1, "boolean": False, "string": ""}
