"""The schema registry, over its Confluent-compatible REST API: schemas fetched by id and registered by subject.

Input records framed for the registry (pipeline/wire.py) are decoded with their writer's schema, fetched once per
id and cached; sink records are written plain (default) or framed with a schema registered once under
`<topic>-value` (TopicNameStrategy). A registry that is down is not a record's fault: requests are retried with
back-off for `retry_s`, then RegistryError fails the batch, so the worker exits and its records are read again
after restart, never dead-lettered for it. Only the registry's own answer — no schema with that id — or bytes
that do not fit the schema make a dead letter.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel

from pipeline.avro import avro_schema, namespace_for, to_avro
from pipeline.codec import encode
from pipeline.errors import InputError, RegistryError, RegistryPayloadError, UnknownSchemaError
from pipeline.models import AnyEvent
from pipeline.settings import RegistrySettings, Settings
from pipeline.stages.mapping import FieldMapping
from pipeline.stages.validate import event_from_object, parse_event
from pipeline.stream import names
from pipeline.topic_specs import SPEC_DIR
from pipeline.wire import Schema, frame, is_framed, unframe

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_FIRST_BACKOFF_S = 0.25
_MAX_BACKOFF_S = 8.0
_NOT_FOUND = 404


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the value schema of `topic` is registered under `<topic>-value`."""
    return f"{topic}-value"


class RegistryClient:
    """A Confluent-compatible registry client: GET /schemas/ids/{id}, POST /subjects/{subject}/versions,
    GET /subjects/{subject}/versions/latest. Schemas are immutable per id, so each is fetched once."""

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if settings.url is None:
            raise RegistryError("no registry configured: set MINNOW_REGISTRY__URL")
        self._base = settings.url.rstrip("/")
        self._settings = settings
        self._sleep = sleep
        self._schemas: dict[int, Schema] = {}
        self._session: aiohttp.ClientSession | None = None

    async def schema(self, schema_id: int) -> Schema:
        """The schema with this id; UnknownSchemaError when the registry has none, RegistryError when it fails."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        status, body = await self._request("GET", f"/schemas/ids/{schema_id}")
        if status == _NOT_FOUND:
            raise UnknownSchemaError(f"the schema registry has no schema with id {schema_id}")
        self._check(status, body, f"schema {schema_id}")
        parsed = Schema.parse(schema_id, str(body.get("schemaType") or "AVRO"), str(body["schema"]))
        self._schemas[schema_id] = parsed
        return parsed

    async def register(self, subject: str, schema_type: str, text: str) -> int:
        """Register (or find, when it is already there) a schema under `subject`; returns its id."""
        payload = {"schema": text, "schemaType": schema_type}
        status, body = await self._request("POST", f"/subjects/{subject}/versions", payload)
        self._check(status, body, f"registering under {subject}")
        schema_id = int(body["id"])
        self._schemas.setdefault(schema_id, Schema.parse(schema_id, schema_type, text))
        return schema_id

    async def latest(self, subject: str) -> Schema:
        """The latest version registered under `subject`; RegistryError when there is none."""
        status, body = await self._request("GET", f"/subjects/{subject}/versions/latest")
        self._check(status, body, f"latest version of {subject}")
        schema_id = int(body["id"])
        parsed = Schema.parse(schema_id, str(body.get("schemaType") or "AVRO"), str(body["schema"]))
        self._schemas.setdefault(schema_id, parsed)
        return parsed

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---------------------------------------------------------------------------------------- internals
    def _check(self, status: int, body: dict[str, Any], what: str) -> None:
        if status < 300:
            return
        message = body.get("message") or body.get("error") or json.dumps(body)[:200]
        if status in (401, 403):
            raise RegistryError(
                f"the schema registry refused {what} (HTTP {status}): check MINNOW_REGISTRY__USERNAME and _PASSWORD"
            )
        raise RegistryError(f"the schema registry answered HTTP {status} for {what}: {message}")

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            settings = self._settings
            headers = {"Accept": CONTENT_TYPE + ", application/json"}
            if settings.username is not None and settings.password is not None:
                # built by hand: aiohttp's BasicAuth is deprecated in its newest releases, absent from none
                pair = f"{settings.username}:{settings.password.get_secret_value()}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            context = ssl.create_default_context(cafile=str(settings.ca_file)) if settings.ca_file else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
                connector=aiohttp.TCPConnector(ssl=context) if context is not None else None,
                headers=headers,
            )
        return self._session

    async def _request(self, method: str, path: str, payload: Any = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body); retried with back-off while the registry is unreachable or answers 5xx."""
        deadline = time.monotonic() + self._settings.retry_s
        backoff = _FIRST_BACKOFF_S
        url = self._base + path
        data = orjson.dumps(payload) if payload is not None else None
        headers = {"Content-Type": CONTENT_TYPE} if data is not None else None
        while True:
            try:
                async with self._open().request(method, url, data=data, headers=headers) as response:
                    status = response.status
                    text = await response.text()
                if status < 500:
                    return status, _json_object(text)
                problem = f"HTTP {status}: {text[:200]}"
            except (ssl.SSLError, aiohttp.ClientSSLError) as exc:  # a certificate problem does not heal by retrying
                raise RegistryError(f"TLS to the schema registry at {self._base} failed: {exc}") from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + backoff > deadline:
                raise RegistryError(
                    f"the schema registry at {self._base} is unavailable ({problem}) after retrying "
                    f"{self._settings.retry_s:.0f}s"
                )
            log.warning("schema registry %s %s failed (%s); retrying in %.2fs", method, path, problem, backoff)
            await self._sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"message": text[:200]}
    return value if isinstance(value, dict) else {"value": value}


