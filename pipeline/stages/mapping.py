"""Field mappings: events of any JSON shape read as one of Minnow's families, declared in YAML, no code.

A mapping names the family (`kind`) and, for each contract field, where its value is in the producer's event:

    kind: feed
    fields:
      id: $.uuid                      # a path into the event
      source: twitter                 # a constant (any value that is not a string starting with `$`)
      text: [$.body.message, $.text]  # the first path that is present and not null
      created_at: $.ts                # ISO 8601, or epoch seconds (milliseconds from 2e10 up)

Paths are a small subset of JSONPath: `$` is the event, `.name` a key, `['any key']` a key with dots or spaces,
`[0]` a list item. A required contract field whose paths are all missing fails the event with a `mapping_error`
that names the field and the path (the record goes to the dead-letter topic with its bytes); an optional one is
left at its default. The event as it was produced travels with its result (`Result.original`), so nothing the
producer sent is dropped and consumers can join on their own fields. docs/mapping.md has the reference.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from pipeline.config_files import read_yaml
from pipeline.errors import ConfigError, MappingError
from pipeline.models import FAMILIES, EventKind

# One path step: .name | ['quoted key'] | ["quoted key"] | [index]
_STEP = re.compile(r"""\.([A-Za-z0-9_\-@:]+)|\['((?:[^'\\]|\\.)*)'\]|\["((?:[^"\\]|\\.)*)"\]|\[(-?\d+)\]""")
_MISSING = object()


class JsonPath:
    """A compiled path: a tuple of keys (str) and list indexes (int)."""

    __slots__ = ("steps", "text")

    def __init__(self, text: str) -> None:
        if not text.startswith("$"):
            raise ValueError(f"a path starts with `$`, got {text!r}")
        steps: list[str | int] = []
        pos = 1
        while pos < len(text):
            match = _STEP.match(text, pos)
            if match is None:
                raise ValueError(f"cannot read path {text!r} at {text[pos:]!r}: use .key, ['key'] or [0]")
            name, single, double, index = match.groups()
            if index is not None:
                steps.append(int(index))
            else:
                quoted = single if single is not None else double
                steps.append(name if quoted is None else re.sub(r"\\(.)", r"\1", quoted))
            pos = match.end()
        self.steps = tuple(steps)
        self.text = text

    def find(self, obj: Any) -> Any:
        """The value at the path, or _MISSING with nothing there (a missing key, a short list, a wrong type)."""
        for step in self.steps:
            obj = _step(obj, step)
            if obj is _MISSING:
                break
        return obj

    def __repr__(self) -> str:
        return self.text


def _step(obj: Any, step: str | int) -> Any:
    if isinstance(step, int):
        return obj[step] if isinstance(obj, list) and -len(obj) <= step < len(obj) else _MISSING
    return obj[step] if isinstance(obj, dict) and step in obj else _MISSING


class FieldSource(BaseModel):
    """Where one contract field comes from: paths tried in order, or a constant."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    paths: tuple[JsonPath, ...] = ()
    constant: Any = None

    def value(self, event: dict[str, Any]) -> Any:
        if not self.paths:
            return self.constant
        for path in self.paths:
            found = path.find(event)
            if found is not _MISSING and found is not None:
                return found
        return _MISSING

    def describe(self) -> str:
        return " or ".join(p.text for p in self.paths) if self.paths else repr(self.constant)


def _source(spec: Any) -> FieldSource:
    """`$.a.b` -> a path; a list of paths -> tried in order; `$$x` -> the string `$x`; anything else a constant."""
    if isinstance(spec, str) and spec.startswith("$$"):
        return FieldSource(constant=spec[1:])
    if isinstance(spec, str) and spec.startswith("$"):
        return FieldSource(paths=(JsonPath(spec),))
    if isinstance(spec, list) and spec and all(isinstance(s, str) and s.startswith("$") for s in spec):
        return FieldSource(paths=tuple(JsonPath(s) for s in spec))
    return FieldSource(constant=spec)


class FieldMapping(BaseModel):
    """How events of one input become a family's events (`kind`): contract field -> where its value is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EventKind
    fields: dict[str, FieldSource] = Field(min_length=1)

    @field_validator("fields", mode="before")
    @classmethod
    def _compile(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        try:
            return {str(name): _source(spec) for name, spec in raw.items()}
        except ValueError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _fields_exist(self) -> FieldMapping:
        family = FAMILIES[self.kind]
        known = {info.alias or name for name, info in family.model_fields.items()} - {"kind"}
        unknown = sorted(set(self.fields) - known)
        if unknown:
            raise ValueError(f"{self.kind} events have no field {', '.join(unknown)}; the fields are {sorted(known)}")
        missing = sorted(
            info.alias or name
            for name, info in family.model_fields.items()
            if info.is_required() and name != "kind" and (info.alias or name) not in self.fields
        )
        if missing:
            raise ValueError(f"map every required {self.kind} field: {', '.join(missing)} not mapped")
        return self

    def id_of(self, event: dict[str, Any]) -> Any:
        """The raw value the `id` field maps to (None when missing): names an event that failed to map."""
        source = self.fields.get("id")
        value = source.value(event) if source is not None else _MISSING
        return None if value is _MISSING else value

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """The contract-shaped object (with `kind`) for one producer event; MappingError when a required field
        has no value."""
        required, text = _REQUIRED[self.kind], _TEXT[self.kind]
        out: dict[str, Any] = {"kind": self.kind}
        for name, source in self.fields.items():
            value = source.value(event)
            if value is _MISSING:
                if name in required:
                    raise MappingError(f"mapped field `{name}` has no value at {source.describe()}")
                continue
            out[name] = _as_text(value) if name in text else value
        return out


def _fields(kind: str, keep: Callable[[FieldInfo], bool]) -> frozenset[str]:
    return frozenset(info.alias or name for name, info in FAMILIES[kind].model_fields.items() if keep(info))


def _wants_text(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return str in get_args(annotation)
    return annotation is str


def _as_text(value: Any) -> Any:
    """An integer id is the same id as text (`12345` -> "12345"); anything else is left for validation to judge."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Per family, computed once: the contract fields a mapping must fill, and those that take text (an id given as an
# integer is read as text). `apply` runs for every mapped event.
_REQUIRED = {kind: _fields(kind, lambda info: info.is_required()) for kind in FAMILIES}
_TEXT = {kind: _fields(kind, lambda info: _wants_text(info.annotation)) for kind in FAMILIES}


def load_mapping(path: Path) -> FieldMapping:
    """A mapping file, validated; a ConfigError that names the file and what to fix."""
    raw = read_yaml(path, "field mapping")
    try:
        return FieldMapping.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where + ': ' if where else ''}{message}") from exc
