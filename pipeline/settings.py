"""Frozen settings, read once at start-up from `MINNOW_*` environment variables (see docs/configuration.md)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.logs import register_secrets

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
        default=256, ge=1, description="chunks embedded per text at most; beyond this the result says `truncated`"
    )
    max_tokens_per_event: int = Field(
        default=1536,
        ge=256,
        description="model tokens embedded per event at most (the cost budget of one event); a longer text is embedded "
        "from a spread sample of its chunks and its result says `truncated` (docs/architecture.md)",
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
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


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
    enable_idempotence: bool = Field(
        default=True,
        description="every producer idempotent (acks=all, retries never duplicate a record); false only for a "
        "cluster whose ACLs deny IdempotentWrite (brokers before Kafka 2.8)",
    )
    max_event_bytes: int = Field(default=1_048_576, ge=1024, description="larger records go to the dead-letter topic")
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="consumer group session timeout: how soon a dead worker's partitions move"
    )
    heartbeat_interval_s: float = Field(default=3.0, gt=0, description="consumer heartbeat interval")
    connect_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="one connection attempt (TCP, TLS, SASL, metadata) must succeed within this",
    )
    stable_offsets_wait_s: float = Field(
        default=90.0,
        ge=0,
        description="how long a consumer waits for committed offsets that a transaction still holds (KIP-447) before "
        "it starts from the last stable ones with a warning: the broker completes or aborts a real transaction "
        "within the producers' 60 s transaction timeout",
    )
    startup_wait_s: float = Field(
        default=60.0,
        ge=0,
        description="how long a starting process waits (with backoff) for a broker that is not there yet before it "
        "exits 75; wrong credentials or certificates end it at once",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (docs/connect.md)"
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (SASL_* protocols only)"
    )
    sasl_username: str | None = Field(default=None, description="SASL user (PLAIN, SCRAM-*)")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (never printed)")
    sasl_password_file: Path | None = Field(
        default=None, description="a file holding the SASL password (e.g. a mounted Kubernetes secret), read at connect"
    )
    sasl_oauth_token_file: Path | None = Field(
        default=None, description="OAUTHBEARER: a file holding the bearer token, read again whenever it changes"
    )
    ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA(s) that signed the brokers' certificates; unset = system CAs"
    )
    ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (chain), for mTLS")
    ssl_keyfile: Path | None = Field(default=None, description="PEM private key of the client certificate")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="password of an encrypted SSL_KEYFILE (never printed)"
    )
    ssl_check_hostname: bool = Field(
        default=True, description="check that the broker's certificate names the host connected to"
    )

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSettings:
        for problem in _security_problems(self):
            raise ValueError(problem)
        if self.processing_guarantee == "exactly_once" and not self.enable_idempotence:
            raise ValueError(
                f"{_K}PROCESSING_GUARANTEE=exactly_once needs idempotent producers: unset {_K}ENABLE_IDEMPOTENCE"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def environment(self) -> dict[str, str]:
        """The MINNOW_KAFKA__* variables that give a child process (a worker the demo starts) this cluster and its
        security; secrets included, as the parent received them."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"MINNOW_KAFKA__{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def password(self) -> str | None:
        """The SASL password: from SASL_PASSWORD_FILE when set (read now: a rotated secret counts), else the value."""
        if self.sasl_password_file is not None:
            from pipeline.errors import ConfigError

            try:
                secret = self.sasl_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read MINNOW_KAFKA__SASL_PASSWORD_FILE {self.sasl_password_file}: {exc.strerror}"
                ) from exc
            register_secrets([secret])  # masked in every log line, like the SecretStr settings
            return secret
        return self.sasl_password.get_secret_value() if self.sasl_password is not None else None


_K = "MINNOW_KAFKA__"


