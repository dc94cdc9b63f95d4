"""Frozen settings, read once at start-up from `MINNOW_*` environment variables (see docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    max_batch_size: int = Field(default=32, ge=1, le=1024, description="model windows per encoder batch")
    max_tokens_per_batch: int = Field(default=4096, ge=256, description="padded tokens (rows x longest) per batch")
    max_seq_tokens: int = Field(default=256, ge=16, le=512, description="model token window per chunk")
    max_chunks_per_text: int = Field(
        default=256, ge=1, description="chunks embedded per text; beyond this the result says `truncated`"
    )
    max_text_chars: int = Field(default=100_000, ge=1, description="longer texts are cut and marked `truncated`")
    inflight_batches: int = Field(default=2, ge=1, description="batches running in the executor at once")

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
        default=0.55, ge=0, le=1, description="below this classification confidence, escalate"
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


class SummarySettings(_Frozen):
    max_sentences: int = Field(default=3, ge=1, description="sentences in a summary at most")
    max_chars: int = Field(default=600, ge=40, description="characters in a summary at most")
    min_sentences_to_summarize: int = Field(default=4, ge=2, description="shorter texts get no summary")
    redundancy: float = Field(default=0.7, ge=0, le=1, description="MMR weight on relevance vs novelty")


ProcessingGuarantee = Literal["at_least_once", "exactly_once"]


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
    iot_window_s: float = Field(default=60.0, gt=0, description="tumbling window of per-device IoT summaries")


class Settings(BaseSettings):
    """Everything Minnow reads from the environment. Nested fields use `__`: MINNOW_ENGINE__PRECISION=fp32."""

    model_config = SettingsConfigDict(env_prefix="MINNOW_", env_nested_delimiter="__", frozen=True, extra="ignore")

    engine: EngineSettings = Field(default_factory=EngineSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    summary: SummarySettings = Field(default_factory=SummarySettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
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