class RegistryCodec:
    """What the worker and the escalator need: input records decoded (framed or plain), sink values encoded."""

    def __init__(self, settings: Settings, client: RegistryClient) -> None:
        self._client = client
        self._format = settings.registry.output_format
        self._max_bytes = settings.kafka.max_event_bytes
        self._logical = dict(names.SINK_TOPICS)
        self._topics = {kind: settings.topic(logical) for kind, logical in names.SINK_TOPICS.items()}
        self._writers: dict[str, tuple[int, Schema, dict[str, Any] | None]] = {}  # by topic
        self._started = False
        self._lock = asyncio.Lock()

    @classmethod
    def configured(cls, settings: Settings) -> RegistryCodec | None:
        """The codec when a registry is configured, else None (records and sinks stay plain JSON)."""
        if settings.registry.url is None:
            return None
        return cls(settings, RegistryClient(settings.registry))

    async def start(self) -> None:
        """Register every sink's schema once (json-schema or avro output); a no-op afterwards and for plain."""
        if self._started:
            return
        async with self._lock:
            if self._started or self._format == "plain":
                self._started = True
                return
            for kind, topic in self._topics.items():
                if topic in self._writers:
                    continue  # families that share a sink topic share its schema
                document = json.loads((SPEC_DIR / "schemas" / f"{self._logical[kind]}.json").read_text())
                if self._format == "avro":
                    derived = avro_schema(document, namespace=namespace_for(self._logical[kind]))
                    text, kind_name, avro = json.dumps(derived), "AVRO", derived
                else:
                    text, kind_name, avro = json.dumps(document), "JSON", None
                schema_id = await self._client.register(subject_for(topic), kind_name, text)
                self._writers[topic] = (schema_id, Schema.parse(schema_id, kind_name, text), avro)
                log.info("sink %s written as %s schema %d (%s)", topic, kind_name, schema_id, subject_for(topic))
            self._started = True

    async def parse(
        self, values: Sequence[bytes], *, mapping: FieldMapping | None = None, kind: str | None = None
    ) -> list[AnyEvent | InputError]:
        """Each value as an event (read through the input's mapping, if any), or the InputError that dead-letters
        it. RegistryError (the registry is down) is raised, not returned: it fails the batch."""
        parsed: list[AnyEvent | InputError] = []
        for raw in values:
            try:
                parsed.append(await self.parse_one(raw, mapping=mapping, kind=kind))
            except InputError as exc:
                parsed.append(exc)
        return parsed

    async def parse_one(self, raw: bytes, *, mapping: FieldMapping | None = None, kind: str | None = None) -> AnyEvent:
        if not is_framed(raw):
            return parse_event(raw, max_bytes=self._max_bytes, mapping=mapping, kind=kind)
        if len(raw) > self._max_bytes:
            raise RegistryPayloadError(f"event is {len(raw)} bytes, over the {self._max_bytes}-byte limit")
        schema_id, payload = unframe(raw)
        schema = await self._client.schema(schema_id)
        return event_from_object(schema.decode(payload), mapping=mapping, kind=kind)

    def sink_value(self, result: BaseModel, kind: str) -> bytes:
        """A sink record's value: plain JSON, or framed with the sink topic's registered schema."""
        if self._format == "plain":
            return encode(result)
        schema_id, schema, avro = self._writers[self._topics[kind]]
        if avro is None:
            return frame(schema_id, encode(result))
        return frame(schema_id, schema.encode(to_avro(result.model_dump(mode="json"), avro)))

    async def close(self) -> None:
        await self._client.close()
