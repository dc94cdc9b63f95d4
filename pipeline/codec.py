"""Minnow's one JSON encoding: how every model written to a topic or an output file becomes bytes."""

from __future__ import annotations

import orjson
from pydantic import BaseModel


def encode(model: BaseModel) -> bytes:
    """A record value: the model's whole JSON form, nulls included.

    Every field is written, null or not, so each record validates against its topic's checked-in JSON Schema
    (which requires the fields that have no default, e.g. an anomaly's `lower`/`upper`) and reads back as the
    same model; leaving nulls out once made an escalated one-sided-bound IoT result undecodable.
    """
    return orjson.dumps(model.model_dump(mode="json"))
