"""Avro schemas derived from the topics' JSON Schemas, and record values carried between the two.

The JSON Schema of a topic (topics/schemas/<topic>.json, generated from the pydantic model) stays the one
contract; the Avro schema of a sink is derived from it, so the two cannot drift. The mapping:

    object with properties           record (named after its title; `$defs` entries by their name, once)
    object with additionalProperties: a schema   map of that schema
    array                            array of its items
    string, enum of strings, const   string  (enum values such as "zero-shot" are no Avro enum symbols)
    integer / number / boolean       long / double / boolean
    anyOf [X, null]                  union ["null", X], default null
    anything else (free-form JSON)   string holding the JSON text, marked "minnow.json": true

A free-form value (a result's `original`, the event as its producer wrote it) has no Avro type, so it travels as
JSON text; `to_avro` and `from_avro` turn it into text and back, so a record read back equals the one written.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

JSON_TEXT = "minnow.json"  # the attribute that marks a string holding free-form JSON
_NAME = re.compile(r"[^A-Za-z0-9_]")
_PRIMITIVES = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean", "null": "null"}


def avro_schema(json_schema: dict[str, Any], *, namespace: str) -> dict[str, Any]:
    """The Avro record schema for a topic's JSON Schema (its root must be an object with properties)."""
    deriver = _Deriver(json_schema.get("$defs", {}), namespace)
    derived = deriver.node(json_schema, json_schema.get("title", "Record"))
    if not isinstance(derived, dict) or derived.get("type") != "record":
        raise ValueError("a topic's JSON Schema must describe an object with properties")
    return derived


def namespace_for(topic: str) -> str:
    """An Avro namespace for a logical topic name: `feeds.enriched` -> `minnow.feeds.enriched`."""
    parts = [_NAME.sub("_", part) or "_" for part in topic.split(".")]
    return ".".join(["minnow", *(part if not part[0].isdigit() else f"_{part}" for part in parts)])


class _Deriver:
    def __init__(self, defs: dict[str, Any], namespace: str) -> None:
        self._defs = defs
        self._namespace = namespace
        self._named: set[str] = set()

    def node(self, schema: dict[str, Any], name_hint: str) -> Any:
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            if name in self._named:
                return f"{self._namespace}.{_avro_name(name)}"  # a named type is defined once, then referenced
            return self.node(self._defs[name], name)
        if "anyOf" in schema or isinstance(schema.get("type"), list):
            options = schema.get("anyOf") or [{**schema, "type": kind} for kind in schema["type"]]
            return self._union(options, name_hint)
        return self._single(schema, name_hint)

    def _single(self, schema: dict[str, Any], name_hint: str) -> Any:
        kind = schema.get("type")
        derived: Any = {"type": "string", JSON_TEXT: True}  # what has no Avro shape travels as JSON text
        if "const" in schema or "enum" in schema:
            values = schema.get("enum", [schema.get("const")])
            if kind in (None, "string") and all(isinstance(value, str) for value in values):
                derived = "string"
        elif kind == "object":
            extra = schema.get("additionalProperties")
            if "properties" in schema:
                derived = self._record(schema, name_hint)
            elif isinstance(extra, dict) and extra:
                derived = {"type": "map", "values": self.node(extra, f"{name_hint}Value")}
        elif kind == "array" and isinstance(schema.get("items"), dict):
            derived = {"type": "array", "items": self.node(schema["items"], f"{name_hint}Item")}
        elif isinstance(kind, str) and kind in _PRIMITIVES:
            derived = _PRIMITIVES[kind]
        return derived

    def _union(self, options: list[dict[str, Any]], name_hint: str) -> Any:
        nullable = any(option.get("type") == "null" for option in options)
        others = [option for option in options if option.get("type") != "null"]
        if len(others) != 1:  # several non-null shapes: keep the value as JSON text rather than guess a branch
            branch: Any = {"type": "string", JSON_TEXT: True}
        else:
            branch = self.node(others[0], name_hint)
        return ["null", branch] if nullable else branch

    def _record(self, schema: dict[str, Any], name_hint: str) -> dict[str, Any]:
        # a `$defs` entry is named by its key, which its references use; any other object by its title
        name = _avro_name(name_hint if name_hint in self._defs else str(schema.get("title") or name_hint))
        self._named.add(name_hint)
        fields = []
        for field_name, field_schema in schema["properties"].items():
            derived = self.node(field_schema, _avro_name(field_name.title()))
            entry: dict[str, Any] = {"name": field_name, "type": derived}
            if isinstance(derived, list) and derived[0] == "null":
                entry["default"] = None
            fields.append(entry)
        record: dict[str, Any] = {"type": "record", "name": name, "namespace": self._namespace, "fields": fields}
        if schema.get("description"):
            record["doc"] = str(schema["description"])
        return record


def _avro_name(text: str) -> str:
    name = _NAME.sub("_", text) or "_"
    return name if not name[0].isdigit() else f"_{name}"


def to_avro(value: Any, schema: Any) -> Any:
    """A JSON value (a record as `pipeline.codec` writes it) as the datum of a derived Avro schema."""
    return _Walker(schema, writing=True).walk(value, schema)


def from_avro(value: Any, schema: Any) -> Any:
    """A datum read with a derived Avro schema back as the JSON value it was written from."""
    return _Walker(schema, writing=False).walk(value, schema)


class _Walker:
    """Walks a value along its Avro schema, turning free-form JSON into text (writing) or back (reading)."""

    def __init__(self, root: Any, *, writing: bool) -> None:
        self._names: dict[str, dict[str, Any]] = {}
        self._collect(root)
        self._writing = writing

    def _collect(self, schema: Any, namespace: str = "") -> None:
        # Registries may hand a schema back with nested namespaces left out (they are inherited): resolve them.
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
        elif isinstance(schema, dict):
            if schema.get("type") == "record":
                namespace = str(schema.get("namespace", namespace))
                name = str(schema["name"])
                self._names[name if "." in name else f"{namespace}.{name}".lstrip(".")] = schema
                self._names.setdefault(name.rsplit(".", 1)[-1], schema)  # a reference may use the short name
                for entry in schema["fields"]:
                    self._collect(entry["type"], namespace)
            elif schema.get("type") == "map":
                self._collect(schema["values"], namespace)
            elif schema.get("type") == "array":
                self._collect(schema["items"], namespace)

    def walk(self, value: Any, schema: Any) -> Any:
        if isinstance(schema, str):  # a named record, or a primitive
            return self.walk(value, self._names[schema]) if schema in self._names else value
        if isinstance(schema, list):  # a union: ["null", X] walks X; several branches were made JSON text
            branches = [branch for branch in schema if branch != "null"]
            return value if value is None or len(branches) != 1 else self.walk(value, branches[0])
        if schema.get(JSON_TEXT):
            return orjson.dumps(value).decode() if self._writing else orjson.loads(value)
        return self._container(value, schema)

    def _container(self, value: Any, schema: dict[str, Any]) -> Any:
        kind = schema.get("type")
        if kind == "record" and isinstance(value, dict):
            return {entry["name"]: self.walk(value.get(entry["name"]), entry["type"]) for entry in schema["fields"]}
        if kind == "map" and isinstance(value, dict):
            return {key: self.walk(item, schema["values"]) for key, item in value.items()}
        if kind == "array" and isinstance(value, list):
            return [self.walk(item, schema["items"]) for item in value]
        return value