def _security_problems(kafka: KafkaSettings) -> list[str]:
    """What is wrong with the security settings, each saying what to set (the first one is raised)."""
    protocol = kafka.security_protocol
    problems: list[str] = []
    sasl_set = [
        name
        for name in ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file", "sasl_oauth_token_file")
        if getattr(kafka, name) is not None
    ]
    if not kafka.uses_sasl and sasl_set:
        problems.append(
            f"{_K}{sasl_set[0].upper()} is set but {_K}SECURITY_PROTOCOL is {protocol}: "
            "use SASL_SSL (or SASL_PLAINTEXT) to authenticate with SASL, or unset it"
        )
    ssl_names = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
    ssl_set = [name for name in ssl_names if getattr(kafka, name) is not None]
    if not kafka.uses_tls and ssl_set:
        problems.append(
            f"{_K}{ssl_set[0].upper()} is set but {_K}SECURITY_PROTOCOL is {protocol}: use SSL or SASL_SSL, or unset it"
        )
    if kafka.uses_sasl:
        problems.extend(_sasl_problems(kafka))
    if kafka.ssl_certfile is not None and kafka.ssl_keyfile is None:
        problems.append(
            f"{_K}SSL_CERTFILE needs {_K}SSL_KEYFILE, the client certificate's private key "
            "(the same file if it holds both)"
        )
    if kafka.ssl_keyfile is not None and kafka.ssl_certfile is None:
        problems.append(f"{_K}SSL_KEYFILE needs {_K}SSL_CERTFILE, the client certificate it belongs to")
    if kafka.ssl_key_password is not None and kafka.ssl_keyfile is None:
        problems.append(f"{_K}SSL_KEY_PASSWORD is set without {_K}SSL_KEYFILE")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_password_file", "sasl_oauth_token_file"):
        path: Path | None = getattr(kafka, name)
        if path is not None and not path.is_file():
            problems.append(f"{_K}{name.upper()}: {path} does not exist or is not a file")
    return problems


def _sasl_problems(kafka: KafkaSettings) -> list[str]:
    protocol, mechanism = kafka.security_protocol, kafka.sasl_mechanism
    if mechanism is None:
        return [
            f"{_K}SECURITY_PROTOCOL={protocol} needs {_K}SASL_MECHANISM "
            "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; ask the cluster's operators which)"
        ]
    if mechanism == "OAUTHBEARER":
        if kafka.sasl_oauth_token_file is None:
            return [f"{_K}SASL_MECHANISM=OAUTHBEARER needs {_K}SASL_OAUTH_TOKEN_FILE, a file holding the token"]
        return []
    problems = []
    if not kafka.sasl_username:
        problems.append(f"{_K}SECURITY_PROTOCOL={protocol} with {mechanism} needs {_K}SASL_USERNAME")
    if kafka.sasl_password is None and kafka.sasl_password_file is None:
        problems.append(
            f"{_K}SECURITY_PROTOCOL={protocol} with {mechanism} needs {_K}SASL_PASSWORD or {_K}SASL_PASSWORD_FILE"
        )
    if kafka.sasl_password is not None and kafka.sasl_password_file is not None:
        problems.append(f"set one of {_K}SASL_PASSWORD and {_K}SASL_PASSWORD_FILE, not both")
    if kafka.sasl_oauth_token_file is not None:
        problems.append(f"{_K}SASL_OAUTH_TOKEN_FILE is for SASL_MECHANISM=OAUTHBEARER, not {mechanism}")
    return problems


InputFamily = Literal["feed", "transcript", "iot", "ticket"]  # the families with an input topic


RegistryFormat = Literal["plain", "json-schema", "avro"]


class RegistrySettings(_Frozen):
    """A Confluent-compatible schema registry (docs/registry.md): only the streaming layer talks to it."""

    url: str | None = Field(
        default=None,
        description="base URL of the registry's Confluent-compatible API (Apicurio: .../apis/ccompat/v7); unset = "
        "no registry: framed records are dead letters and sinks are plain JSON",
    )
    username: str | None = Field(default=None, description="HTTP basic-auth user for the registry")
    password: SecretStr | None = Field(default=None, description="HTTP basic-auth password for the registry")
    ca_file: Path | None = Field(default=None, description="PEM CA bundle that signs an https registry's certificate")
    output_format: RegistryFormat = Field(
        default="plain",
        description="sink records as plain JSON, or framed for the registry as json-schema or avro (registered "
        "under `<topic>-value` before the first batch is written)",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="one registry request's time limit")
    retry_s: float = Field(
        default=60.0,
        ge=0,
        description="how long a failing registry (unreachable, 5xx) is retried with back-off before the batch "
        "fails and the worker exits to be restarted; its records are never dead-lettered for it",
    )

    @model_validator(mode="after")
    def _coherent(self) -> RegistrySettings:
        if self.output_format != "plain" and self.url is None:
            raise ValueError(f"output_format {self.output_format} needs a registry: set MINNOW_REGISTRY__URL")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both MINNOW_REGISTRY__USERNAME and MINNOW_REGISTRY__PASSWORD, or neither")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"ca_file {self.ca_file} is not a file")
        return self


