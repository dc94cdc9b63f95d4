"""`minnow demo` runs end to end against the real broker and every record it sends is accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ops import demo
from pipeline.settings import EngineSettings, KafkaSettings, Settings

pytestmark = pytest.mark.integration


def test_demo_accounts_for_every_record(
    kafka_bootstrap: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MINNOW_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)  # use the test broker, start none
    monkeypatch.setenv("MINNOW_ENGINE__CACHE_DIR", str(model_cache))  # the worker subprocess reads settings
    settings = Settings(
        engine=EngineSettings(cache_dir=model_cache), kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap)
    )
    assert demo.run(settings) == 0
    out = capsys.readouterr().out
    sent = sum(demo.count_records(demo.sample_path(name)) for _, name in demo.SAMPLES)
    assert f"{sent} records sent, {sent} accounted for" in out
    assert "== feed: sent 12 -> " in out and "2 dead letters (12 accounted for)" in out
    assert "(original 45 bytes kept)" in out  # the invalid-UTF-8 IoT line, byte for byte
