"""An async client for OpenAI-compatible Chat Completions with a JSON-schema answer; errors become ProviderError."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from pydantic import SecretStr

from pipeline.errors import AnswerError, ConfigError, ProviderError
from pipeline.escalation.retry import parse_retry_after
from pipeline.settings import EscalationSettings

# An error body is quoted in the ProviderError message; a provider's HTML error page must not fill the logs.
_MAX_ERROR_BODY_CHARS = 300
# An Authorization header or a bearer token quoted anywhere: the scheme kept, the credential dropped.
_AUTHORIZATION = re.compile(
    r"(?i)((?:authorization|proxy-authorization)\s*[:=]\s*\"?(?:bearer|basic|token)?\s*|bearer\s+)[^\s\",;}]+"
)
# The usual rule of thumb for English text and JSON with BPE tokenizers: about four characters per token.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class ChatRequest:
    """What to ask: the messages, and the JSON schema the answer must follow (strict structured output)."""

    messages: tuple[dict[str, str], ...]
    schema_name: str
    schema: dict[str, Any]
    max_tokens: int

    def body(self, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": list(self.messages),
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": self.schema_name, "schema": self.schema, "strict": True},
            },
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }

    @property
    def estimated_tokens(self) -> int:
        """Input estimated from characters, plus the whole output allowance: what the token bucket is charged first."""
        chars = sum(len(m.get("content", "")) for m in self.messages) + len(orjson.dumps(self.schema))
        return chars // CHARS_PER_TOKEN + self.max_tokens

    @property
    def estimated_input_tokens(self) -> int:
        return self.estimated_tokens - self.max_tokens


@dataclass(frozen=True)
class ChatReply:
    """The answer's text (JSON expected, not yet checked), the reporting model and the billed usage."""

    content: str
    model: str
    prompt_tokens: int | None  # None: the reply carried no usage
    completion_tokens: int | None
    latency_s: float
    finish_reason: str | None = None
    refusal: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class ChatSender(Protocol):
    """What the rest of the tier needs from a client (ChatClient in production)."""

    async def complete(self, request: ChatRequest) -> ChatReply: ...


class ChatClient:
    """POST {base_url}/chat/completions; one attempt per call (retries are the caller's)."""

    def __init__(self, *, base_url: str, model: str, api_key: SecretStr | None, timeout_s: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the key is never part of it
        return f"ChatClient(url={self.url!r}, model={self.model!r})"

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, request: ChatRequest) -> ChatReply:
        """One request. Raises ProviderError (HTTP error, timeout, connection) or AnswerError (unreadable reply)."""
        started = time.monotonic()
        try:
            async with self._http().post(self.url, data=orjson.dumps(request.body(self.model))) as response:
                text = await response.text()
                if response.status != 200:
                    raise ProviderError(
                        f"{response.status} from {self.url}: {self.scrubbed(text)[:_MAX_ERROR_BODY_CHARS]}",
                        status=response.status,
                        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
                    )
        except TimeoutError as exc:  # aiohttp's total timeout
            raise ProviderError(f"no reply from {self.url} within {self._timeout.total}s") from exc
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"request to {self.url} failed: {type(exc).__name__}: {self.scrubbed(str(exc))}"
            ) from exc
        return _reply(text, self.model, time.monotonic() - started)

    def scrubbed(self, text: str) -> str:
        """`text` without the API key or any Authorization value: provider error bodies sometimes echo the request
        (a proxy's debug page, "invalid key sk-..."), and the message is stored in review records and logs."""
        if self._api_key is not None and (key := self._api_key.get_secret_value()):
            text = text.replace(key, "[REDACTED]")
        return _AUTHORIZATION.sub(r"\1[REDACTED]", text)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Content-Type": "application/json"}
            if self._api_key is not None:
                headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self._session


def _reply(text: str, asked_model: str, latency_s: float) -> ChatReply:
    """The Chat Completions body as a ChatReply; a body of another shape is an AnswerError."""
    try:
        body = orjson.loads(text)
        choice = body["choices"][0]
        message = choice["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise AnswerError(f"not a Chat Completions reply: {text[:_MAX_ERROR_BODY_CHARS]!r}") from exc
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    content, refusal = message.get("content"), message.get("refusal")
    return ChatReply(
        content=content if isinstance(content, str) else "",
        model=str(body.get("model") or asked_model),
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        latency_s=latency_s,
        finish_reason=choice.get("finish_reason"),
        refusal=refusal if isinstance(refusal, str) and refusal else None,
        raw=body,
    )


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def api_key_from(settings: EscalationSettings) -> SecretStr | None:
    """The API key: MINNOW_ESCALATION__API_KEY, else the first line of MINNOW_ESCALATION__API_KEY_FILE, else none."""
    if settings.api_key is not None:
        return settings.api_key
    if settings.api_key_file is None:
        return None
    try:
        text = settings.api_key_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read MINNOW_ESCALATION__API_KEY_FILE {settings.api_key_file}: {exc}") from exc
    if not text:
        raise ConfigError(f"MINNOW_ESCALATION__API_KEY_FILE {settings.api_key_file} is empty")
    return SecretStr(text.splitlines()[0].strip())


def client_for(settings: EscalationSettings) -> ChatClient:
    return ChatClient(
        base_url=settings.base_url,
        model=settings.model,
        api_key=api_key_from(settings),
        timeout_s=settings.request_timeout_s,
    )