class WorkerSettings(_Frozen):
    """How a stream worker gathers micro-batches and reports on itself."""

    families: Annotated[tuple[InputFamily, ...], NoDecode] = Field(
        default=("feed", "transcript", "iot", "ticket"),
        min_length=1,
        description="the families this worker consumes (`minnow worker --families feed,iot`); comma-separated",
    )
    inputs_file: Path | None = Field(
        default=None,
        description="YAML list of input topics of your own (topic, field mapping or kind; docs/mapping.md); "
        "unset: each family's input topic",
    )
    batch_max_events: int = Field(default=32, ge=1, description="events gathered into one engine batch at most")

    @field_validator("families", mode="before")
    @classmethod
    def _comma_separated(cls, raw: Any) -> Any:
        if isinstance(raw, str):  # `feed,iot` as on the command line; a JSON list is read as one too
            raw = raw.strip().strip("[]").replace('"', "")
            return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
        return raw

    batch_max_wait_ms: int = Field(default=50, ge=1, description="how long a partial batch waits for more events")
    commit_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="at-least-once, offsets are committed after every delivered batch and at least this often",
    )
    delivery_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="a batch whose outputs are not acknowledged by then has failed to deliver: it is retried, then "
        "its input stalls (at-least-once; exactly-once exits 75 at once)",
    )
    delivery_retries: int = Field(
        default=2,
        ge=0,
        description="at-least-once, a batch that failed to deliver is sent again this often (1 s, 2 s, 4 s apart) "
        "before its input stalls; the worker exits 75 only when every input is stalled",
    )
    stalled_retry_s: float = Field(
        default=30.0, gt=0, description="a stalled input sends its batch again this often while the others go on"
    )
    family_processes: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: under exactly-once a worker given several families runs each in its own process and "
        "consumer group (<group>-<family>), so one family's failure cannot stop the others; off: one process",
    )
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Prometheus /metrics, /healthz, /readyz; 0 = off"
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        min_length=1,
        description="address the /metrics, /healthz, /readyz server binds (127.0.0.1: this host only)",
    )
    conversation_idle_s: float = Field(
        default=300.0, gt=0, description="a conversation with no segment this long is closed"
    )
    conversation_keep_closed_s: float = Field(
        default=3600.0, gt=0, description="segments of a conversation closed this recently are ignored, not reopened"
    )
    conversation_max_bytes: int = Field(
        default=262_144,
        ge=1024,
        description="a conversation whose segments' text reaches this many bytes is closed and emitted, so its state "
        "always fits its changelog topic",
    )
    iot_window_s: float = Field(default=60.0, gt=0, description="tumbling window of per-device IoT summaries")
    iot_window_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="a silent device's open window is emitted this long after its end, once nothing arrived as long",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_names(cls, data: Any) -> Any:
        # The rolling mean these tuned was replaced by the detectors of MINNOW_IOT__* (docs/iot.md); a deployment that
        # still sets them starts, with a warning, instead of failing on an unknown variable.
        if isinstance(data, dict) and any(name in data for name in _MOVED_WORKER_NAMES):
            data = dict(data)
            for name, replacement in _MOVED_WORKER_NAMES.items():
                if name in data:
                    data.pop(name)
                    log.warning("MINNOW_WORKER__%s is no longer read: see %s", name.upper(), replacement)
        return data


_MOVED_WORKER_NAMES = {
    "iot_half_life": "MINNOW_IOT__RECENT_READINGS",
    "iot_min_samples": "MINNOW_IOT__WARMUP_READINGS",
    "iot_zscore_threshold": "MINNOW_IOT__THRESHOLD",
}

Season = Literal["none", "day", "week"]
Scale = Literal["none", "sqrt", "log"]


