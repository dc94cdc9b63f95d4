"""Shared fixtures: the real encoder, built once per test session into a temporary cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.engine import Encoder, load_encoder
from pipeline.settings import EngineSettings, Settings
from pipeline.stages.infer import MiniModel


@pytest.fixture(scope="session")
def model_cache() -> Path:
    # Reuse the developer's cache when present (MINNOW_TEST_CACHE); CI builds into its own folder.
    path = Path(os.environ.get("MINNOW_TEST_CACHE", Path.home() / ".cache" / "minnow"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def encoder(model_cache: Path) -> Encoder:
    """The real int8 encoder (built on first use)."""
    return load_encoder(EngineSettings(cache_dir=model_cache, precision="int8"))


@pytest.fixture(scope="session")
def encoder_fp32(model_cache: Path) -> Encoder:
    return load_encoder(EngineSettings(cache_dir=model_cache, precision="fp32"))


@pytest.fixture(scope="session")
def settings(model_cache: Path) -> Settings:
    return Settings(engine=EngineSettings(cache_dir=model_cache))


@pytest.fixture(scope="session")
def mini_model(settings: Settings) -> MiniModel:
    """The whole engine, loaded once: real encoder, label sets, moderation heads, bounds."""
    return MiniModel.load(settings)
