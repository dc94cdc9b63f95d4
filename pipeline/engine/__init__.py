"""The mini model: build, tokenize, encode, batch. Knows nothing about Kafka."""

from __future__ import annotations

from pipeline.engine.artifacts import ModelFiles, ensure
from pipeline.engine.encoder import Encoder, TextEmbedding
from pipeline.settings import EngineSettings

__all__ = ["Encoder", "ModelFiles", "TextEmbedding", "load_encoder"]


def load_encoder(settings: EngineSettings) -> Encoder:
    """Load the encoder at the configured precision, building the artifacts first if needed."""
    return Encoder(ensure(settings.cache_dir, settings.precision), settings)
