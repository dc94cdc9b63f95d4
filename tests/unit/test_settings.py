"""Settings are validated with clear messages, and docs/configuration.md lists every variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import environment_variables, load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_variable_is_documented() -> None:
    text = DOCS.read_text()
    missing = [name for name, _, _ in environment_variables() if f"`{name}`" not in text]
    assert missing == []


def test_every_variable_has_a_description() -> None:
    assert [name for name, _, desc in environment_variables() if not desc] == []


def test_nested_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINNOW_ENGINE__PRECISION", "fp32")
    monkeypatch.setenv("MINNOW_ROUTING__CLASSIFY_MIN_CONFIDENCE", "0.8")
    s = load_settings()
    assert s.engine.precision == "fp32" and s.routing.classify_min_confidence == 0.8


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINNOW_ENGINE__MAX_WINDOWS_PER_BATCH", "0")
    with pytest.raises(ConfigError, match="MINNOW_ENGINE__MAX_WINDOWS_PER_BATCH"):
        load_settings()


def test_the_old_name_of_the_windows_cap_is_still_read_and_said_to_be_deprecated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MINNOW_ENGINE__MAX_BATCH_SIZE", "12")
    assert load_settings().engine.max_windows_per_batch == 12
    assert "MINNOW_ENGINE__MAX_BATCH_SIZE is deprecated" in caplog.text
    monkeypatch.setenv("MINNOW_ENGINE__MAX_WINDOWS_PER_BATCH", "24")
    assert load_settings().engine.max_windows_per_batch == 24  # the new name wins when both are set


def test_token_budget_must_fit_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINNOW_ENGINE__MAX_TOKENS_PER_BATCH", "300")
    monkeypatch.setenv("MINNOW_ENGINE__MAX_SEQ_TOKENS", "400")
    with pytest.raises(ConfigError, match="max_tokens_per_batch"):
        load_settings()


def test_the_endpoints_bind_address_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics, /healthz, /readyz: all interfaces by default (containers), the host's loopback when asked."""
    assert load_settings().worker.metrics_host == "0.0.0.0"
    monkeypatch.setenv("MINNOW_WORKER__METRICS_HOST", "127.0.0.1")
    monkeypatch.setenv("MINNOW_ESCALATION__METRICS_HOST", "127.0.0.1")
    settings = load_settings()
    assert (settings.worker.metrics_host, settings.escalation.metrics_host) == ("127.0.0.1", "127.0.0.1")
