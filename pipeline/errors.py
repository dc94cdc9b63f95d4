"""The one error tree of Minnow; lower-level errors are translated into it at the boundary.

    MinnowError
    ├── ConfigError            settings, label files, thresholds that cannot work
    ├── ModelError             weights missing, graph build or load failed
    │   └── ModelBuildError
    ├── InputError             one event cannot be processed (bad JSON, schema, encoding, size)
    │   ├── DecodeError
    │   └── SchemaError
    ├── InferenceError         the encoder failed on a batch
    ├── DeliveryError          (streaming) an output was not acknowledged by the broker
    └── EscalationError        (escalation tier) the large model could not settle an item

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


class InferenceError(MinnowError):
    code = "inference_error"


class DeliveryError(MinnowError):
    code = "delivery_error"


class EscalationError(MinnowError):
    code = "escalation_error"
