"""`minnow bench e2e` runs through the real broker and reports every figure, sanely, and cleans up after itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline import cli
from pipeline.bench import e2e

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

EVENTS, ROUNDS, WARMUP = 60, 2, 10


async def _topics_with(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        return [name for name in await admin.list_topics() if name.startswith(prefix)]
    finally:
        await admin.close()


def test_a_small_bench_accounts_for_every_event_and_reports_sane_figures(
    kafka_bootstrap: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MINNOW_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)  # use the test broker, start none
    monkeypatch.setenv("MINNOW_ENGINE__CACHE_DIR", str(model_cache))
    argv = ["bench", "e2e", "--json", "--events", str(EVENTS), "--rounds", str(ROUNDS), "--warmup", str(WARMUP)]
    assert cli.main(argv) == 0
    report = orjson.loads(capsys.readouterr().out)

    assert [r["burst"]["events"] for r in report["rounds"]] == [EVENTS // ROUNDS] * ROUNDS
    burst = report["burst"]
    assert burst["events"] == EVENTS and sum(burst["outputs"].values()) == EVENTS
    assert set(burst["outputs"]) <= {"feeds.enriched", "escalations", "deadletter"}
    assert report["duplicates"] == 0 and report["worker_exit_code"] == 0  # a clean stop repeats nothing
    for phase in (burst, report["paced"]):
        lat = phase["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 60_000
        assert phase["events_per_s"] > 0
    for key in (
        "e2e_per_s",
        "engine_only_per_s",
        "naive_per_s",
        "naive_worker_per_s",
        "e2e_over_engine",
        "e2e_over_naive",
        "e2e_over_naive_worker",
    ):
        assert report[key] > 0, key
    for row in report["rounds"]:  # the naive worker ran in every round, on the whole (small) round
        assert row["naive_worker_per_s"] > 0 and row["naive_worker_events"] == EVENTS // ROUNDS
    naive = report["naive_worker"]
    assert sum(naive["outputs"].values()) == EVENTS  # one output per measured event, warm-up not counted
    assert set(naive["outputs"]) <= {"feeds.enriched", "escalations", "deadletter"}
    steps = naive["ms_per_event"]
    assert set(steps) == {"consume", "model", "produce_ack", "commit"}
    assert steps["consume"] >= 0  # prefetched records can take well under the 0.01 ms it is rounded to
    assert steps["model"] > 0 and steps["produce_ack"] > 0 and steps["commit"] > 0  # a call and two round trips
    assert 100 < report["worker_peak_rss_mb"] < 2000  # a loaded model, not a number from the wrong process

    text = e2e.render(report)
    assert "| broker + worker, bursts |" in text and "e2e / engine only" in text and "target ≥ 3" in text
    assert "| naive worker through the broker" in text and "e2e / naive worker: " in text
    assert asyncio.run(_topics_with(kafka_bootstrap, report["topic_prefix"])) == []
