"""Topic contracts, Kafka-free: load the specs in topics/, generate and check their JSON Schemas.

Creating the topics on a cluster from these specs is `pipeline/ops/topics.py` (`minnow topics apply`).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from pipeline import assets
from pipeline.config_files import read_yaml
from pipeline.errors import ConfigError
from pipeline.models import FAMILIES, EventKind

# topics/ of the checkout, or its copy inside an installed wheel (pipeline/assets.py)
SPEC_DIR = assets.topics_dir()
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
Role = Literal["input", "sink", "escalation", "review", "labels", "state", "deadletter"]
CLEANUP_POLICIES = ("delete", "compact", "compact,delete")


# ------------------------------------------------------------------------------------------------ specs
class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KeySpec(_Spec):
    """Which field of the event is the record key, per event kind (what the event's `key()` returns)."""

    description: str = Field(min_length=1)
    by_kind: dict[EventKind, str] | None = Field(
        default=None, description="event kind -> field of that event; none: the key is carried over unchanged"
    )

    @model_validator(mode="after")
    def _fields_exist(self) -> KeySpec:
        for kind, name in (self.by_kind or {}).items():
            if name not in FAMILIES[kind].model_fields:
                known = ", ".join(FAMILIES[kind].model_fields)
                raise ValueError(f"a {kind} event has no field {name!r} (it has {known})")
        return self


class HeaderSpec(_Spec):
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)


class ValueSpec(_Spec):
    """What a record's value holds: JSON of one of `models`, or the bytes it arrived with."""

    encoding: Literal["json", "bytes"]
    description: str = Field(min_length=1)
    models: tuple[str, ...] = Field(default=(), description="pydantic models as 'module:Class'")
    pending: str | None = Field(default=None, description="why there is no model yet (the schema then says so)")

    @field_validator("models")
    @classmethod
    def _models_import(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        for path in models:
            resolve_model(path)
        return models

    @model_validator(mode="after")
    def _models_fit_encoding(self) -> ValueSpec:
        if self.encoding == "bytes" and (self.models or self.pending):
            raise ValueError("a bytes value has no models; drop `models` and `pending`")
        if self.encoding == "json" and bool(self.models) == bool(self.pending):
            raise ValueError("a json value names its `models`, or says why it has none yet in `pending`")
        return self


class TopicSpec(_Spec):
    """One topic: its logical name, size, broker configs, record key, value contract and schema file."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="logical name; the prefix is added on apply")
    description: str = Field(min_length=1)
    role: Role
    partitions: int = Field(ge=1, le=10_000)
    # None: the cluster's default.replication.factor (a local broker: 1; a production cluster: usually 3).
    replication_factor: int | None = Field(default=None, ge=1, le=16)
    config: dict[str, str]
    key: KeySpec
    value: ValueSpec
    headers: tuple[HeaderSpec, ...] = ()
    schema_file: str = Field(alias="schema")

    @field_validator("config", mode="before")
    @classmethod
    def _config_as_strings(cls, raw: object) -> object:
        # Kafka configs are strings on the wire; YAML reads 604800000 as an int and true as a bool.
        if not isinstance(raw, dict):
            return raw
        return {
            k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int) else v) for k, v in raw.items()
        }

    @field_validator("config")
    @classmethod
    def _config_is_sound(cls, config: dict[str, str]) -> dict[str, str]:
        for required in ("cleanup.policy", "retention.ms"):
            if required not in config:
                raise ValueError(f"`config` must set {required}")
        if config["cleanup.policy"] not in CLEANUP_POLICIES:
            raise ValueError(f"cleanup.policy must be one of {', '.join(CLEANUP_POLICIES)}")
        if not re.fullmatch(r"-1|\d+", config["retention.ms"]):
            raise ValueError("retention.ms must be milliseconds (an integer), or -1 to keep records forever")
        return config

    @model_validator(mode="after")
    def _consistent(self) -> TopicSpec:
        if self.schema_file != f"schemas/{self.name}.json":
            raise ValueError(f"schema must be schemas/{self.name}.json")
        if (self.role == "deadletter") != (self.value.encoding == "bytes"):
            raise ValueError("the dead-letter topic, and only it, keeps the original bytes (value.encoding: bytes)")
        return self


def resolve_model(path: str) -> type[BaseModel]:
    """The pydantic model named 'module:Class'."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"{path!r} is not 'module:Class' (e.g. pipeline.models:Result)")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise ValueError(f"{path!r} is not a pydantic model")
    return found


def load_spec(path: Path) -> TopicSpec:
    """One spec file, validated; every problem is a ConfigError naming the file and the field."""
    raw = read_yaml(path, "topic spec")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a topic spec is a YAML mapping (see topics/README.md), not {type(raw).__name__}")
    try:
        spec = TopicSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"{path}: invalid topic spec: {problems} (fields: topics/README.md)") from exc
    if path.name != f"{spec.name}.yaml":
        raise ConfigError(f"{path}: the spec of topic {spec.name!r} must be named {spec.name}.yaml")
    return spec


