"""The one error tree of Minnow; lower-level errors are translated into it at the boundary.

    MinnowError
    ├── ConfigError            settings, label files, thresholds that cannot work
    ├── ModelError             weights missing, graph build or load failed
    │   └── ModelBuildError
    ├── InputError             one event cannot be processed (bad JSON, schema, encoding, size)
    │   ├── DecodeError
    │   ├── SchemaError
    │   │   └── MappingError   a field mapping found no value for a required field
    │   ├── RegistryPayloadError  a registry-framed record: bad frame, or bytes that do not match its schema
    │   └── UnknownSchemaError the registry answered that the record's schema id does not exist
    ├── InferenceError         the encoder failed on a batch
    ├── DeliveryError          (streaming) an output was not acknowledged by the broker
    ├── RegistryError          (streaming) the schema registry is unreachable or refused us: not the record's
    │                          fault, so the batch fails (and is retried) instead of dead-lettering its records
    ├── StreamToolError        (operations) produce, tail, review or a labels read could not start:
    │                          the broker is unreachable or the topic does not exist
    ├── DevKafkaError          (operations) the local development broker could not be resolved, started or stopped
    └── EscalationError        (escalation tier) the large model could not settle an item
        ├── ProviderError      the endpoint failed: HTTP status, timeout, connection (status, retry_after_s)
        ├── AnswerError        the answer is not JSON, or not valid against the task's schema
        └── CircuitOpenError   the circuit breaker is open (mode `review`): no request is sent

Per-event problems are reported as data (an error record), not raised past the batch; these classes
name them (`error.code`) so every error record says which kind it is.
"""

from __future__ import annotations


class MinnowError(Exception):
    """Root of every error Minnow raises on purpose."""

    code = "minnow_error"


class ConfigError(MinnowError):
    code = "config_error"


class ModelError(MinnowError):
    code = "model_error"


class ModelBuildError(ModelError):
    code = "model_build_error"


class InputError(MinnowError):
    code = "input_error"


class DecodeError(InputError):
    code = "decode_error"


class SchemaError(InputError):
    code = "schema_error"


class MappingError(SchemaError):
    code = "mapping_error"


class RegistryPayloadError(InputError):
    """A record framed for a schema registry whose frame is broken or whose payload does not match its schema."""

    code = "registry_payload_error"


class UnknownSchemaError(InputError):
    """The registry answered that no schema has the record's id: the producer used another registry, or a schema
    was deleted."""

    code = "unknown_schema_id"


class RegistryError(MinnowError):
    """The schema registry could not be reached, failed, or refused our credentials: not the record's fault."""

    code = "registry_error"


class InferenceError(MinnowError):
    code = "inference_error"


class DeliveryError(MinnowError):
    code = "delivery_error"


class StreamToolError(MinnowError):
    """A produce, tail, review or labels read could not start: the broker is unreachable or the topic is missing."""

    code = "stream_tool_error"


class BrokerUnavailableError(StreamToolError):
    """No bootstrap server answered within MINNOW_KAFKA__STARTUP_WAIT_S: the cluster may come back, so the process
    exits 75 (EX_TEMPFAIL) for its supervisor to restart it, unlike a setting that can never work."""

    code = "broker_unavailable"
    exit_code = 75


class DevKafkaError(MinnowError):
    """The local development broker could not be resolved, started or stopped."""

    code = "dev_kafka_error"


class EscalationError(MinnowError):
    code = "escalation_error"


class ProviderError(EscalationError):
    """The large-model endpoint failed; `status` is None for timeouts and connection errors."""

    code = "provider_error"

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """429, 5xx, timeouts and connection errors may pass; other 4xx would fail the same way again."""
        return self.status is None or self.status == 429 or self.status >= 500

    @property
    def provider_fault(self) -> bool:
        """Counts against the circuit breaker: the provider (or our access to it) is failing, not this request."""
        return self.status is None or self.status >= 500 or self.status in (401, 403, 404)


class AnswerError(EscalationError):
    """The reply came, but its answer is malformed or does not fit the task; `answer` is what could be read."""

    code = "answer_error"

    def __init__(self, message: str, *, answer: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.answer = answer


class CircuitOpenError(EscalationError):
    code = "circuit_open"
