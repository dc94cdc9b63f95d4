"""A real HTTP server speaking OpenAI's Chat Completions wire format, scriptable per request, recording every one.

Tests run the escalation tier against it instead of mocking the client: it binds 127.0.0.1 on a free port, answers
with JSON that follows the requested schema (derived from the request: the first label, low moderation scores, the
item's first words as its summary) unless a script says otherwise (delay, held until released, 429 with Retry-After,
500, a malformed or off-schema answer, a body that is not a completion at all), and keeps each request's arrival time
and body.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

Reply = Literal["answer", "status", "malformed", "wrong_schema", "garbage", "refusal"]


@dataclass(frozen=True)
class Step:
    """How to answer one request."""

    reply: Reply = "answer"
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    model: str | None = None
    held: bool = False  # no answer until `release_held()` (or the server stops)
    echo_auth: bool = False  # an error body that quotes the request's Authorization header, as debug pages do
    label: str | None = None  # answer this label instead of the first one (it may be outside the label set)
    category_score: float | None = None  # score every moderation category this instead of the default


def answer(
    *, delay_s: float = 0.0, model: str | None = None, label: str | None = None, category_score: float | None = None
) -> Step:
    return Step("answer", delay_s=delay_s, model=model, label=label, category_score=category_score)


def status(code: int, *, retry_after: str | None = None, echo_auth: bool = False) -> Step:
    return Step("status", status=code, retry_after=retry_after, echo_auth=echo_auth)


HELD = Step("answer", held=True)
MALFORMED = Step("malformed")
WRONG_SCHEMA = Step("wrong_schema")
GARBAGE = Step("garbage")
REFUSAL = Step("refusal")


@dataclass
class Recorded:
    """One request as the server saw it, recorded on arrival; times are time.monotonic() of this process.

    `responded_at` and `status` are filled in when the answer leaves (they stay NaN and 0 for a request whose
    client gave up first).
    """

    received_at: float
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    responded_at: float = float("nan")
    status: int = 0
    retry_after: str | None = None

    @property
    def user_text(self) -> str:
        return str(self.body["messages"][-1]["content"])

    @property
    def item(self) -> str:
        match = re.search(r"<item>\n(.*)\n</item>", self.user_text, re.DOTALL)
        return match.group(1) if match else ""


@dataclass
class _Rule:
    marker: str
    steps: deque[Step]


@dataclass
class OpenAIServer:
    """`async with OpenAIServer() as server:` then point a client at `server.base_url`."""

    model: str = "test-large-1"
    requests: list[Recorded] = field(default_factory=list)
    _queue: deque[Step] = field(default_factory=deque)
    _rules: list[_Rule] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *steps: Step) -> None:
        """The next requests (of any item) are answered with these steps in order; then normal answers."""
        self._queue.extend(steps)

    def script_for(self, marker: str, *steps: Step) -> None:
        """Requests whose item text contains `marker` take these steps first (before the general script)."""
        self._rules.append(_Rule(marker, deque(steps)))

    async def __aenter__(self) -> OpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))
        return self

    def release_held(self) -> None:
        """Let every request held by a HELD step (now or later) be answered."""
        self._released.set()

    async def __aexit__(self, *exc: object) -> None:
        self.release_held()
        if self._runner is not None:
            await self._runner.cleanup()

    def _next_step(self, body: dict[str, Any]) -> Step:
        text = str(body.get("messages", [{}])[-1].get("content", ""))
        for rule in self._rules:
            if rule.steps and rule.marker in text:
                return rule.steps.popleft()
        return self._queue.popleft() if self._queue else Step()

    async def _handle(self, request: web.Request) -> web.Response:
        received = time.monotonic()
        raw = await request.read()
        body = orjson.loads(raw)
        seen = Recorded(received_at=received, body=body, raw=raw, headers=dict(request.headers))
        self.requests.append(seen)
        step = self._next_step(body)
        if step.held:
            await self._released.wait()
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        response = self._respond(step, body, request.headers.get("Authorization", ""))
        seen.responded_at, seen.status, seen.retry_after = time.monotonic(), response.status, step.retry_after
        return response

    def _respond(self, step: Step, body: dict[str, Any], authorization: str) -> web.Response:
        if step.reply == "status":
            headers = {"Retry-After": step.retry_after} if step.retry_after is not None else {}
            message = f"scripted {step.status}"
            if step.echo_auth:
                key = authorization.removeprefix("Bearer ")
                message += f"; Incorrect API key provided: {key}. request headers: Authorization: {authorization}"
            error = {"error": {"message": message, "type": "scripted", "code": None}}
            return web.json_response(error, status=step.status, headers=headers)
        if step.reply == "garbage":
            return web.Response(text="<html>upstream hiccup</html>", content_type="text/html")
        schema = body["response_format"]["json_schema"]["schema"]
        content: str | None
        refusal = None
        if step.reply == "malformed":
            content = '{"classification": {"label": '
        elif step.reply == "wrong_schema":
            content = orjson.dumps({"classification": {"label": "no-such-label", "confidence": 7}}).decode()
        elif step.reply == "refusal":
            content, refusal = None, "I can't help with that."
        else:
            content = orjson.dumps(plausible_answer(schema, body, step.label, step.category_score)).decode()
        prompt_tokens = len(orjson.dumps(body["messages"])) // 4
        completion_tokens = max(len(content or refusal or "") // 4, 1)
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": step.model or self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": refusal},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


def plausible_answer(
    schema: dict[str, Any], body: dict[str, Any], label: str | None = None, category_score: float | None = None
) -> dict[str, Any]:
    """An answer that follows `schema`: the first label, confidence 0.9, every category 0.1 (0.8 for `hate` when
    the item says "hate"), and the item's first sentence as the summary (placeholders kept, as a model would).
    `label` and `category_score` replace the label and every category's score (a scripted verdict)."""
    text = str(body["messages"][-1]["content"])
    match = re.search(r"<item>\n(.*)\n</item>", text, re.DOTALL)
    item = match.group(1) if match else text
    out: dict[str, Any] = {}
    props = schema.get("properties", {})
    if "classification" in props:
        labels = props["classification"]["properties"]["label"]["enum"]
        out["classification"] = {"label": label or labels[0], "confidence": 0.9}
    if "moderation" in props:
        names = props["moderation"]["properties"]["categories"]["properties"]
        out["moderation"] = {
            "categories": {
                name: category_score
                if category_score is not None
                else (0.8 if name == "hate" and "hate" in item.lower() else 0.1)
                for name in names
            }
        }
    if "summary" in props:
        first = re.split(r"(?<=[.!?])\s", item.replace("\n", " "), maxsplit=1)[0]
        out["summary"] = {"text": f"In short: {first}"}
    return out
