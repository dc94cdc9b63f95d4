"""The stream's JSON: how every model Minnow writes to a topic becomes a record value."""

from __future__ import annotations

import orjson
from pydantic import BaseModel


def encode(model: BaseModel) -> bytes:
    """A record value: the model's JSON form, null fields left out (readers take them as their defaults)."""
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))
