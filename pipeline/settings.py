"""Frozen settings, read once at start-up from `MINNOW_*` environment variables (see docs/configuration.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

Precision = Literal["int8", "fp32"]


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "minnow"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EngineSettings(_Frozen):
    """The mini model and how batches are formed."""

    cache_dir: Path = Field(default_factory=_default_cache_dir, description="where built ONNX artifacts live")
    precision: Precision = Field(default="int8", description="int8 (quantized, default) or fp32")
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime threads per batch; 0 = one per core")
    max_windows_per_batch: int = Field(
        default=32, ge=1, le=1024, description="model windows (rows) per encoder run, whatever events they come from"
    )
    max_tokens_per_batch: int = Field(default=4096, ge=256, description="padded tokens (rows x longest) per batch")
    max_seq_tokens: int = Field(default=256, ge=16, le=512, description="model token window per chunk")
    max_chunks_per_text: int = Field(
        default=256, ge=1, description="chunks embedded per text; beyond this the result says `truncated`"
    )
    max_text_chars: int = Field(default=100_000, ge=1, description="longer texts are cut and marked `truncated`")
    inflight_batches: int = Field(default=2, ge=1, description="batches running in the executor at once")

    @model_validator(mode="before")
    @classmethod
    def _deprecated_names(cls, data: Any) -> Any:
        # MINNOW_ENGINE__MAX_BATCH_SIZE was this cap's name; "batch" now means events everywhere. Still read, when
        # the new name is not set.
        if isinstance(data, dict) and "max_batch_size" in data:
            data = dict(data)
            old = data.pop("max_batch_size")
            data.setdefault("max_windows_per_batch", old)
            log.warning("MINNOW_ENGINE__MAX_BATCH_SIZE is deprecated: use MINNOW_ENGINE__MAX_WINDOWS_PER_BATCH")
        return data

    @model_validator(mode="after")
    def _batch_fits_window(self) -> EngineSettings:
        if self.max_tokens_per_batch < self.max_seq_tokens:
            raise ValueError(
                f"max_tokens_per_batch ({self.max_tokens_per_batch}) must be at least max_seq_tokens "
                f"({self.max_seq_tokens}), or a full-length chunk could never be batched"
            )
        return self


class RoutingSettings(_Frozen):
    """Confidence thresholds that decide `route`: below them an item is escalated."""

    classify_min_confidence: float = Field(
        default=0.55,
        ge=0,
        le=1,
        description="below this classification confidence, escalate (families without a fitted threshold)",
    )
    thresholds_file: Path | None = Field(
        default=None,
        description="per-family classification thresholds from `minnow calibrate`; they win over "
        "classify_min_confidence for the families they list",
    )
    moderation_min_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="below this moderation confidence, escalate; 0.5 = exactly when a score is in the uncertain band",
    )
    summary_min_confidence: float = Field(
        default=0.0, ge=0, le=1, description="below this summary confidence, escalate (0 = never)"
    )
    anomaly_escalate_above: float = Field(default=0.8, ge=0, le=1, description="above this IoT anomaly score, escalate")
    escalate_flagged: bool = Field(default=False, description="send every flagged item to the large model too")


class LanguageSettings(_Frozen):
    """Language identification: the mini model reads English only; other languages are escalated (docs/language.md)."""

    enabled: bool = Field(
        default=True, description="identify languages (off: no `language` on results, ~100 MB less memory)"
    )

    supported: tuple[str, ...] = Field(
        default=("en",), min_length=1, description="ISO 639-1 codes the mini model reads (JSON list)"
    )
    min_confidence: float = Field(
        default=0.999,
        gt=0,
        le=1,
        description="escalate as language.unsupported from this probability of no supported language",
    )
    min_chars: int = Field(
        default=15, ge=1, description="texts with fewer letters are `und` and never escalated for language"
    )


class SummarySettings(_Frozen):
    max_words: int = Field(
        default=28, ge=5, description="words in a summary at most, speaker names included (references: ~20)"
    )
    max_sentences: int = Field(default=4, ge=1, description="sentences in a summary at most")
    max_chars: int = Field(default=600, ge=40, description="characters in a summary at most")
    min_sentences_to_summarize: int = Field(default=4, ge=2, description="shorter texts get no summary")
    max_overlap: float = Field(
        default=0.6, ge=0, le=1, description="skip a sentence whose content words are this share already in the summary"
    )


ProcessingGuarantee = Literal["at_least_once", "exactly_once"]


TaskName = Literal["classify", "moderate", "summarize", "language"]


class FamilyTasks(_Frozen):
    """What the mini model does for one event family (docs/configuration.md, "Tasks per stream")."""

    tasks: tuple[TaskName, ...] | None = Field(
        default=None,
        description="tasks to run (JSON list of classify, moderate, summarize, language); unset = all the family does",
    )
    moderation_categories: tuple[str, ...] | None = Field(
        default=None, min_length=1, description="moderation categories to score and flag (JSON list); unset = all"
    )


class FamiliesSettings(_Frozen):
    """Per family, which tasks run and which moderation categories count. A conversation follows `transcript`."""

    feed: FamilyTasks = Field(default_factory=FamilyTasks)
    transcript: FamilyTasks = Field(default_factory=FamilyTasks)
    iot: FamilyTasks = Field(default_factory=FamilyTasks)
    ticket: FamilyTasks = Field(default_factory=FamilyTasks)

    def of(self, kind: str) -> FamilyTasks:
        """The choice for an event kind; conversations are assembled from transcripts and share their choice."""
        chosen: FamilyTasks = getattr(self, "transcript" if kind == "conversation" else kind)
        return chosen


class KafkaSettings(_Frozen):
    """Where the stream workers read and write (only the streaming layer uses these)."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="comma-separated host:port list")
    topic_prefix: str = Field(default="minnow.", description="prefix of every Minnow topic name")
    group_id: str = Field(default="minnow-worker", description="consumer group of the stream workers")
    processing_guarantee: ProcessingGuarantee = Field(
        default="at_least_once", description="at_least_once, or exactly_once (Kafka transactions)"
    )
    max_event_bytes: int = Field(default=1_048_576, ge=1024, description="larger records go to the dead-letter topic")
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="consumer group session timeout: how soon a dead worker's partitions move"
    )
    heartbeat_interval_s: float = Field(default=3.0, gt=0, description="consumer heartbeat interval")


