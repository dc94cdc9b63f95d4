"""The list of tasks: every room the engine runs, routing consults and the escalator asks about, in this order.

The order is the order of a result's escalation reasons and of a large model's task list. A new task is one
line here (and its module, its field on `Scores`, its setting).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.settings import Settings
from pipeline.tasks.anomaly import AnomalyTask
from pipeline.tasks.base import Task
from pipeline.tasks.classify import ClassifyTask
from pipeline.tasks.language import LanguageTask
from pipeline.tasks.moderate import ModerateTask
from pipeline.tasks.summarize import SummarizeTask

if TYPE_CHECKING:
    from pipeline.engine.encoder import Encoder

TASKS: tuple[type[Task], ...] = (
    ClassifyTask,
    ModerateTask,
    SummarizeTask,
    AnomalyTask,
    LanguageTask,
)


def load_tasks(settings: Settings, encoder: Encoder) -> list[Task]:
    """Every task ready to score batches (label prototypes embedded, heads and models loaded)."""
    return [task.load(settings, encoder) for task in TASKS]


def configure_tasks(settings: Settings) -> list[Task]:
    """Every task without its models: for routing and the escalator, which need no encoder."""
    return [task.configure(settings) for task in TASKS]