class DetectorSettings(_Frozen):
    """How one metric's own history scores its readings (pipeline/stages/history.py, docs/iot.md)."""

    warmup_readings: int = Field(
        default=288, ge=2, description="readings of a metric before its history counts (before: anomaly.warming_up)"
    )
    recent_readings: int = Field(
        default=96, ge=3, le=1024, description="readings in the robust recent level (median and MAD)"
    )
    threshold: float = Field(
        default=5.0, gt=0, description="robust z beyond which a reading is a spike (escalates above it)"
    )
    scale: Scale = Field(
        default="none",
        description="the scale readings are judged on: none, sqrt or log (log1p), both signed; sqrt or log suit "
        "counts, whose noise grows with their level",
    )
    season: Season = Field(
        default="day", description="seasonal profile: none, day (hour of day) or week (hour of week), in UTC"
    )
    season_readings: int = Field(default=24, ge=1, le=256, description="readings kept per seasonal bin")
    season_min_readings: int = Field(
        default=8, ge=1, description="readings a seasonal bin needs before it is used as a baseline"
    )
    season_spread_floor: float = Field(
        default=0.5, ge=0, description="a bin's spread is at least this fraction of the recent spread"
    )
    record_days: int = Field(
        default=14,
        ge=0,
        le=62,
        description="a spike must also beat record_ratio x the largest z of this many past days; 0 = no record gate",
    )
    record_ratio: float = Field(default=1.2, gt=0, description="how far a spike must beat the recent record")
    warmup_days: int = Field(
        default=3, ge=0, description="with the record gate on, days of history before a reading is judged"
    )
    cusum_slack: float = Field(default=1.0, ge=0, description="CUSUM slack per reading, in robust standard deviations")
    cusum_limit: float = Field(
        default=0.0, ge=0, description="CUSUM sum past which a level shift escalates; 0 = level shifts off"
    )
    burst_readings: int = Field(
        default=0,
        ge=0,
        le=16,
        description="readings in a row, on one side of the baseline, past burst_threshold that make a burst; "
        "0 = burst detector off (else at least 2)",
    )
    burst_threshold: float = Field(
        default=3.0, gt=0, description="robust z every reading of a burst must pass (and its record gate's floor)"
    )
    departure_threshold: float = Field(
        default=12.0,
        ge=0,
        description="robust z from its hour's usual past which a reading is a departure from the daily pattern even "
        "when near its recent level (own record gate); 0 = departure detector off",
    )
    departure_ratio: float = Field(
        default=1.5, gt=0, description="how far a departure must beat the largest departure of the last record_days"
    )
    cluster_threshold: float = Field(
        default=0.0,
        ge=0,
        description="robust z past which a reading counts towards a cluster; 0 = cluster detector off",
    )
    cluster_readings: int = Field(
        default=288, ge=3, le=1024, description="readings in the cluster detector's own robust baseline"
    )
    cluster_window_s: float = Field(
        default=21_600.0, gt=0, description="seconds (event time) a cluster's readings are counted over"
    )
    cluster_ratio: float = Field(
        default=1.5, gt=0, description="how far a cluster's count must beat the largest count of the last record_days"
    )
    cooldown_s: float = Field(
        default=86_400.0,
        ge=0,
        description="after a metric escalates, its device's further anomalies within this many seconds (event time) "
        "are marked repeat and not escalated; 0 = every anomalous reading escalates",
    )

    @model_validator(mode="after")
    def _bins_can_fill(self) -> DetectorSettings:
        if self.season_min_readings > self.season_readings:
            raise ValueError(
                f"season_min_readings ({self.season_min_readings}) must not exceed season_readings "
                f"({self.season_readings}), or no bin is ever used"
            )
        if self.burst_readings == 1:
            raise ValueError("burst_readings must be 0 (off) or at least 2: one reading is the spike detector's")
        return self


class MetricDetectorSettings(_Frozen):
    """One metric's overrides of the detector defaults; unset fields take the defaults."""

    warmup_readings: int | None = Field(default=None, ge=2)
    recent_readings: int | None = Field(default=None, ge=3, le=1024)
    threshold: float | None = Field(default=None, gt=0)
    scale: Scale | None = None
    season: Season | None = None
    season_readings: int | None = Field(default=None, ge=1, le=256)
    season_min_readings: int | None = Field(default=None, ge=1)
    season_spread_floor: float | None = Field(default=None, ge=0)
    record_days: int | None = Field(default=None, ge=0, le=62)
    record_ratio: float | None = Field(default=None, gt=0)
    warmup_days: int | None = Field(default=None, ge=0)
    cusum_slack: float | None = Field(default=None, ge=0)
    cusum_limit: float | None = Field(default=None, ge=0)
    burst_readings: int | None = Field(default=None, ge=0, le=16)
    burst_threshold: float | None = Field(default=None, gt=0)
    departure_threshold: float | None = Field(default=None, ge=0)
    departure_ratio: float | None = Field(default=None, gt=0)
    cluster_threshold: float | None = Field(default=None, ge=0)
    cluster_readings: int | None = Field(default=None, ge=3, le=1024)
    cluster_window_s: float | None = Field(default=None, gt=0)
    cluster_ratio: float | None = Field(default=None, gt=0)
    cooldown_s: float | None = Field(default=None, ge=0)