class WorkerSettings(_Frozen):
    """How a stream worker gathers micro-batches and reports on itself."""

    batch_max_events: int = Field(default=32, ge=1, description="events gathered into one engine batch at most")
    batch_max_wait_ms: int = Field(default=50, ge=1, description="how long a partial batch waits for more events")
    delivery_timeout_s: float = Field(
        default=120.0, gt=0, description="a batch whose outputs are not acknowledged by then stops the worker (exit 75)"
    )
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Prometheus /metrics, /healthz, /readyz; 0 = off"
    )
    conversation_idle_s: float = Field(
        default=300.0, gt=0, description="a conversation with no segment this long is closed"
    )
    conversation_keep_closed_s: float = Field(
        default=3600.0, gt=0, description="segments of a conversation closed this recently are ignored, not reopened"
    )
    iot_window_s: float = Field(default=60.0, gt=0, description="tumbling window of per-device IoT summaries")
    iot_window_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="a silent device's open window is emitted this long after its end, once nothing arrived as long",
    )
    iot_half_life: float = Field(
        default=50.0, gt=0, description="readings after which one's weight in a device's rolling mean has halved"
    )
    iot_min_samples: int = Field(
        default=30, ge=2, description="readings of a metric before its device's history counts (before: bounds only)"
    )
    iot_zscore_threshold: float = Field(
        default=4.0,
        gt=0,
        description="above this many of its device's standard deviations from the mean, a reading escalates",
    )


class ModelPrice(_Frozen):
    """What one model costs, in USD per million tokens."""

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)


BreakerMode = Literal["wait", "review"]
SoftCapAction = Literal["sink", "review"]


def _default_prices() -> dict[str, ModelPrice]:
    return {"gpt-4o-mini": ModelPrice(input_usd_per_mtok=0.15, output_usd_per_mtok=0.60)}


