"""The Chat Completions client against a real local HTTP server: wire format, usage, and errors translated."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from pydantic import SecretStr

from pipeline.errors import AnswerError, ConfigError, ProviderError
from pipeline.escalation.client import ChatClient, ChatReply, ChatRequest, api_key_from
from pipeline.settings import EscalationSettings
from tests.openai_server import GARBAGE, REFUSAL, OpenAIServer, Step, answer, status

T = TypeVar("T")
SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "object", "properties": {"text": {"type": "string"}}}},
    "required": ["summary"],
    "additionalProperties": False,
}
REQUEST = ChatRequest(
    messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": "<item>\nHello there.\n</item>"}),
    schema_name="answer",
    schema=SCHEMA,
    max_tokens=64,
)


def against_server(
    *steps: Step, key: str | None = "sk-test-123", timeout_s: float = 5.0
) -> Callable[[Callable[[ChatClient, OpenAIServer], Awaitable[T]]], T]:
    """Run `body(client, server)` with a fresh server scripted with `steps`."""

    def run(body: Callable[[ChatClient, OpenAIServer], Awaitable[T]]) -> T:
        async def main() -> T:
            async with OpenAIServer() as server:
                server.script(*steps)
                secret = SecretStr(key) if key is not None else None
                async with ChatClient(
                    base_url=server.base_url + "/", model="gpt-4o-mini", api_key=secret, timeout_s=timeout_s
                ) as client:
                    return await body(client, server)

        return asyncio.run(main())

    return run


def test_request_follows_the_wire_format_and_reply_is_read() -> None:
    """POST /v1/chat/completions with a bearer key, strict json_schema response_format and max_tokens; the reply's
    content, reporting model and usage come back."""

    async def body(client: ChatClient, server: OpenAIServer) -> tuple[ChatReply, Any]:
        return await client.complete(REQUEST), server.requests

    reply, requests = against_server()(body)
    [seen] = requests
    assert seen.headers["Authorization"] == "Bearer sk-test-123"
    assert seen.body["model"] == "gpt-4o-mini"
    assert seen.body["max_tokens"] == 64
    assert seen.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    assert seen.body["messages"] == list(REQUEST.messages)
    assert reply.content == '{"summary":{"text":"In short: Hello there."}}'
    assert reply.model == "test-large-1"
    assert reply.prompt_tokens == len(orjson.dumps(seen.body["messages"])) // 4  # the server's usage, as reported
    assert reply.completion_tokens == len(reply.content) // 4
    assert reply.finish_reason == "stop" and reply.refusal is None


def test_no_key_means_no_authorization_header_and_the_key_is_never_in_the_repr() -> None:
    async def body(client: ChatClient, server: OpenAIServer) -> dict[str, str]:
        await client.complete(REQUEST)
        return server.requests[0].headers

    assert "Authorization" not in against_server(key=None)(body)
    client = ChatClient(base_url="http://x/v1", model="m", api_key=SecretStr("sk-secret-9"), timeout_s=1)
    assert "sk-secret-9" not in repr(client) and "sk-secret-9" not in str(vars(client))


def test_a_429_carries_status_and_retry_after() -> None:
    async def body(client: ChatClient, server: OpenAIServer) -> ProviderError:
        with pytest.raises(ProviderError) as raised:
            await client.complete(REQUEST)
        return raised.value

    error = against_server(status(429, retry_after="2"))(body)
    assert (error.status, error.retry_after_s, error.retryable, error.provider_fault) == (429, 2.0, True, False)


@pytest.mark.parametrize(
    ("code", "retryable", "provider_fault"),
    [(500, True, True), (503, True, True), (400, False, False), (401, False, True), (422, False, False)],
)
def test_http_errors_become_provider_errors(code: int, retryable: bool, provider_fault: bool) -> None:
    async def body(client: ChatClient, server: OpenAIServer) -> ProviderError:
        with pytest.raises(ProviderError) as raised:
            await client.complete(REQUEST)
        return raised.value

    error = against_server(status(code))(body)
    assert (error.status, error.retryable, error.provider_fault) == (code, retryable, provider_fault)
    assert f"scripted {code}" in str(error)


def test_an_error_body_that_quotes_the_key_is_stored_without_it() -> None:
    """A provider (or a proxy's debug page) that echoes the key and the Authorization header: the ProviderError,
    which ends up in review records and logs, carries neither."""

    async def body(client: ChatClient, server: OpenAIServer) -> ProviderError:
        with pytest.raises(ProviderError) as raised:
            await client.complete(REQUEST)
        return raised.value

    error = against_server(status(401, echo_auth=True), key="sk-live-very-secret-42")(body)
    assert "Incorrect API key provided" in str(error) and "Authorization: Bearer [REDACTED]" in str(error)
    assert "sk-live-very-secret-42" not in str(error)


def test_a_timeout_becomes_a_retryable_provider_error() -> None:
    async def body(client: ChatClient, server: OpenAIServer) -> ProviderError:
        with pytest.raises(ProviderError) as raised:
            await client.complete(REQUEST)
        return raised.value

    error = against_server(answer(delay_s=1.0), timeout_s=0.2)(body)
    assert error.status is None and error.retryable and isinstance(error.__cause__, TimeoutError)


def test_a_refused_connection_becomes_a_retryable_provider_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> ProviderError:
        async with ChatClient(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key=None, timeout_s=2) as client:
            with pytest.raises(ProviderError) as raised:
                await client.complete(REQUEST)
            return raised.value

    error = asyncio.run(main())
    assert error.status is None and error.retryable and error.provider_fault


def test_a_body_that_is_not_a_completion_is_an_answer_error() -> None:
    async def body(client: ChatClient, server: OpenAIServer) -> None:
        with pytest.raises(AnswerError, match="not a Chat Completions reply"):
            await client.complete(REQUEST)

    against_server(GARBAGE)(body)


def test_a_refusal_is_reported() -> None:
    async def body(client: ChatClient, server: OpenAIServer) -> ChatReply:
        return await client.complete(REQUEST)

    reply = against_server(REFUSAL)(body)
    assert reply.refusal == "I can't help with that." and reply.content == ""


def test_api_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert api_key_from(EscalationSettings()) is None
    direct = api_key_from(EscalationSettings(api_key=SecretStr("sk-env")))
    assert direct is not None and direct.get_secret_value() == "sk-env"
    key_file = tmp_path / "key"
    key_file.write_text("sk-file\n")
    from_file = api_key_from(EscalationSettings(api_key_file=key_file))
    assert from_file is not None and from_file.get_secret_value() == "sk-file"
    key_file.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        api_key_from(EscalationSettings(api_key_file=key_file))
    with pytest.raises(ConfigError, match="cannot read"):
        api_key_from(EscalationSettings(api_key_file=tmp_path / "missing"))