class IoTSettings(DetectorSettings):
    """The detectors' defaults (MINNOW_IOT__<FIELD>) and per-metric overrides (MINNOW_IOT__METRICS, JSON)."""

    metrics: dict[str, MetricDetectorSettings] = Field(
        default_factory=dict,
        description='per-metric overrides, JSON: {"temperature_c": {"season": "week", "threshold": 5}}',
    )

    @model_validator(mode="after")
    def _overrides_valid(self) -> IoTSettings:
        for name in self.metrics:
            self.detector(name)  # an override that breaks a rule of DetectorSettings fails at start-up
        return self

    def detector(self, metric: str) -> DetectorSettings:
        """The settings of one metric: its overrides over the defaults."""
        base = {name: getattr(self, name) for name in DetectorSettings.model_fields}
        override = self.metrics.get(metric)
        if override is not None:
            base |= override.model_dump(exclude_none=True)
        return DetectorSettings(**base)


class ModelPrice(_Frozen):
    """What one model costs, in USD per million tokens."""

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)


BreakerMode = Literal["wait", "review"]
SoftCapAction = Literal["sink", "review"]
EscalationMode = Literal["large-model", "review-only", "auto"]


def _default_prices() -> dict[str, ModelPrice]:
    return {"gpt-4o-mini": ModelPrice(input_usd_per_mtok=0.15, output_usd_per_mtok=0.60)}


class EscalationSettings(_Frozen):
    """The large-model tier behind `minnow escalator` (docs/escalation.md)."""

    mode: EscalationMode = Field(
        default="large-model",
        description="large-model (ask it), review-only (every escalated item goes to the review topic, nothing is "
        "asked), or auto (review-only when neither API_KEY nor API_KEY_FILE is set)",
    )
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
    injection_check: bool = Field(
        default=True,
        description="an item whose text holds injection markers and whose answer departs from the mini model goes "
        "to review (answer.suspicious), not to the sink and the labels topic",
    )
    spend_file: Path | None = Field(
        default=None, description="JSON file keeping the day's and month's spend across restarts; unset = from zero"
    )
    metrics_port: int = Field(default=9465, ge=0, le=65535, description="the escalator's /metrics etc.; 0 = off")
    metrics_host: str = Field(default="0.0.0.0", min_length=1, description="address the escalator's /metrics etc. bind")

    @field_validator("api_key", "api_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `MINNOW_ESCALATION__API_KEY=` (a compose file passing an unset .env entry on) means no key, not an empty one.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def review_only(self) -> bool:
        """True when no large model is asked: mode review-only, or auto without a key (docs/escalation.md)."""
        if self.mode == "auto":
            return self.api_key is None and self.api_key_file is None
        return self.mode == "review-only"

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


class TopicsSettings(_Frozen):
    """Topic names, for a cluster whose topics are not named `MINNOW_KAFKA__TOPIC_PREFIX` + the logical name.

    Each variable names one topic outright (no prefix is added), e.g. `MINNOW_TOPICS__FEEDS_ENRICHED=posts.scored`;
    unset, the topic is the prefix plus its logical name (`minnow.feeds.enriched`). docs/topics.md.
    """

    feeds_in: str | None = Field(default=None, description="the feed input topic (logical feeds.in)")
    feeds_enriched: str | None = Field(default=None, description="the feed sink (feeds.enriched)")
    transcripts_in: str | None = Field(default=None, description="the transcript input topic (transcripts.in)")
    transcripts_enriched: str | None = Field(default=None, description="the transcript sink (transcripts.enriched)")
    iot_in: str | None = Field(default=None, description="the IoT input topic (iot.in)")
    iot_enriched: str | None = Field(default=None, description="the IoT sink (iot.enriched)")
    iot_windows: str | None = Field(default=None, description="per-device window summaries (iot.windows)")
    tickets_in: str | None = Field(default=None, description="the ticket input topic (tickets.in)")
    tickets_enriched: str | None = Field(default=None, description="the ticket sink (tickets.enriched)")
    escalations: str | None = Field(default=None, description="items for the large model (escalations)")
    review: str | None = Field(default=None, description="items for people (review)")
    deadletter: str | None = Field(default=None, description="records that could not be processed (deadletter)")
    labels: str | None = Field(default=None, description="verdicts of the large model and people (labels)")
    conversations_changelog: str | None = Field(
        default=None, description="the worker's conversation state (conversations.changelog)"
    )
    iot_devices_changelog: str | None = Field(
        default=None, description="the worker's per-device state (iot.devices.changelog)"
    )
    replication_factor: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="replicas of the topics `minnow topics apply` creates (--replication-factor); unset: the "
        "cluster's default.replication.factor",
    )

    @field_validator("*", mode="after")
    @classmethod
    def _kafka_name(cls, value: object) -> object:
        if isinstance(value, str) and not _TOPIC_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kafka topic name: 1-249 characters of A-Z a-z 0-9 . _ -")
        return value