class EscalationSettings(_Frozen):
    """The large-model tier behind `minnow escalator` (docs/escalation.md)."""

    base_url: str = Field(default="https://api.openai.com/v1", description="OpenAI-compatible API root")
    model: str = Field(default="gpt-4o-mini", description="the large model asked; must have a price in PRICES")
    api_key: SecretStr | None = Field(default=None, description="bearer token for the API (never printed)")
    api_key_file: Path | None = Field(default=None, description="a file holding the API key, read at start-up")
    request_timeout_s: float = Field(default=60.0, gt=0, description="one request, connect to last byte")
    max_output_tokens: int = Field(default=1024, ge=16, description="max_tokens of every request")
    max_input_chars: int = Field(default=24_000, ge=200, description="longer item texts are cut before sending")
    max_concurrency: int = Field(default=8, ge=1, description="requests in flight at once")
    max_inflight: int = Field(default=64, ge=1, description="escalation records being settled at once")
    requests_per_minute: int = Field(default=500, ge=1, description="request rate limit (token bucket)")
    tokens_per_minute: int = Field(default=200_000, ge=100, description="token rate limit, estimated then corrected")
    max_attempts: int = Field(default=5, ge=1, description="tries per request on 429, 5xx and timeouts")
    backoff_base_s: float = Field(default=1.0, gt=0, description="first backoff ceiling; doubles per attempt")
    backoff_max_s: float = Field(default=60.0, gt=0, description="backoff ceiling at most (full jitter below it)")
    answer_retries: int = Field(default=1, ge=0, description="new requests after a malformed answer, then review")
    breaker_threshold: int = Field(default=5, ge=1, description="consecutive failures that open the circuit")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, description="open this long, then one probe request")
    breaker_mode: BreakerMode = Field(
        default="wait", description="while open: wait (stop consuming escalations) or review (send to review)"
    )
    cache_size: int = Field(
        default=10_000,
        ge=0,
        description="answers kept by content hash; past this the oldest go (in memory: least recently used); 0 = off",
    )
    cache_file: Literal["auto", "none"] | Path = Field(
        default="auto",
        description="SQLite file keeping cached answers across restarts; "
        "auto = MINNOW_ENGINE__CACHE_DIR/escalation-cache.sqlite3, none = in memory only",
    )
    cache_ttl_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="cached answers older than this are asked again (model updates)"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices, description="USD per 1M input/output tokens per model (JSON)"
    )
    daily_soft_cap_usd: float = Field(default=40.0, ge=0, description="past this, only PRIORITY_REASONS escalate")
    daily_hard_cap_usd: float = Field(default=50.0, ge=0, description="past this, every item goes to review")
    monthly_soft_cap_usd: float = Field(default=800.0, ge=0, description="monthly soft cap (UTC calendar month)")
    monthly_hard_cap_usd: float = Field(default=1000.0, ge=0, description="monthly hard cap (UTC calendar month)")
    priority_reasons: tuple[str, ...] = Field(
        default=("moderate.uncertain_category", "moderate.flagged"),
        description="reason codes still escalated past a soft cap (JSON list)",
    )
    soft_cap_action: SoftCapAction = Field(
        default="sink", description="past a soft cap, other items: sink (the mini result stands) or review"
    )
    redact: bool = Field(default=True, description="redact personal data before any text is sent")
    spend_file: Path | None = Field(
        default=None, description="JSON file keeping the day's and month's spend across restarts; unset = from zero"
    )
    metrics_port: int = Field(default=9465, ge=0, le=65535, description="the escalator's /metrics etc.; 0 = off")

    @field_validator("cache_file", mode="before")
    @classmethod
    def _cache_file_keyword(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("auto", "none"):
            return value.strip().lower()
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty: give a path, auto or none")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EscalationSettings:
        if self.model not in self.prices:
            raise ValueError(f"no price for model {self.model!r}: add it to MINNOW_ESCALATION__PRICES")
        for period in ("daily", "monthly"):
            soft, hard = getattr(self, f"{period}_soft_cap_usd"), getattr(self, f"{period}_hard_cap_usd")
            if soft > hard:
                raise ValueError(f"{period}_soft_cap_usd ({soft}) must not exceed {period}_hard_cap_usd ({hard})")
        return self


class Settings(BaseSettings):
    """Everything Minnow reads from the environment. Nested fields use `__`: MINNOW_ENGINE__PRECISION=fp32."""

    model_config = SettingsConfigDict(env_prefix="MINNOW_", env_nested_delimiter="__", frozen=True, extra="ignore")

    engine: EngineSettings = Field(default_factory=EngineSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    summary: SummarySettings = Field(default_factory=SummarySettings)
    language: LanguageSettings = Field(default_factory=LanguageSettings)
    families: FamiliesSettings = Field(default_factory=FamiliesSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    labels_file: Path | None = Field(default=None, description="YAML label sets; the bundled ones when unset")
    head_file: Path | None = Field(default=None, description="a trained classification head from `minnow train`")
    bounds_file: Path | None = Field(default=None, description="YAML per-metric IoT bounds; bundled when unset")
    moderation_file: Path | None = Field(
        default=None, description="YAML moderation thresholds and uncertain band; bundled when unset"
    )


def load_settings() -> Settings:
    """Read settings once; a bad value raises ConfigError naming the variable."""
    from pydantic import ValidationError

    from pipeline.errors import ConfigError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MINNOW_{'__'.join(str(p).upper() for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


def environment_variables() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting — docs/configuration.md is checked against this."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            default = field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name.upper()}", "" if default is None else str(default), field.description or ""))

    walk(Settings, "MINNOW_")
    return rows