def load_specs(directory: Path = SPEC_DIR) -> tuple[TopicSpec, ...]:
    """Every `*.yaml` spec in the folder, sorted by name."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"no topic specs (*.yaml) in {directory}; pass the topics/ folder of the Minnow repository")
    return tuple(load_spec(path) for path in paths)


# ---------------------------------------------------------------------------------------------- schemas
def json_schema(spec: TopicSpec) -> dict[str, Any]:
    """The JSON Schema of a topic's values (of its headers, for the dead-letter topic), from the models."""
    source = ", ".join(spec.value.models) or f"topics/{spec.name}.yaml"
    head: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$comment": f"Topic {spec.name}. Generated from {source} by `minnow topics schemas`; do not edit.",
    }
    if spec.value.encoding == "bytes":
        return head | {
            "title": f"{spec.name} record headers",
            "description": f"{spec.value.description} This schema describes the headers (UTF-8 strings).",
            "type": "object",
            "properties": {h.name: {"type": "string", "description": h.description} for h in spec.headers},
            "required": [h.name for h in spec.headers],
        }
    if spec.value.pending:
        return head | {
            "title": f"{spec.name} value",
            "description": f"{spec.value.description} No model yet: {spec.value.pending}",
            "type": "object",
        }
    # Inputs are what producers may send (defaults optional); outputs are what Minnow writes (all fields).
    mode: JsonSchemaMode = "validation" if spec.role == "input" else "serialization"
    models = [resolve_model(path) for path in spec.value.models]
    if len(models) == 1:
        return head | models[0].model_json_schema(mode=mode)
    refs, defs = models_json_schema([(model, mode) for model in models])
    return head | {
        "title": f"{spec.name} value",
        "description": spec.value.description,
        "anyOf": [refs[(model, mode)] for model in models],
        **defs,
    }


def render_schema(spec: TopicSpec) -> str:
    return json.dumps(json_schema(spec), indent=2, ensure_ascii=False) + "\n"


def _schema_plan(directory: Path) -> tuple[dict[Path, str], list[Path]]:
    """(schema file -> wanted text, stale schema files that no spec names)."""
    wanted = {directory / spec.schema_file: render_schema(spec) for spec in load_specs(directory)}
    stale = [path for path in sorted((directory / "schemas").glob("*.json")) if path not in wanted]
    return wanted, stale


def write_schemas(directory: Path = SPEC_DIR) -> list[Path]:
    """Regenerate `schemas/*.json`; returns the files written or removed (empty when all were current)."""
    wanted, stale = _schema_plan(directory)
    touched: list[Path] = []
    for path, text in wanted.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            touched.append(path)
    for path in stale:
        path.unlink()
        touched.append(path)
    return touched


def check_schemas(directory: Path = SPEC_DIR) -> list[Path]:
    """Schema files that differ from what the models generate, are missing, or belong to no spec."""
    wanted, stale = _schema_plan(directory)
    drifted = [path for path, text in wanted.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]
    return drifted + stale