_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LogSettings(BaseSettings):
    """How a process logs: read on its own first (`minnow` sets up logging before anything else can log)."""

    model_config = SettingsConfigDict(env_prefix="MINNOW_", env_nested_delimiter="__", frozen=True, extra="ignore")

    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json (one JSON object per line) or text; unset: text when stderr is a terminal, else json",
    )
    log_level: LogLevel | None = Field(
        default=None,
        description="DEBUG, INFO, WARNING, ERROR or CRITICAL; unset: INFO for worker and escalator, else WARNING "
        "(-v: DEBUG)",
    )

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() or None if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:  # `info` and `INFO` alike, as Python's logging accepts
        return value.strip().upper() or None if isinstance(value, str) else value


class Settings(LogSettings):
    """Everything Minnow reads from the environment. Nested fields use `__`: MINNOW_ENGINE__PRECISION=fp32."""

    model_config = SettingsConfigDict(env_prefix="MINNOW_", env_nested_delimiter="__", frozen=True, extra="ignore")

    engine: EngineSettings = Field(default_factory=EngineSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    summary: SummarySettings = Field(default_factory=SummarySettings)
    language: LanguageSettings = Field(default_factory=LanguageSettings)
    families: FamiliesSettings = Field(default_factory=FamiliesSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicsSettings = Field(default_factory=TopicsSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    iot: IoTSettings = Field(default_factory=IoTSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    labels_file: Path | None = Field(default=None, description="YAML label sets; the bundled ones when unset")
    head_file: Path | None = Field(default=None, description="a trained classification head from `minnow train`")
    bounds_file: Path | None = Field(default=None, description="YAML per-metric IoT bounds; bundled when unset")
    moderation_file: Path | None = Field(
        default=None, description="YAML moderation thresholds and uncertain band; bundled when unset"
    )

    def topic(self, logical: str) -> str:
        """A topic's real name: `MINNOW_TOPICS__<NAME>` when set, else the prefix plus the logical name."""
        explicit: str | None = getattr(self.topics, logical.replace(".", "_"))
        return explicit or f"{self.kafka.topic_prefix}{logical}"


def load_settings() -> Settings:
    """Read settings once; a bad value raises ConfigError naming the variable."""
    from pydantic import ValidationError

    from pipeline.errors import ConfigError

    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {'; '.join(_problem(err) for err in exc.errors())}") from exc
    register_secrets(_secret_values(settings))  # masked in every log line from now on (pipeline/logs.py)
    return settings


def load_log_settings() -> LogSettings:
    """The two logging settings alone, so logging is set up before the rest is read (and may warn)."""
    from pydantic import ValidationError

    from pipeline.errors import ConfigError

    try:
        return LogSettings()
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {'; '.join(_problem(err) for err in exc.errors())}") from exc


def _secret_values(model: BaseModel) -> list[str]:
    """Every SecretStr value in the settings, nested models included."""
    values: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            values.extend(_secret_values(value))
    return values


def _problem(err: Any) -> str:
    """One validation error as a line naming the variable; a model validator's message names its own."""
    where = f"MINNOW_{'__'.join(str(p).upper() for p in err['loc'])}"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        message = str(err["ctx"]["error"])
        return message if message.startswith("MINNOW_") or message.startswith("set one") else f"{where}: {message}"
    return f"{where}: {err['msg']}"


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
