"""A small real HTTP server speaking the Confluent-compatible registry endpoints Minnow uses, for unit tests.

It is not a real registry (the integration tests run Apicurio: tests/integration/test_registry_e2e.py); it exists
so the client's retries, credentials and error answers are tested over real HTTP in milliseconds, and it can fail
on purpose (`fail_next` 503s, `down`) where a real registry cannot be told to.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web


class RegistryServer:
    """In-memory schemas by id and subject versions, served on 127.0.0.1 at a free port."""

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[str] = []
        self.fail_next = 0  # answer this many requests with 503 first
        self._auth = None if user is None else "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/schemas/ids/{id}", self._by_id)
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_get("/subjects/{subject}/versions/latest", self._latest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add(self, schema: str, schema_type: str = "JSON", *, schema_id: int | None = None) -> int:
        """Store a schema as a producer's serializer would have registered it; returns its id."""
        chosen = schema_id if schema_id is not None else max(self.schemas, default=0) + 1
        self.schemas[chosen] = {"schema": schema, "schemaType": schema_type}
        return chosen

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error_code": 50001, "message": "storage unavailable"}, status=503)
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            return web.json_response({"error_code": 401, "message": "Unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _by_id(self, request: web.Request) -> web.Response:
        found = self.schemas.get(int(request.match_info["id"]))
        if found is None:
            return web.json_response({"error_code": 40403, "message": "Schema not found"}, status=404)
        body = dict(found)
        if body["schemaType"] == "AVRO":
            del body["schemaType"]  # Confluent leaves out the type of Avro schemas
        return web.json_response(body)

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        subject = request.match_info["subject"]
        schema_type = body.get("schemaType", "AVRO")
        wanted = {"schema": body["schema"], "schemaType": schema_type}
        known = [schema_id for schema_id, schema in self.schemas.items() if schema == wanted]
        schema_id = known[0] if known else self.add(body["schema"], schema_type)
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return web.json_response({"id": schema_id})

    async def _latest(self, request: web.Request) -> web.Response:
        versions = self.subjects.get(request.match_info["subject"])
        if not versions:
            return web.json_response({"error_code": 40401, "message": "Subject not found"}, status=404)
        schema_id = versions[-1]
        return web.json_response({"id": schema_id, "version": len(versions), **self.schemas[schema_id]})
