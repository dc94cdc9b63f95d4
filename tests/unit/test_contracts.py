"""Every record Minnow writes round-trips: model -> JSON bytes -> the topic's checked-in JSON Schema -> the same model.

The examples are generated from each output topic's models (hypothesis): nulls wherever a field may be null,
one-sided and missing bounds, empty lists and maps, any unicode text. A field the encoder leaves out but the
schema requires, or a value the schema does not describe, fails here before a consumer meets it.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from pipeline.codec import encode
from pipeline.jsonl import dump
from pipeline.models import (
    Anomaly,
    EscalationRecord,
    InputInfo,
    MetricAnomaly,
    ModelInfo,
    Result,
)
from pipeline.topic_specs import SPEC_DIR, TopicSpec, load_specs, resolve_model

# Every topic Minnow writes JSON models to; inputs are written by users and the dead-letter topic keeps bytes.
OUTPUT_SPECS = [spec for spec in load_specs() if spec.role not in {"input", "deadletter"}]

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)

# The scalar types Minnow's contracts use, given a field's bounds (Field(ge=..., max_length=...)).
SCALARS: dict[Any, Callable[[dict[str, Any]], st.SearchStrategy[Any]]] = {
    type(None): lambda b: st.none(),
    Any: lambda b: JSON_VALUES,
    bool: lambda b: st.booleans(),
    int: lambda b: st.integers(b.get("ge", -(2**53)), b.get("le", 2**53)),
    float: lambda b: st.floats(min_value=b.get("ge"), max_value=b.get("le"), allow_nan=False, allow_infinity=False),
    str: lambda b: st.text(min_size=b.get("min_length", 0), max_size=min(b.get("max_length", 24), 24)),
    datetime: lambda b: st.datetimes(timezones=st.just(UTC)),
}


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    """The annotated-types constraints pydantic keeps for a field."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.BaseMetadata):
            for name in ("ge", "le", "min_length", "max_length"):
                if getattr(item, name, None) is not None:
                    found[name] = getattr(item, name)
    return found


def _for(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    """A strategy for one annotation: unions, literals, nested models, containers and the scalars above."""
    origin, args, bounds = get_origin(annotation), get_args(annotation), _bounds(metadata)
    if origin in (Union, types.UnionType):
        return st.one_of([_for(arg, metadata) for arg in args])
    if origin is Literal:
        return st.sampled_from(args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    if origin in (list, tuple, dict):
        return _container(origin, args, bounds)
    if annotation not in SCALARS:
        raise NotImplementedError(f"no strategy for {annotation!r}: teach SCALARS this type")
    return SCALARS[annotation](bounds)


def _container(origin: Any, args: tuple[Any, ...], bounds: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Lists and tuples of up to three items (empty ones included), maps of up to three unicode keys."""
    if origin is dict:
        return st.dictionaries(st.text(max_size=12), _for(args[1], []), max_size=3)
    items = st.lists(_for(args[0], []), min_size=bounds.get("min_length", 0), max_size=3)
    return items.map(tuple) if origin is tuple else items


def _field(info: FieldInfo) -> st.SearchStrategy[Any]:
    return _for(info.annotation, list(info.metadata))


def model_strategy(model: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    """Instances of `model`: required fields always drawn, defaulted ones sometimes; what the model rejects is
    dropped (cross-field rules), so every example is one the code could have made."""
    required = {info.alias or name: _field(info) for name, info in model.model_fields.items() if info.is_required()}
    optional = {info.alias or name: _field(info) for name, info in model.model_fields.items() if not info.is_required()}

    def build(values: dict[str, Any]) -> BaseModel | None:
        try:
            return model.model_validate(values)
        except ValidationError:
            return None

    return st.fixed_dictionaries(required, optional=optional).map(build).filter(lambda m: m is not None)  # type: ignore[return-value]


def _validator(spec: TopicSpec) -> Draft202012Validator:
    schema = json.loads((SPEC_DIR / spec.schema_file).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _round_trip(spec: TopicSpec, model: BaseModel) -> None:
    value = encode(model)
    errors = [e.message for e in _validator(spec).iter_errors(orjson.loads(value))]
    assert errors == [], f"{spec.name}: {errors[:3]}"
    assert type(model).model_validate_json(value) == model


@pytest.mark.parametrize(
    ("spec", "model"),
    [(spec, resolve_model(path)) for spec in OUTPUT_SPECS for path in spec.value.models],
    ids=lambda x: x.name if isinstance(x, TopicSpec) else x.__name__,
)
def test_every_output_topic_round_trips_through_its_schema(spec: TopicSpec, model: type[BaseModel]) -> None:
    """For generated instances of each output topic's models, the encoded bytes satisfy the checked-in schema
    and decode to an equal model."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(model_strategy(model))
    def check(instance: BaseModel) -> None:
        _round_trip(spec, instance)

    check()


def _one_sided_result(lower: float | None, upper: float | None) -> Result:
    reading = MetricAnomaly(value=93.5, lower=lower, upper=upper, score=0.97, out_of_bounds=True)
    return Result(
        id="m-1",
        kind="iot",
        anomaly=Anomaly(score=0.97, metrics={"temp_c": reading}, reasons=["anomaly.out_of_bounds"]),
        model=ModelInfo(name="all-MiniLM-L6-v2", version="x", quantization="int8"),
        input=InputInfo(tokens=0, chunks=0, truncated=False),
        route="escalate",
        escalation_reasons=["anomaly.out_of_bounds"],
    )


@pytest.mark.parametrize(("lower", "upper"), [(None, 70.0), (-20.0, None), (None, None)])
def test_an_escalated_iot_result_with_a_missing_bound_reaches_the_escalator_intact(
    lower: float | None, upper: float | None
) -> None:
    """The bug this file was written for: a null bound was left out, the schema requires it, and the escalator
    could not decode the record. Now the escalation validates and reads back with its nulls."""
    record = EscalationRecord(
        id="m-1",
        kind="iot",
        reasons=["anomaly.out_of_bounds"],
        result=_one_sided_result(lower, upper),
        event={"kind": "iot", "id": "m-1", "device_id": "d-1", "ts": "2026-12-04T00:00:00Z", "readings": {}},
        escalated_at=datetime(2026, 12, 4, tzinfo=UTC),
    )
    spec = next(spec for spec in OUTPUT_SPECS if spec.name == "escalations")
    _round_trip(spec, record)
    decoded = EscalationRecord.model_validate_json(encode(record)).result.anomaly
    assert decoded is not None and (decoded.metrics["temp_c"].lower, decoded.metrics["temp_c"].upper) == (lower, upper)


def test_the_cli_writes_results_that_load_back() -> None:
    """`minnow infer` lines are written with the same encoding, so each loads back into `Result` unchanged."""
    result = _one_sided_result(None, 70.0)
    line = dump(result)
    assert line.endswith(b"\n") and b'"lower":null' in line
    assert Result.model_validate_json(line) == result


def test_the_schemas_checked_here_are_the_checked_in_files() -> None:
    """The round trips above read topics/schemas/*.json, the files users get, one per output topic."""
    files = {Path(spec.schema_file).name for spec in OUTPUT_SPECS}
    assert files <= {p.name for p in (SPEC_DIR / "schemas").glob("*.json")} and len(files) >= 10
