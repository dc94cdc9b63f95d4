"""The `Task` protocol: one task's whole life, from scoring a batch to what a large model is asked about it.

A task is one class in one module (classify, moderate, summarize, anomaly, language); `pipeline.tasks.catalog`
lists them. The engine runs every task over a batch, routing asks every task for its escalation reasons, the
escalator asks the tasks a large model should settle for their instructions and answer schemas, applies the
answers and turns them into label records. A new task is its module, its field on `Scores`, its setting and one
line in the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import AnswerError
from pipeline.models import AnyEvent, EncoderJob, EscalationRecord, Result
from pipeline.settings import Settings

if TYPE_CHECKING:  # the escalator uses the tasks' large-model half without loading ONNX Runtime
    from pipeline.engine.encoder import Encoder, TextEmbedding


@dataclass(frozen=True)
class Batch:
    """What the tasks see of one engine batch, aligned by position.

    `jobs` are as the engine resolved them: an event with nothing to read has no label set and no moderation,
    and `summarize` is true only for a text long enough to summarize. `texts` is each job's text as one string.
    """

    events: Sequence[AnyEvent]
    jobs: Sequence[EncoderJob]
    texts: Sequence[str]
    embeddings: Sequence[TextEmbedding]


@dataclass(frozen=True)
class Asked:
    """What the escalator tells a task about the item it asks the large model about."""

    record: EscalationRecord
    settings: Settings

    @property
    def result(self) -> Result:
        return self.record.result

    @property
    def unsure(self) -> set[str]:
        """The tasks named by the escalation reasons (`classify.low_confidence` -> `classify`)."""
        return {reason.partition(".")[0] for reason in self.record.reasons}


class Answer(BaseModel):
    """One task's section of a large model's answer (strict: exactly the fields asked for)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Task(Protocol):
    """One task. `name` prefixes its escalation reasons and names it in prompts and label records; `field` is its
    field on `Scores` and its section of a large model's answer."""

    name: ClassVar[str]
    field: ClassVar[str]

    @classmethod
    def load(cls, settings: Settings, encoder: Encoder) -> Self:
        """The task ready to run in the engine (label prototypes, heads, models loaded)."""
        ...

    @classmethod
    def configure(cls, settings: Settings) -> Self:
        """The task without its models: enough for routing and for the escalator, which load no encoder."""
        ...

    def run(self, batch: Batch) -> Sequence[BaseModel | None]:
        """One result (or None: does not apply) per event of the batch, in order."""
        ...

    def reasons(self, result: Any) -> list[str]:
        """Escalation reason codes `name.reason` when the task is unsure of its result (its field of `Scores`)."""
        ...

    # ------------------------------------------------------------------------------- the large model's half
    def wanted(self, asked: Asked) -> bool:
        """Whether the large model should settle this task for the escalated item."""
        ...

    def instruction(self, asked: Asked) -> str:
        """One line of the prompt's task list."""
        ...

    def answer_schema(self, asked: Asked) -> dict[str, Any]:
        """The JSON schema of the task's answer section (strict mode: every property required)."""
        ...

    def read(self, section: Mapping[str, Any], asked: Asked) -> Answer:
        """The checked answer section; raises AnswerError when it does not fit what was asked."""
        ...

    def apply(self, answer: Answer, asked: Asked, restore: RestoreText) -> BaseModel:
        """The task's field of the final result, from the answer."""
        ...

    def label(self, answer: Answer, asked: Asked, restore: RestoreText) -> dict[str, Any] | None:
        """The task-specific fields of the label record the verdict yields (None: it yields none)."""
        ...


class RestoreText(Protocol):
    """Puts redacted personal data back into a text the large model wrote."""

    def __call__(self, text: str, /) -> str: ...


A = TypeVar("A", bound=Answer)


def read_section(model: type[A], field: str, section: Mapping[str, Any]) -> A:
    """One answer section validated against its task's model; AnswerError says the first thing wrong."""
    try:
        return model.model_validate(section)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in (field, *error["loc"]))
        raise AnswerError(f"answer does not follow the schema: {where}: {error['msg']}") from exc


def strict_object(properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema object for OpenAI's strict structured output: every property required, no others allowed."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


class NotAskedOfLargeModel:
    """The large-model half of a task no large model is asked to settle (its result feeds other tasks' prompts)."""

    def wanted(self, asked: Asked) -> bool:
        return False

    def instruction(self, asked: Asked) -> str:
        raise NotImplementedError(f"{type(self).__name__} is not asked of a large model")

    def answer_schema(self, asked: Asked) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} is not asked of a large model")

    def read(self, section: Mapping[str, Any], asked: Asked) -> Answer:
        raise NotImplementedError(f"{type(self).__name__} is not asked of a large model")

    def apply(self, answer: Answer, asked: Asked, restore: RestoreText) -> BaseModel:
        raise NotImplementedError(f"{type(self).__name__} is not asked of a large model")

    def label(self, answer: Answer, asked: Asked, restore: RestoreText) -> dict[str, Any] | None:
        return None
