"""The input topics a worker consumes: each family's own topic, or the topics of your own listed in a file.

    # inputs.yaml (MINNOW_WORKER__INPUTS_FILE)
    inputs:
      - topic: social.posts.v2         # the topic's real name: no prefix is added
        map: social-posts.map.yaml     # a field mapping (docs/mapping.md); its `kind` is the family
      - topic: partner.posts           # a second feed input, of another shape, in the same worker
        map: partner-posts.map.yaml
      - topic: support.tickets         # events already in the contract's shape
        kind: ticket

Paths are relative to the inputs file. `MINNOW_WORKER__FAMILIES` (`minnow worker --families`) keeps the inputs of
the named families only, so each family can run as its own deployment. Topics listed here are yours: `minnow topics
apply` neither creates nor changes them. A family that keeps state (transcripts: conversations; IoT: devices) has
one input per worker, because its state is partitioned like its input topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.config_files import read_yaml
from pipeline.errors import ConfigError
from pipeline.models import FAMILIES, EventKind
from pipeline.settings import InputFamily, Settings
from pipeline.stages.mapping import FieldMapping, load_mapping

STATEFUL: frozenset[InputFamily] = frozenset({"transcript", "iot"})


@dataclass(frozen=True)
class Input:
    """One topic a worker consumes, the family its events belong to, and how they are read."""

    topic: str
    family: InputFamily
    mapping: FieldMapping | None = None  # None: events are in the contract's shape
    kind: EventKind | None = None  # for contract-shaped events without `kind`: what they are (None: guessed)
    external: bool = False  # listed in an inputs file: the user's topic, not managed by `minnow topics apply`


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    map: Path | None = None
    kind: EventKind | None = None

    @model_validator(mode="after")
    def _one_way_to_read(self) -> _Entry:
        if (self.map is None) == (self.kind is None):
            raise ValueError(f"input {self.topic}: give either `map` (a field mapping file) or `kind`, not both")
        return self


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: list[_Entry]


def family_of(kind: EventKind) -> InputFamily:
    """The family whose input topic carries events of `kind` (conversations arrive with transcript segments)."""
    return "transcript" if kind == "conversation" else kind


def worker_inputs(settings: Settings) -> tuple[Input, ...]:
    """The inputs of this worker, checked: at least one, no topic twice, one per stateful family."""
    wanted = set(settings.worker.families)
    every = _listed(settings.worker.inputs_file) if settings.worker.inputs_file else _own(settings)
    inputs = tuple(i for i in every if i.family in wanted)
    if not inputs:
        raise ConfigError(
            f"no input topic for the families {', '.join(sorted(wanted))}; list one in MINNOW_WORKER__INPUTS_FILE "
            "or choose other families (MINNOW_WORKER__FAMILIES, minnow worker --families)"
        )
    seen: dict[str, Input] = {}
    for item in inputs:
        if item.topic in seen:
            raise ConfigError(f"input topic {item.topic} is listed twice; a topic is read one way")
        seen[item.topic] = item
    for family in STATEFUL:
        topics = [i.topic for i in inputs if i.family == family]
        if len(topics) > 1:
            raise ConfigError(
                f"{family} keeps state partitioned like its input topic, so one worker reads one {family} topic; "
                f"got {', '.join(topics)}: run a worker deployment per topic (each with its own group id)"
            )
    return inputs


def _own(settings: Settings) -> list[Input]:
    return [
        Input(settings.topic(family.input_topic), family_of(cast(EventKind, kind)))
        for kind, family in FAMILIES.items()
        if family.input_topic is not None
    ]


def _listed(path: Path) -> list[Input]:
    try:
        listed = _File.model_validate(read_yaml(path, "inputs file"))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {str(first['msg']).removeprefix('Value error, ')}") from exc
    inputs = []
    for entry in listed.inputs:
        if entry.map is not None:
            mapping = load_mapping(entry.map if entry.map.is_absolute() else path.parent / entry.map)
            inputs.append(Input(entry.topic, family_of(mapping.kind), mapping=mapping, external=True))
        else:
            assert entry.kind is not None  # the entry's validator asks for one of the two
            inputs.append(Input(entry.topic, family_of(entry.kind), kind=entry.kind, external=True))
    return inputs
